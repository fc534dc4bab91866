"""Reversible Multiscale Vision Transformer (RevMViT), Mangalam et al., CVPR 2022.

The official SlowFast ``MViT`` with ``MVIT.REV.ENABLE``: reversible stacks of pooling
attention blocks, separated by non-reversible stage transitions that fuse the two streams,
downsample (q pooling) and widen the channels.

Parameter names follow SlowFast's. A SlowFast ``model_state`` maps one-to-one onto
``RevMViT.state_dict()`` by these rules (``t_1 < ... < t_n``: the transition layers,
``MVIT.REV.BUFFER_LAYERS``; stage ``s`` holds the layers ``[t_s, t_{s+1})``, ``t_0 = 0``):

* ``patch_embed.proj.*`` -> ``patch_embed.projection.*``; ``pos_embed`` unchanged.
* ``rev_backbone.layers.{i}.*`` -> ``stages.{s}.transition.*`` if ``i == t_s`` (s >= 1),
  else ``stages.{s}.blocks.{j}.*`` with ``s`` = the number of ``t_k <= i`` and
  ``j = i - t_s - 1`` (``j = i`` in stage 0).
* Inside a layer: ``F.`` -> ``f.``, ``G.`` -> ``g.``, ``pre_q_fuse.fuse_fn.`` ->
  ``pre_q_fuse.mlp.``; ``res_proj.*`` unchanged.
* ``attn.pool_{q,k,v}.weight``: images: Conv3d ``(C, 1, 1, k, k)`` -> Conv2d
  ``(C, 1, k, k)`` (drop dim 2); video: unchanged; ``attn.norm_{q,k,v}.*`` unchanged.
* A fused ``attn.qkv.*`` (``MVIT.SEPARATE_QKV`` False) splits into ``attn.q``,
  ``attn.k`` and ``attn.v``; ``pos_embed_spatial`` and ``pos_embed_temporal`` (video,
  ``MVIT.SEP_POS_EMBED``) unchanged.
* ``norm.*`` -> ``norm{n}.*`` (the last stage, ``n`` = number of transitions);
  ``head.projection.*`` belongs to the classifier head (mmpretrain: ``head.fc.*``).
"""
import math
import re
from collections import OrderedDict
from functools import partial
from numbers import Number
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from mmcv.cnn.bricks import DropPath
from mmengine.logging import print_log
from mmpretrain.models.utils import build_norm_layer, to_2tuple
from torch import Tensor, nn

from mmrev.registry import MODELS
from mmrev.reversible import (
    ReversibleBlock,
    ReversibleSequence,
    call,
    trainable_parameters,
)
from mmrev.reversible.coupling import Streams

from ..layers import (
    Mlp,
    PatchEmbed,
    PoolingAttention,
    TwoStreamFusion,
)
from .base import ReversibleBackbone

Grid = Tuple[int, ...]  # one value per axis of the token grid: (h, w) or (t, h, w)


