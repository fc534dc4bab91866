"""Multi-head self-attention over token maps of shape (B, H, W, C)."""
import torch.nn.functional as F
from torch import Tensor, nn


class Attention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention``.

    Args:
        embed_dims (int): channels of the tokens.
        num_heads (int): number of attention heads.
        qkv_bias (bool): add a bias to the q, k, v projection. Defaults to True.
        proj_drop (float): dropout after the output projection. Defaults to 0.
    """

    def __init__(self, embed_dims: int, num_heads: int, qkv_bias: bool = True,
                 proj_drop: float = 0.):
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f'embed_dims ({embed_dims}) must be divisible by '
                             f'num_heads ({num_heads})')
        self.num_heads = num_heads
        self.qkv = nn.Linear(embed_dims, embed_dims * 3, bias=qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor) -> Tensor:
        B, H, W, C = x.shape
        head_dims = C // self.num_heads  # not -1: a batch may be empty
        q, k, v = self.qkv(x).reshape(B, H * W, 3, self.num_heads, head_dims).permute(
            2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)
        x = x.transpose(1, 2).reshape(B, H, W, C)
        return self.proj_drop(self.proj(x))
