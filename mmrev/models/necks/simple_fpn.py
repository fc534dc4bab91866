"""Simple feature pyramid (ViTDet, Li et al., ECCV 2022) for single-scale backbones."""
import math
from typing import List, Optional, Sequence, Tuple

import torch.nn.functional as F
from mmcv.cnn import ConvModule, build_activation_layer, build_norm_layer
from mmengine.model import BaseModule
from torch import Tensor, nn

from mmrev.registry import MODELS


@MODELS.register_module()
class SimpleFPN(BaseModule):
    """A feature pyramid built from the one map of a plain ViT.

    Plain backbones such as :class:`~mmrev.models.RevViT` (``out_type='featmap'``)
    give a single stride-16 map. Each level rescales it by a power of two
    (``2x2`` stride-2 transposed convs up, each halving the channels from
    ``upsample_channels`` on; max pooling down), then a ``1x1`` and a
    ``3x3`` conv, each followed by ``norm_cfg``, bring it to ``out_channels``.
    Levels beyond ``scale_factors`` are stride-2 subsamples of the last level
    (FPN's ``P6``). The output is a drop-in for mmdet's ``FPN`` outputs.

    Args:
        in_channels (int): channels of the backbone map (``2 * embed_dims`` for
            RevViT).
        out_channels (int): channels of every output level.
        scale_factors (Sequence[float]): the resampling of each level relative to
            the input, powers of two in decreasing order. Defaults to
            ``(4, 2, 1, 0.5)``: strides 4, 8, 16, 32 from a stride-16 map.
        num_outs (int): number of output levels, at least ``len(scale_factors)``.
            Defaults to 5 (adds stride 64).
        upsample_channels (int, optional): channels of the first upsampled map, halved
            by each further upsampling. Defaults to ``in_channels // 2``, as ViTDet. For
            RevViT's ``[Y1, Y2]`` map (2C channels), ``C // 2`` gives the neck a ViT's
            widths from the first upsampling on, and half its activations at strides 4
            and 8.
        norm_cfg (dict): the norm between upsampling convs and after each output
            conv. Defaults to ``dict(type='mmrev.LN2d')`` (LayerNorm over channels).
        act_cfg (dict): the activation between upsampling convs. Defaults to GELU.
        init_cfg (dict | list, optional): initialisation config.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 scale_factors: Sequence[float] = (4, 2, 1, 0.5),
                 num_outs: int = 5,
                 upsample_channels: Optional[int] = None,
                 norm_cfg: dict = dict(type='mmrev.LN2d', eps=1e-6),
                 act_cfg: dict = dict(type='GELU'),
                 init_cfg=None):
        super().__init__(init_cfg)
        exponents = [math.log2(s) if s > 0 else math.nan for s in scale_factors]
        if not scale_factors or any(e != round(e) for e in exponents):
            raise ValueError(f'scale_factors must be powers of two, got {scale_factors}')
        if list(scale_factors) != sorted(scale_factors, reverse=True):
            raise ValueError(f'scale_factors must decrease (fine to coarse), got '
                             f'{scale_factors}')
        if num_outs < len(scale_factors):
            raise ValueError(f'num_outs ({num_outs}) must be at least '
                             f'len(scale_factors) ({len(scale_factors)})')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.scale_factors = tuple(scale_factors)
        self.num_outs = num_outs
        self.upsample_channels = upsample_channels or in_channels // 2

        self.rescales = nn.ModuleList()
        self.lateral_convs = nn.ModuleList()
        self.output_convs = nn.ModuleList()
        for exponent in exponents:
            rescale, channels = self._rescale(int(exponent), norm_cfg, act_cfg)
            self.rescales.append(rescale)
            self.lateral_convs.append(ConvModule(
                channels, out_channels, 1, norm_cfg=norm_cfg, act_cfg=None))
            self.output_convs.append(ConvModule(
                out_channels, out_channels, 3, padding=1, norm_cfg=norm_cfg,
                act_cfg=None))

    def _rescale(self, exponent: int, norm_cfg: dict,
                 act_cfg: dict) -> Tuple[nn.Module, int]:
        """The module that scales the map by ``2 ** exponent``, and its channels."""
        if exponent == 0:
            return nn.Identity(), self.in_channels
        if exponent < 0:
            size = 2 ** -exponent
            return nn.MaxPool2d(size, stride=size), self.in_channels
        layers, channels = [], self.in_channels
        for i in range(exponent):
            if i:
                layers += [build_norm_layer(norm_cfg, channels)[1],
                           build_activation_layer(act_cfg)]
            upsampled = self.upsample_channels >> i
            layers.append(nn.ConvTranspose2d(channels, upsampled, 2, stride=2))
            channels = upsampled
        return nn.Sequential(*layers), channels

    def forward(self, inputs: Sequence[Tensor]) -> Tuple[Tensor]:
        if len(inputs) != 1:
            raise ValueError(
                f'SimpleFPN takes the single map of a plain backbone, got {len(inputs)} '
                f'maps: use mmdet FPN for multi-scale backbones')
        x = inputs[0]
        if x.shape[1] != self.in_channels:
            raise ValueError(f'SimpleFPN was built for {self.in_channels} input channels, '
                             f'got a map of shape {tuple(x.shape)}')
        outs: List[Tensor] = [
            output_conv(lateral_conv(rescale(x))) for rescale, lateral_conv, output_conv
            in zip(self.rescales, self.lateral_convs, self.output_convs)]
        while len(outs) < self.num_outs:
            outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        return tuple(outs)
