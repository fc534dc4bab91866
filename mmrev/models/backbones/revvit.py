"""Reversible Vision Transformer (RevViT), Mangalam et al., CVPR 2022."""
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple, Union

from mmpretrain.models.utils import build_norm_layer, to_2tuple
from torch import Tensor, nn

from mmrev.registry import MODELS
from mmrev.reversible import ReversibleBlock, ReversibleSequence

from ..layers import Attention, Mlp, PatchEmbed
from .base import ReversibleBackbone


def rev_vit_block(embed_dims: int, num_heads: int, feedforward_channels: int,
                  drop_rate: float, drop_path_rate: float, qkv_bias: bool,
                  norm_cfg: dict, g_chunks: int) -> ReversibleBlock:
    """``Y1 = X1 + D * Attn(LN(X2))``, ``Y2 = X2 + D * MLP(LN(Y1))``, ``D`` the
    block's stochastic depth."""
    f = nn.Sequential(OrderedDict(
        norm=build_norm_layer(norm_cfg, embed_dims),
        attn=Attention(embed_dims, num_heads, qkv_bias, proj_drop=drop_rate)))
    g = nn.Sequential(OrderedDict(
        norm=build_norm_layer(norm_cfg, embed_dims),
        mlp=Mlp(embed_dims, feedforward_channels, drop=drop_rate)))
    return ReversibleBlock(f, g, drop_path_rate, g_chunks)


