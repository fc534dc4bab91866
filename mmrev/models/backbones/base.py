"""What RevViT and RevMViT share: the reversible switch, input and output formats,
pos-embed init, freezing."""
from typing import List

from mmpretrain.models.backbones.base_backbone import BaseBackbone
from torch import Tensor, nn

from mmrev.reversible.diagnostics import reversible_sequences, set_reversible


class ReversibleBackbone(BaseBackbone):
    """A backbone with reversible stacks, an absolute ``pos_embed``, ``out_type`` and
    ``frozen_stages``.

    Subclasses set ``pos_embed`` and ``frozen_stages``, call :meth:`_set_out_type`, and
    list what ``frozen_stages`` freezes in :meth:`_frozen_modules` (besides
    ``pos_embed``, frozen from stage 0 on).
    """

    arch_zoo: dict = {}
    OUT_TYPES = ('avg_featmap', 'featmap', 'raw')

    @classmethod
    def _zoo_arch(cls, name: str) -> dict:
        """The settings of the arch zoo's ``name`` (case-insensitive)."""
        if name.lower() not in cls.arch_zoo:
            raise ValueError(f'Unknown {cls.__name__} arch {name!r}; choose one of '
                             f'{sorted(set(cls.arch_zoo))} or pass a dict')
        return cls.arch_zoo[name.lower()]

    def _set_out_type(self, out_type: str) -> None:
        if out_type not in self.OUT_TYPES:
            raise ValueError(f'out_type must be one of {self.OUT_TYPES}, got {out_type!r}')
        self.out_type = out_type

    def _format(self, x: Tensor) -> Tensor:
        """A token map (B, H, W, C) as ``out_type`` asks: (B, C), (B, C, H, W) or
        (B, H*W, C)."""
        if self.out_type == 'avg_featmap':
            return x.mean(dim=(1, 2))
        if self.out_type == 'featmap':
            return x.permute(0, 3, 1, 2).contiguous()
        return x.flatten(1, 2)

    @staticmethod
    def _check_input_size(x: Tensor, divisor: int, what: str) -> None:
        """Raise if the image sides of ``x`` are not multiples of ``divisor``."""
        H, W = x.shape[-2:]
        if H % divisor or W % divisor:
            raise ValueError(f'Input size {H}x{W} is not a multiple of {what}: resize or '
                             f'pad the image to multiples of {divisor}')

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
