"""What RevViT and RevMViT share: the reversible switch, pos-embed init, freezing."""
from typing import List

from mmpretrain.models.backbones.base_backbone import BaseBackbone
from torch import nn

from mmrev.reversible.diagnostics import reversible_sequences, set_reversible


class ReversibleBackbone(BaseBackbone):
    """A backbone with reversible stacks, an absolute ``pos_embed`` and ``frozen_stages``.

    Subclasses set ``pos_embed`` and ``frozen_stages`` and list what ``frozen_stages``
    freezes in :meth:`_frozen_modules` (besides ``pos_embed``, frozen from stage 0 on).
    """

    arch_zoo: dict = {}

    @classmethod
    def _zoo_arch(cls, name: str) -> dict:
        """The settings of the arch zoo's ``name`` (case-insensitive)."""
        if name.lower() not in cls.arch_zoo:
            raise ValueError(f'Unknown {cls.__name__} arch {name!r}; choose one of '
                             f'{sorted(set(cls.arch_zoo))} or pass a dict')
        return cls.arch_zoo[name.lower()]

    @property
    def reversible(self) -> bool:
        """Whether the reversible stacks use reversible backprop in training."""
        return all(sequence.reversible for sequence in reversible_sequences(self))

    @reversible.setter
    def reversible(self, value: bool) -> None:
        set_reversible(self, value)

    def init_weights(self) -> None:
        super().init_weights()
        if not (isinstance(self.init_cfg, dict)
                and self.init_cfg['type'] == 'Pretrained'):
            nn.init.trunc_normal_(self.pos_embed, std=.02)

    def _frozen_modules(self) -> List[nn.Module]:
        raise NotImplementedError

    def _freeze_stages(self) -> None:
        if self.frozen_stages >= 0:
            self.pos_embed.requires_grad = False
        for module in self._frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'ReversibleBackbone':
        super().train(mode)
        for module in self._frozen_modules():
            module.eval()
        return self
