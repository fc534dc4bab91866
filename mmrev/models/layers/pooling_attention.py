"""Multi-head pooling attention (MViT) over token maps of shape (B, H, W, C)."""
from typing import Optional

import torch.nn.functional as F
from mmpretrain.models.utils import build_norm_layer
from torch import Tensor, nn


def pool_heads(x: Tensor, pool: Optional[nn.Module], norm: Optional[nn.Module],
               num_heads: int) -> Tensor:
    """Pool a token map (B, H, W, C) per head: ``pool`` sees (B * heads, C / heads, H, W),
    ``norm`` normalises each head's C / heads channels. Identity when ``pool`` is None."""
    if pool is None:
        return x
    B, H, W, C = x.shape
    x = x.reshape(B, H, W, num_heads, C // num_heads).permute(0, 3, 4, 1, 2)
    x = pool(x.reshape(B * num_heads, C // num_heads, H, W))
    H, W = x.shape[-2:]
    x = x.reshape(B, num_heads, C // num_heads, H, W).permute(0, 3, 4, 1, 2)
    if norm is not None:
        x = norm(x)
    return x.reshape(B, H, W, C)


class PoolingAttention(nn.Module):
    """Multi-head pooling attention: q, k and v are pooled per head by depthwise
    convolutions followed by a LayerNorm over the head channels, then attend through
    ``F.scaled_dot_product_attention``. The output has q's (pooled) grid.

    A stride of None means no pooling; so do kernel and stride both 1 (SlowFast's rule).

    Args:
        in_channels (int): input channels.
        out_channels (int): channels of q, k, v and of the output.
        num_heads (int): number of attention heads.
        qkv_bias (bool): add a bias to the q, k, v projections. Defaults to True.
        pool_kernel (int): kernel size of the pooling convolutions. Defaults to 3.
        stride_q (int, optional): stride of the q pooling (the output's
            downsampling). Defaults to None.
        stride_kv (int, optional): stride of the k and v pooling. Defaults to None.
        norm_cfg (dict): norm after each pooling. Defaults to LN with eps 1e-6.
    """

    def __init__(self, in_channels: int, out_channels: int, num_heads: int,
                 qkv_bias: bool = True, pool_kernel: int = 3,
                 stride_q: Optional[int] = None, stride_kv: Optional[int] = None,
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
        for name, stride in (('q', stride_q), ('k', stride_kv), ('v', stride_kv)):
            pooled = stride is not None and (pool_kernel > 1 or stride > 1)
            setattr(self, f'pool_{name}', nn.Conv2d(
                head_channels, head_channels, pool_kernel, stride, pool_kernel // 2,
                groups=head_channels, bias=False) if pooled else None)
            setattr(self, f'norm_{name}',
                    build_norm_layer(norm_cfg, head_channels) if pooled else None)

    def pool_q_map(self, x: Tensor) -> Tensor:
        """Pool a (B, H, W, out_channels) map the way q is pooled (the stage-transition
        residual of RevMViT reuses q's pooling)."""
        return pool_heads(x, self.pool_q, self.norm_q, self.num_heads)

    def forward(self, x: Tensor) -> Tensor:
        q = self.pool_q_map(self.q(x))
        k = pool_heads(self.k(x), self.pool_k, self.norm_k, self.num_heads)
        v = pool_heads(self.v(x), self.pool_v, self.norm_v, self.num_heads)
        B, H, W, C = q.shape
        q, k, v = (t.flatten(1, 2).unflatten(-1, (self.num_heads, -1)).transpose(1, 2)
                   for t in (q, k, v))
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, H, W, C))