def round_width(width: int, multiplier: float, divisor: int = 1) -> int:
    """SlowFast's width rounding: ``width * multiplier`` to a multiple of ``divisor``."""
    width *= multiplier
    rounded = max(divisor, int(width + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * width else rounded)


def rev_mvit_block(channels: int, num_heads: int, mlp_ratio: float, qkv_bias: bool,
                   pool_kernel: Grid, kv_stride: Grid, drop_path_rate: float,
                   norm_cfg: dict, g_chunks: int = 1) -> ReversibleBlock:
    """``Y1 = X1 + D * PoolAttn(LN(X2))``, ``Y2 = X2 + D * MLP(LN(Y1))``, ``D`` the
    block's stochastic depth (one mask for both branches, as SlowFast); k and v pooled
    with ``kv_stride``, q not pooled (the grid is kept)."""
    f = nn.Sequential(OrderedDict(
        norm=build_norm_layer(norm_cfg, channels),
        attn=PoolingAttention(channels, channels, num_heads, qkv_bias, pool_kernel,
                              kv_stride=kv_stride, norm_cfg=norm_cfg)))
    g = nn.Sequential(OrderedDict(
        norm=build_norm_layer(norm_cfg, channels),
        mlp=Mlp(channels, int(channels * mlp_ratio))))
    return ReversibleBlock(f, g, drop_path_rate, g_chunks)


class StageTransition(nn.Module):
    """The non-reversible block between two reversible stacks.

    ``x = fuse([Y1, Y2])``; ``x = pool(res_proj(x)) + PoolAttn(LN(x))``;
    ``x = x + MLP(LN(x))``; then drop path on the whole output. ``pool`` is the
    attention's own q pooling (``res_path='conv'``) or a max pooling (``'max'``);
    ``res_proj`` exists only where the fused width differs from ``out_channels``.

    Args:
        in_channels (int): width of the two-stream concatenation, 2C.
        out_channels (int): output width.
        num_heads (int): attention heads.
        mlp_ratio (float): MLP hidden width over ``out_channels``.
        qkv_bias (bool): bias in the q, k, v projections.
        pool_kernel (tuple[int]): kernel of the pooling convolutions, per grid axis.
        q_stride (tuple[int]): downsampling of the grid, per axis.
        kv_stride (tuple[int]): stride of the k and v pooling, per axis.
        fusion (str): :class:`TwoStreamFusion` mode.
        res_path (str): ``'conv'`` or ``'max'``.
        drop_path_rate (float): stochastic depth of the whole block.
        norm_cfg (dict): normalisation layers.
        fusion_chunks (int): the chunks in which the fusion, which acts on each token
            alone, reruns when run through :func:`~mmrev.reversible.recompute`.
            Defaults to 1.
        keep_maps (bool): run through :func:`~mmrev.reversible.recompute`, keep the
            maps the parts take (False: regenerate them in backward). Defaults to False.
    """

    def __init__(self, in_channels: int, out_channels: int, num_heads: int,
                 mlp_ratio: float, qkv_bias: bool, pool_kernel: Grid, q_stride: Grid,
                 kv_stride: Grid, fusion: str, res_path: str, drop_path_rate: float,
                 norm_cfg: dict, fusion_chunks: int = 1, keep_maps: bool = False):
        super().__init__()
        self.fusion_chunks, self.keep_maps = fusion_chunks, keep_maps
        self.pre_q_fuse = TwoStreamFusion(fusion, in_channels)
        fused = TwoStreamFusion.out_channels(fusion, in_channels)
        self.res_proj = nn.Linear(fused, out_channels) if fused != out_channels else None
        if res_path == 'conv':
            self.pool_skip = None
        elif res_path == 'max':
            kernel = tuple(s + 1 if s > 1 else s for s in q_stride)
            max_pool = nn.MaxPool3d if len(q_stride) == 3 else nn.MaxPool2d
            self.pool_skip = max_pool(kernel, q_stride, tuple(s // 2 for s in q_stride))
        else:
            raise ValueError(f"res_path must be 'conv' or 'max', got {res_path!r}")
        self.f = nn.Sequential(OrderedDict(
            norm=build_norm_layer(norm_cfg, fused),
            attn=PoolingAttention(fused, out_channels, num_heads, qkv_bias, pool_kernel,
                                  q_stride, kv_stride, norm_cfg)))
        self.g = nn.Sequential(OrderedDict(
            norm=build_norm_layer(norm_cfg, out_channels),
            mlp=Mlp(out_channels, int(out_channels * mlp_ratio))))
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def forward(self, x1: Tensor, x2: Tensor, run: Callable = call) -> Tensor:
        """The fused, downsampled map of the streams ``x1``, ``x2``.

        Computed as a chain of parts, each called through ``run`` (the fusion gets
        ``fusion_chunks``): the fusion; per projection (q, k, v) the norm, projection
        and pooling; the residual; the attention; the MLP with drop path. Through
        :func:`~mmrev.reversible.recompute` each part reruns in backward, and the chain
        keeps the streams and the attention's output, the smallest map; the fused map,
        q, k, v and the residual are kept too with ``keep_maps``, else regenerated when
        the attention's backward needs them, after the MLP's rerun is freed.
        """
        part = partial(run, params=trainable_parameters(self))
        regenerable = partial(part, regenerate=not self.keep_maps)
        x = regenerable(self.pre_q_fuse, x1, x2, chunks=self.fusion_chunks)
        q, k, v = (regenerable(partial(self._pooled, name), x) for name in 'qkv')
        x = part(self._attend, q, k, v, regenerable(self._residual, x))
        return part(self._mlp, x)

    def _pooled(self, name: str, x: Tensor) -> Tensor:
        return self.f.attn.pooled(name, self.f.norm(x))

    def _residual(self, x: Tensor) -> Tensor:
        res = x if self.res_proj is None else self.res_proj(x)
        if self.pool_skip is None:
            return self.f.attn.pool_q_map(res)
        return self.pool_skip(res.movedim(-1, 1)).movedim(1, -1)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, res: Tensor) -> Tensor:
        return res + self.f.attn.attend(q, k, v)

    def _mlp(self, x: Tensor) -> Tensor:
        return self.drop_path(x + self.g(x))


class RevMViTStage(nn.Module):
    """An optional stage transition, then a reversible stack whose two streams start as
    copies of the transition's output (of the stage's input without one).

    While the stack trains with reversible backprop, the transition's parts (and the
    stage's output norm) rerun in backward (:func:`~mmrev.reversible.recompute`): the
    stage keeps for backward its output streams and one map at the transition's output
    resolution (and the maps inside the transition with ``keep_maps``), whatever its
    depth.
    """

    def __init__(self, transition: Optional[StageTransition], blocks: ReversibleSequence):
        super().__init__()
        self.transition = transition
        self.blocks = blocks

    def forward(self, x1: Tensor, x2: Tensor) -> Streams:
        if self.transition is not None:
            x1 = x2 = self.transition(x1, x2, self.blocks.runner)
        return self.blocks(x1, x2)


@MODELS.register_module()
class RevMViT(ReversibleBackbone):
    """Reversible Multiscale Vision Transformer, as the official SlowFast ``MVIT.REV``.

    Stage 0 is a reversible stack on the patch tokens; each later stage starts with a
    :class:`StageTransition` (stream fusion, q pooling by ``q_stride``, channels times
    ``dim_mul``), followed by a reversible stack. Every attention pools k and v, with a
    stride that starts at ``kv_stride`` and is divided by each transition's ``q_stride``.
    No class token; absolute position embedding, bicubically interpolated to the input.

    Output scale ``s`` is the ``[Y1, Y2]`` concatenation of stage ``s``, normalised by its
    own LayerNorm ``norm{s}``: 2 * C_s channels at stride ``patch_stride`` times the q
    strides of transitions 1 to s (arch ``base``: 192, 384, 768, 1536 channels at strides
    4, 8, 16, 32). For detection necks (mmdet's FPN): ``out_type='featmap',
    out_scales=(0, 1, 2, 3)``; the official weights hold only the last scale's norm, the
    others keep their initialisation.

    Args:
        arch (str | dict): ``'base'`` (Rev-MViT-B, 39.7M parameters with a 1000-class
            head) or a dict with the keys ``embed_dims``, ``num_layers``, ``num_heads``,
            ``transition_layers`` (layer indices, SlowFast's ``MVIT.REV.BUFFER_LAYERS``;
            each with at least one reversible layer before and after) and optionally
            any of ``base``'s other keys (defaults: ``base``'s values):
            ``dim_mul``, ``head_mul``, ``q_stride`` (a number, or one per transition),
            ``kv_stride``, ``pool_kernel``, ``pre_q_fusion`` (``'concat_linear_<r>'``,
            ``'concat'``, ``'avg'``, ``'max'``, ``'min'``, ``'add'``), ``res_path``
            (``'conv'``, ``'max'``), ``mlp_ratio``, ``qkv_bias``, ``patch_kernel``,
            ``patch_stride``, ``patch_padding``. Defaults to ``'base'``.
        img_size (int | tuple): the input size the position embedding is made for;
            other sizes are interpolated. Defaults to 224.
        in_channels (int): image channels. Defaults to 3.
        drop_path_rate (float): stochastic depth, rising linearly over the layers
            (transitions included, where it drops the whole block). Defaults to 0.
        out_type (str): per output scale, ``'avg_featmap'``: token mean, (B, 2C);
            ``'featmap'``: (B, 2C, H, W); ``'raw'``: (B, H*W, 2C).
            Defaults to ``'avg_featmap'``.
        out_scales (int | Sequence[int]): the stages to output (negative: from the
            end). Stages after the last one output are not built (their weights in a
            checkpoint are skipped when loading). Defaults to -1, the last stage.
        frozen_stages (int): -1: nothing frozen; 0: patch and position embedding;
            k > 0: also stages 0 to k-1 and their output norms. Defaults to -1.
        reversible (bool): reversible backprop in training: the stacks recompute their
            inputs from their outputs, the stage transitions and output norms rerun
            from their inputs, in backward; False: ordinary backprop, with the same
            gradients. Defaults to True.
        g_chunks (int): split the backward reruns of the token-wise parts at the
            patch resolution (the G branches, MLPs, of stage 0 and the fusion of the
            first transition), the largest ones, over this many chunks of rows, which cuts
            the peak training memory at no measurable cost in time. Defaults to 4.
        exact_bits (int, optional): exact mode of the reversible stacks: streams in
            fixed point with this many fractional bits, inverses bit for bit and
            reversible gradients equal to ordinary ones exactly, at some cost in time
            (see :class:`~mmrev.reversible.ReversibleSequence`); reruns are then not
            chunked (``g_chunks`` ignored). Defaults to None.
        keep_transition_maps (bool): with reversible backprop, keep the maps inside
            the stage transitions (the fused map, q, k, v, the residual) from forward to
            backward; False: regenerate them in backward, one more forward of those
            parts (Rev-MViT-B at 224 on CPU, one run: step time 1.44-1.48x ordinary
            backprop instead of 1.35-1.41x, training memory 9.9 instead of 18.2 MiB per
            image). Defaults to False.
        norm_cfg (dict): normalisation layers. Defaults to LN with eps 1e-6.
        init_cfg (dict | list, optional): initialisation config.
    """
    arch_zoo = {
        **dict.fromkeys(['b', 'base'], dict(
            embed_dims=96, num_layers=16, num_heads=1, transition_layers=(1, 3, 14),
            dim_mul=2., head_mul=2., q_stride=2, kv_stride=4, pool_kernel=3,
            pre_q_fusion='concat_linear_2', res_path='conv', mlp_ratio=4.,
            qkv_bias=True, patch_kernel=7, patch_stride=4, patch_padding=3,
            sep_pos_embed=False)),
        # Rev-MViT-B 16x4 (Kinetics-400): clips, 3-D patches and pooling kernels
        **dict.fromkeys(['vb', 'video-base'], dict(
            embed_dims=96, num_layers=16, num_heads=1, transition_layers=(1, 3, 14),
            dim_mul=2., head_mul=2., q_stride=(1, 2, 2), kv_stride=(1, 8, 8),
            pool_kernel=(3, 3, 3), pre_q_fusion='avg', res_path='conv', mlp_ratio=4.,
            qkv_bias=False, patch_kernel=(3, 7, 7), patch_stride=(2, 4, 4),
            patch_padding=(1, 3, 3), sep_pos_embed=True)),
    }
    REQUIRED_ARCH_KEYS = ('embed_dims', 'num_layers', 'num_heads', 'transition_layers')

    def __init__(self,
                 arch: Union[str, dict] = 'base',
                 img_size: Union[int, Sequence[int]] = 224,
                 num_frames: int = 16,
                 in_channels: int = 3,
                 drop_path_rate: float = 0.,
                 out_type: str = 'avg_featmap',
                 out_scales: Union[int, Sequence[int]] = -1,
                 frozen_stages: int = -1,
                 reversible: bool = True,
                 g_chunks: int = 4,
                 exact_bits: Optional[int] = None,
                 keep_transition_maps: bool = False,
                 norm_cfg: dict = dict(type='LN', eps=1e-6),
                 init_cfg=[
                     dict(type='TruncNormal', layer=['Linear', 'Conv2d', 'Conv3d'],
                          std=.02, bias=0.),
                     dict(type='Constant', layer='LayerNorm', val=1., bias=0.)
                 ]):
        super().__init__(init_cfg)
        arch = self.arch_settings = self._parse_arch(arch)
        self._set_out_type(out_type)
        if exact_bits is not None:  # chunked reruns sum parameter gradients in another order
            g_chunks = 1
        transitions = sorted(arch['transition_layers'])
        num_layers, num_stages = arch['num_layers'], len(transitions) + 1
        self.out_scales = self._parse_out_scales(out_scales, num_stages)
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f'frozen_stages must be in [-1, {num_stages}], '
                             f'got {frozen_stages}')
        self.frozen_stages = frozen_stages

        dims = self.grid_dims = self._grid_dims(arch)
        kernel, stride, padding = (self._per_axis(arch, key, dims) for key in (
            'patch_kernel', 'patch_stride', 'patch_padding'))
        self.patch_embed = PatchEmbed(in_channels, arch['embed_dims'], kernel, stride,
                                      padding)
        sizes = (num_frames, ) * (dims - 2) + tuple(to_2tuple(img_size))
        self._build_pos_embed([(n + 2 * p - k) // s + 1 for n, k, s, p in zip(
            sizes, kernel, stride, padding)], arch['embed_dims'], arch['sep_pos_embed'])

        dim_muls, head_muls, q_strides = (self._per_transition(arch, key, len(transitions))
                                          for key in ('dim_mul', 'head_mul', 'q_stride'))
        q_strides = [self._per_axis(dict(q_stride=q), 'q_stride', dims) for q in q_strides]
        drop_path_rates = [drop_path_rate * i / max(num_layers - 1, 1)
                           for i in range(num_layers)]
        bounds = [0] + transitions + [num_layers]
        self.stage_first_layers = bounds[:num_stages]  # SlowFast's layer index
        channels, num_heads = arch['embed_dims'], arch['num_heads']
        kv_stride = self._per_axis(arch, 'kv_stride', dims)
        common = dict(mlp_ratio=arch['mlp_ratio'], qkv_bias=arch['qkv_bias'],
                      pool_kernel=self._per_axis(arch, 'pool_kernel', dims),
                      norm_cfg=norm_cfg)
        self.stages = nn.ModuleList()
        self.stage_channels: List[int] = []
        for s in range(self.out_scales[-1] + 1):  # none after the last output
            first, transition = bounds[s], None
            if s > 0:
                num_heads = round_width(num_heads, head_muls[s - 1])
                out_channels = round_width(channels, dim_muls[s - 1], num_heads)
                kv_stride = tuple(max(kv // q, 1) for kv, q in zip(kv_stride, q_strides[s - 1]))
                transition = StageTransition(
                    2 * channels, out_channels, num_heads, q_stride=q_strides[s - 1],
                    kv_stride=kv_stride, fusion=arch['pre_q_fusion'],
                    res_path=arch['res_path'], drop_path_rate=drop_path_rates[first],
                    fusion_chunks=g_chunks if s == 1 else 1,
                    keep_maps=keep_transition_maps, **common)
                channels, first = out_channels, first + 1
            blocks = ReversibleSequence([
                rev_mvit_block(channels, num_heads, kv_stride=kv_stride,
                               drop_path_rate=drop_path_rates[i],
                               g_chunks=g_chunks if s == 0 else 1, **common)
                for i in range(first, bounds[s + 1])
            ], reversible=reversible, exact_bits=exact_bits)
            self.stages.append(RevMViTStage(transition, blocks))
            self.stage_channels.append(2 * channels)
        self.total_stride = stride[-1] * math.prod(q[-1] for q in q_strides[:len(self.stages) - 1])
        for s in self.out_scales:
            self.add_module(f'norm{s}', build_norm_layer(norm_cfg, self.stage_channels[s]))
        self._freeze_stages()

    @classmethod
    def _default_arch_name(cls, arch: dict) -> str:
        return 'video-base' if cls._grid_dims(arch) == 3 else 'base'

    @classmethod
    def _check_arch(cls, arch: dict) -> None:
        layers, transitions = arch['num_layers'], sorted(arch['transition_layers'])
        gaps = [b - a for a, b in zip([-1] + transitions, transitions + [layers])]
        if min(gaps, default=2) < 2:
            raise ValueError(f'transition_layers {transitions} must be distinct layers in '
                             f'[1, {layers - 2}] with at least one reversible layer '
                             f'between two of them')

    @staticmethod
    def _grid_dims(arch: dict) -> int:
        """3 for clips (a patch kernel with three sides, time first), else 2."""
        kernel = arch.get('patch_kernel', 7)
        return 2 if isinstance(kernel, Number) else len(kernel)

    @staticmethod
    def _per_axis(arch: dict, key: str, dims: int) -> Tuple[int, ...]:
        """``arch[key]`` as one int per grid axis (time first for clips)."""
        value = arch[key]
        if isinstance(value, Number):
            return (int(value), ) * dims
        if len(value) != dims or not all(isinstance(v, Number) for v in value):
            raise ValueError(f'{key} must be a number or {dims} numbers (one per axis of '
                             f'the {"clip" if dims == 3 else "image"} grid), got {value!r}')
        return tuple(int(v) for v in value)

    @staticmethod
    def _per_transition(arch: dict, key: str, num_transitions: int) -> list:
        """``arch[key]`` once per transition: a list has one value per transition,
        anything else (a number; for strides also a tuple, one value per axis) applies to
        all."""
        value = arch[key]
        if not isinstance(value, list):
            return [value] * num_transitions
        if len(value) != num_transitions:
            raise ValueError(f'{key} must be a value for all transitions or a list with '
                             f'one value per transition layer ({num_transitions}), got '
                             f'{value!r}')
        return value

    @staticmethod
    def _parse_out_scales(out_scales: Union[int, Sequence[int]],
                          num_stages: int) -> Tuple[int, ...]:
        out_scales = [out_scales] if isinstance(out_scales, int) else list(out_scales)
        if not out_scales or not all(-num_stages <= s < num_stages for s in out_scales):
            raise ValueError(f'out_scales must be stage indices in [{-num_stages}, '
                             f'{num_stages - 1}], got {out_scales!r}')
        return tuple(sorted({s % num_stages for s in out_scales}))

    @property
    def num_layers(self) -> int:
        """The layers built (SlowFast's numbering: transitions are layers too)."""
        return self.stage_first_layers[len(self.stages) - 1] + len(self.stages[-1].blocks) + (
            len(self.stages) > 1)

    def _layer_index(self, name: str) -> Optional[int]:
        match = re.match(r'stages\.(\d+)\.(transition|blocks\.(\d+))\.', name)
        if match is None:
            return None
        stage, block = int(match.group(1)), match.group(3)
        first = self.stage_first_layers[stage]
        return first if block is None else first + int(block) + (stage > 0)

    def _unbuilt_prefixes(self) -> List[str]:
        num_stages = len(self.arch_settings['transition_layers']) + 1
        return [f'{part}{s}.' for s in range(len(self.stages), num_stages)
                for part in ('stages.', 'norm')]

    def _complete_checkpoint(self, state_dict: Dict[str, Tensor], prefix: str) -> None:
        """A classifier's weights hold the last stage's output norm only: the norms of
        the other scales a detector outputs keep their initialisation, said once in
        the log rather than as missing keys."""
        missing = [f'norm{s}' for s in self.out_scales
                   if not any(k.startswith(f'{prefix}norm{s}.') for k in state_dict)]
        if not missing or not any(k.startswith(f'{prefix}stages.') for k in state_dict):
            return
        for name in missing:
            for key, value in getattr(self, name).state_dict().items():
                state_dict[f'{prefix}{name}.{key}'] = value.clone()
        print_log(f'RevMViT: the checkpoint has no output norm {", ".join(missing)} (a '
                  f"classifier's has only its last stage's): they keep their "
                  f'initialisation and are trained with the rest', logger='current')

    def _describe_weights(self, state_dict: Dict[str, Tensor]) -> str:
        embed = state_dict.get('patch_embed.projection.weight')
        blocks = {m.groups() for k in state_dict
                  if (m := re.match(r'stages\.(\d+)\.(transition|blocks\.\d+)\.', k))}
        if embed is None or not blocks:
            return 'another model: no RevMViT patch embedding or stages in it'
        dims, stages = embed.shape[0], len({stage for stage, _ in blocks})
        name = self._zoo_name(embed_dims=dims, num_layers=len(blocks))
        return (f"RevMViT arch '{name}'" if name else 'a RevMViT') + (
            f' ({dims} dims, {len(blocks)} layers in {stages} stages)')

    def _frozen_modules(self) -> list:
        if self.frozen_stages < 0:
            return []
        return [self.patch_embed, *self.stages[:self.frozen_stages]] + [
            getattr(self, f'norm{s}') for s in self.out_scales if s < self.frozen_stages]

    def embed(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W) or clips (B, C, T, H, W) to position-embedded token maps
        (B, h, w, C) or (B, t, h, w, C)."""
        self._check_input_size(x, self.total_stride,
                               f'{self.total_stride}, the stride of the last stage')
        x = self.patch_embed(x)
        return x + self._pos_embed_map(x.shape[1:-1])

    def trunk(self, x: Tensor) -> Tuple[Tensor, ...]:
        """The outputs of the stages ``out_scales`` for the token map ``x``."""
        x1 = x2 = x
        outs = []
        for s, stage in enumerate(self.stages):
            x1, x2 = stage(x1, x2)
            if s in self.out_scales:
                outs.append(self._output(getattr(self, f'norm{s}'), x1, x2,
                                         stage.blocks.runner))
        return tuple(outs)