@MODELS.register_module()
class RevViT(ReversibleBackbone):
    """Reversible Vision Transformer, as the official SlowFast ``MVIT.REV`` ViT.

    Both streams start as copies of the embedded patches; each block computes
    ``Y1 = X1 + Attn(X2)``, ``Y2 = X2 + MLP(Y1)``; the output is the LayerNorm of the
    ``[Y1, Y2]`` concatenation (2C channels). No class token.

    Args:
        arch (str | dict): ``'small'``, ``'base'``, ``'large'``, or a dict with the keys
            ``embed_dims``, ``num_layers``, ``num_heads``, ``feedforward_channels`` and
            optionally ``patch_size`` (default 16) and ``qkv_bias`` (bias in the q, k,
            v projection; default True). Defaults to ``'base'``.
        img_size (int | tuple): the input size the position embedding is made for;
            other sizes are interpolated. Defaults to 224.
        in_channels (int): image channels. Defaults to 3.
        drop_rate (float): dropout after the position embedding, the attention
            projection and the MLP layers. Defaults to 0.
        drop_path_rate (float): stochastic depth, rising linearly to this rate over
            the layers. Defaults to 0.
        norm_cfg (dict): normalisation layers. Defaults to LN with eps 1e-6.
        final_norm (bool): LayerNorm over the 2C output of the last layer.
            Defaults to True.
        out_type (str): ``'avg_featmap'``: mean over tokens, (B, 2C);
            ``'featmap'``: (B, 2C, H, W); ``'raw'``: (B, H*W, 2C).
            Defaults to ``'avg_featmap'``.
        out_indices (int | Sequence[int]): the layers whose ``[Y1, Y2]`` outputs the
            backbone returns, in order (negative: from the end; the last layer's output
            goes through the final norm), as mmpretrain's ``VisionTransformer``. Layers
            after the last one are not built (their checkpoint weights are skipped on
            load). Defaults to -1.
        frozen_stages (int): -1: nothing frozen; 0: patch and position embedding;
            k > 0: also the first k layers. Defaults to -1.
        reversible (bool): reversible backprop in training (memory constant in
            depth); False: ordinary backprop through the same blocks, with the same
            gradients. Defaults to True.
        g_chunks (int): split the backward recompute of each block's G branch (the
            MLP) over this many chunks of rows to cut peak memory; needs
            ``drop_rate=0``. Defaults to 1.
        exact_bits (int, optional): exact mode of the reversible stacks: streams in
            fixed point with this many fractional bits, inverses bit for bit and
            reversible gradients equal to ordinary ones exactly, at some cost in time
            (see :class:`~mmrev.reversible.ReversibleSequence`). Defaults to None.
        init_cfg (dict | list, optional): initialisation config.
    """
    arch_zoo = {
        **dict.fromkeys(['s', 'small'], dict(
            embed_dims=384, num_layers=12, num_heads=6, feedforward_channels=1536,
            patch_size=16, qkv_bias=True)),
        **dict.fromkeys(['b', 'base'], dict(
            embed_dims=768, num_layers=12, num_heads=12, feedforward_channels=3072,
            patch_size=16, qkv_bias=True)),
        **dict.fromkeys(['l', 'large'], dict(
            embed_dims=1024, num_layers=24, num_heads=16, feedforward_channels=4096,
            patch_size=16, qkv_bias=True)),
    }
    REQUIRED_ARCH_KEYS = ('embed_dims', 'num_layers', 'num_heads', 'feedforward_channels')

    def __init__(self,
                 arch: Union[str, dict] = 'base',
                 img_size: Union[int, Sequence[int]] = 224,
                 in_channels: int = 3,
                 drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 norm_cfg: dict = dict(type='LN', eps=1e-6),
                 final_norm: bool = True,
                 out_type: str = 'avg_featmap',
                 out_indices: Union[int, Sequence[int]] = -1,
                 frozen_stages: int = -1,
                 reversible: bool = True,
                 g_chunks: int = 1,
                 exact_bits: Optional[int] = None,
                 init_cfg=[
                     dict(type='TruncNormal', layer='Linear', std=.02, bias=0.),
                     dict(type='Constant', layer='LayerNorm', val=1., bias=0.)
                 ]):
        super().__init__(init_cfg)
        self.arch_settings = self._parse_arch(arch)
        self._set_out_type(out_type)
        if g_chunks > 1 and drop_rate > 0:
            raise ValueError('g_chunks > 1 replays per-sample randomness only; '
                             'set drop_rate=0 or g_chunks=1')
        num_layers = self.arch_settings['num_layers']
        self.out_indices = self._parse_out_indices(out_indices, num_layers)
        if not -1 <= frozen_stages <= num_layers:
            raise ValueError(f'frozen_stages must be in [-1, {num_layers}], '
                             f'got {frozen_stages}')
        self.embed_dims = self.arch_settings['embed_dims']
        self.patch_size = patch_size = self.arch_settings['patch_size']
        self.frozen_stages = frozen_stages

        self.patch_embed = PatchEmbed(in_channels, self.embed_dims, patch_size,
                                      patch_size)
        self._build_pos_embed([s // patch_size for s in to_2tuple(img_size)],
                              self.embed_dims)
        self.drop_after_pos = nn.Dropout(drop_rate)

        drop_path_rates = [drop_path_rate * i / max(num_layers - 1, 1)
                           for i in range(num_layers)]
        self.layers = ReversibleSequence([
            rev_vit_block(self.embed_dims, self.arch_settings['num_heads'],
                          self.arch_settings['feedforward_channels'], drop_rate, rate,
                          self.arch_settings['qkv_bias'], norm_cfg, g_chunks)
            for rate in drop_path_rates[:self.out_indices[-1] + 1]  # none after the last
        ], reversible=reversible, exact_bits=exact_bits)
        if self.out_indices[-1] == num_layers - 1:
            self.norm = (build_norm_layer(norm_cfg, 2 * self.embed_dims)
                         if final_norm else nn.Identity())
        self._freeze_stages()

    @staticmethod
    def _parse_out_indices(out_indices: Union[int, Sequence[int]],
                           num_layers: int) -> Tuple[int, ...]:
        out_indices = [out_indices] if isinstance(out_indices, int) else list(out_indices)
        if not out_indices or not all(-num_layers <= i < num_layers for i in out_indices):
            raise ValueError(f'out_indices must be layer indices in [{-num_layers}, '
                             f'{num_layers - 1}], got {out_indices!r}')
        return tuple(sorted({i % num_layers for i in out_indices}))

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def _layer_index(self, name: str) -> Optional[int]:
        match = re.match(r'layers\.(\d+)\.', name)
        return int(match.group(1)) if match else None

    def _unbuilt_prefixes(self) -> List[str]:
        unbuilt = [f'layers.{i}.' for i in range(len(self.layers),
                                                self.arch_settings['num_layers'])]
        return unbuilt + ([] if hasattr(self, 'norm') else ['norm.'])

    def _describe_weights(self, state_dict: Dict[str, Tensor]) -> str:
        layers = {int(m.group(1)) for k in state_dict if (m := re.match(r'layers\.(\d+)\.', k))}
        embed = state_dict.get('patch_embed.projection.weight')
        if embed is None or not layers:
            return 'another model: no RevViT patch embedding or layers in it'
        dims, num_layers = embed.shape[0], max(layers) + 1
        name = self._zoo_name(embed_dims=dims, num_layers=num_layers)
        return (f"RevViT arch '{name}'" if name else 'a RevViT') + (
            f' ({dims} dims, {num_layers} layers, patch size {embed.shape[-1]})')

    def _frozen_modules(self) -> list:
        if self.frozen_stages < 0:
            return []
        modules = [self.patch_embed, self.drop_after_pos]
        modules += list(self.layers[:self.frozen_stages])
        if self.frozen_stages == self.arch_settings['num_layers'] and hasattr(self, 'norm'):
            modules.append(self.norm)
        return modules

    def embed(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W) to position-embedded tokens (B, h, w, C)."""
        self._check_input_size(x, self.patch_size, f'the patch size {self.patch_size}')
        x = self.patch_embed(x)
        x = x + self._pos_embed_map(x.shape[1:3])
        return self.drop_after_pos(x)

    def trunk(self, x: Tensor) -> Tuple[Tensor, ...]:
        """The outputs of the layers ``out_indices`` for the tokens ``x``."""
        streams = self.layers(x, x, out_indices=self.out_indices)
        last = self.arch_settings['num_layers'] - 1
        return tuple(self._output(self.norm if i == last else nn.Identity(), x1, x2,
                                  self.layers.runner)
                     for i, (x1, x2) in zip(self.out_indices, streams))
