"""What RevViT and RevMViT share: the reversible switch, input and output formats,
pos-embed init, freezing."""
from functools import partial
from typing import Callable, List, Optional, Tuple

import torch
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from torch import Tensor, nn

from mmrev.reversible import trainable_parameters
from mmrev.reversible.diagnostics import reversible_sequences, set_reversible


def _norm_of_concat(norm: nn.Module, x1: Tensor, x2: Tensor) -> Tensor:
    return norm(torch.cat([x1, x2], dim=-1))


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

    def _output(self, norm: nn.Module, x1: Tensor, x2: Tensor, run: Callable) -> Tensor:
        """``norm([x1, x2])`` (the streams' concatenation) as ``out_type`` asks, the norm
        run by ``run`` (in reversible training: rerun in backward, keeping only the
        streams, which the stack keeps anyway)."""
        return self._format(run(partial(_norm_of_concat, norm), x1, x2,
                                params=trainable_parameters(norm)))

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

    num_layers: int

    def _layer_index(self, name: str) -> Optional[int]:
        """The layer (0-based) that holds the parameter ``name``, None outside the
        layers."""
        raise NotImplementedError

    def get_layer_depth(self, param_name: str, prefix: str = '') -> Tuple[int, int]:
        """The depth of a parameter for layer-wise learning-rate decay, and the number of
        depths, as mmpretrain's backbones give them: 0 for the patch and position
        embeddings, ``i + 1`` for layer ``i``, ``num_layers + 1`` for the rest (output
        norms; outside the backbone, i.e. not starting with ``prefix``: neck, heads).
        """
        num_depths = self.num_layers + 2
        if not param_name.startswith(prefix):
            return num_depths - 1, num_depths
        name = param_name[len(prefix):]
        if name.startswith(('patch_embed.', 'pos_embed')):
            return 0, num_depths
        layer = self._layer_index(name)
        return (num_depths - 1 if layer is None else layer + 1), num_depths

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
