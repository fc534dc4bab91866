"""Multi-head pooling attention (MViT) over token maps (B, H, W, C) or (B, T, H, W, C)."""
import math
from typing import Optional, Sequence, Tuple, Union

import torch.nn.functional as F
from mmpretrain.models.utils import build_norm_layer
from torch import Tensor, nn

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
Axes = Union[int, Sequence[int]]


def _axes(value: Axes, dims: int = 2) -> Tuple[int, ...]:
    return (value, ) * dims if isinstance(value, int) else tuple(value)


def pool_heads(x: Tensor, pool: Optional[nn.Conv2d], norm: Optional[nn.Module],
               num_heads: int) -> Tensor:
    """Pool a token map (B, *grid, C) per head with the depthwise convolution ``pool``
    (C / heads channels, the same kernels for every head), then normalise each head's
    C / heads channels with ``norm``. Identity when ``pool`` is None.

    The map is convolved as the channels-last view (B, C, *grid) it already is, with
    ``pool``'s kernels repeated over the heads: no copy of the map is made (or kept for
    backward)."""
    if pool is None:
        return x
    weight = pool.weight.repeat(num_heads, *[1] * (pool.weight.ndim - 1))
    x = _CONV[x.ndim - 2](x.movedim(-1, 1), weight, None, pool.stride, pool.padding,
                          groups=x.shape[-1]).movedim(1, -1)
    if norm is not None:
        x = norm(x.unflatten(-1, (num_heads, -1))).flatten(-2)
    return x


class PoolingAttention(nn.Module):
    """Multi-head pooling attention: q, k and v are pooled per head by depthwise
    convolutions followed by a LayerNorm over the head channels, then attend through
    ``F.scaled_dot_product_attention``. The output has q's (pooled) grid.

    A stride of None means no pooling; so do kernel and stride both 1 on every axis
    (SlowFast's rule). Kernels and strides have one value per axis of the token grid:
    two for images (B, H, W, C), three for clips (B, T, H, W, C); an int means the same
    on two axes.

    Args:
        in_channels (int): input channels.
        out_channels (int): channels of q, k, v and of the output.
        num_heads (int): number of attention heads.
        qkv_bias (bool): add a bias to the q, k, v projections. Defaults to True.
        pool_kernel (int | tuple[int]): kernel of the pooling convolutions.
            Defaults to 3.
        q_stride (int | tuple[int], optional): stride of the q pooling (the output's
            downsampling). Defaults to None.
        kv_stride (int | tuple[int], optional): stride of the k and v pooling.
            Defaults to None.
        norm_cfg (dict): norm after each pooling. Defaults to LN with eps 1e-6.
    """

    def __init__(self, in_channels: int, out_channels: int, num_heads: int,
                 qkv_bias: bool = True, pool_kernel: Axes = 3,
                 q_stride: Optional[Axes] = None, kv_stride: Optional[Axes] = None,
                 norm_cfg: dict = dict(type='LN', eps=1e-6)):
        super().__init__()
        if out_channels % num_heads:
            raise ValueError(f'out_channels ({out_channels}) must be divisible by '
                             f'num_heads ({num_heads})')
        self.num_heads = num_heads
        self.q = nn.Linear(in_channels, out_channels, bias=qkv_bias)
        self.k = nn.Linear(in_channels, out_channels, bias=qkv_bias)
        self.v = nn.Linear(in_channels, out_channels, bias=qkv_bias)
        self.proj = nn.Linear(out_channels, out_channels)
        head_channels = out_channels // num_heads
        kernel = _axes(pool_kernel)
        conv = nn.Conv3d if len(kernel) == 3 else nn.Conv2d
        for name, stride in (('q', q_stride), ('k', kv_stride), ('v', kv_stride)):
            stride = None if stride is None else _axes(stride, len(kernel))
            pooled = stride is not None and (math.prod(kernel) > 1 or math.prod(stride) > 1)
            setattr(self, f'pool_{name}', conv(
                head_channels, head_channels, kernel, stride, tuple(k // 2 for k in kernel),
                groups=head_channels, bias=False) if pooled else None)
            setattr(self, f'norm_{name}',
                    build_norm_layer(norm_cfg, head_channels) if pooled else None)

    def pool_q_map(self, x: Tensor) -> Tensor:
        """Pool a (B, *grid, out_channels) map the way q is pooled (the
        stage-transition residual of RevMViT reuses q's pooling)."""
        return pool_heads(x, self.pool_q, self.norm_q, self.num_heads)

    def pooled(self, name: str, x: Tensor) -> Tensor:
        """The pooled (and normalised) projection ``name`` (``'q'``, ``'k'`` or
        ``'v'``) of ``x``."""
        return pool_heads(getattr(self, name)(x), getattr(self, f'pool_{name}'),
                          getattr(self, f'norm_{name}'), self.num_heads)

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Multi-head attention of pooled maps; the output has q's grid."""
        shape = q.shape
        q, k, v = (t.flatten(1, -2).unflatten(-1, (self.num_heads, -1)).transpose(1, 2)
                   for t in (q, k, v))
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(shape))

    def forward(self, x: Tensor) -> Tensor:
        return self.attend(*(self.pooled(name, x) for name in 'qkv'))
