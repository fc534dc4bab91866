"""Image to token map, and absolute position embeddings for any grid size."""
from typing import Sequence, Tuple

import torch
from mmpretrain.models.utils import resize_pos_embed
from torch import Tensor, nn


class PatchEmbed(nn.Module):
    """A strided convolution mapping (B, C_in, H, W) images to (B, h, w, C) tokens.

    Args:
        in_channels (int): image channels.
        embed_dims (int): token channels.
        kernel_size (int): convolution kernel size.
        stride (int): convolution stride.
        padding (int): convolution padding. Defaults to 0.
    """

    def __init__(self, in_channels: int, embed_dims: int, kernel_size: int,
                 stride: int, padding: int = 0):
        super().__init__()
        self.projection = nn.Conv2d(in_channels, embed_dims, kernel_size, stride,
                                    padding)

    def forward(self, x: Tensor) -> Tensor:
        # contiguous: a permuted view would carry its strides into every block's outputs,
        # and each LayerNorm and Linear would copy it first
        return self.projection(x).permute(0, 2, 3, 1).contiguous()


def grid_pos_embed(pos_embed: Tensor, src_grid: Sequence[int],
                   dst_grid: Sequence[int]) -> Tensor:
    """Position embedding (1, h*w, C) of ``src_grid``, as a (1, h', w', C) map of
    ``dst_grid``, bicubically interpolated when the grids differ."""
    src_grid, dst_grid = tuple(src_grid), tuple(dst_grid)
    if src_grid != dst_grid:
        pos_embed = resize_pos_embed(pos_embed, src_grid, dst_grid, 'bicubic', 0)
    return pos_embed.reshape(1, *dst_grid, -1)


def square_grid(num_tokens: int) -> Tuple[int, int]:
    """The square grid of a checkpoint's position embedding with ``num_tokens``."""
    side = int(round(num_tokens**0.5))
    if side * side != num_tokens:
        raise ValueError(f'Cannot infer the grid of a position embedding with '
                         f'{num_tokens} tokens: it is not a square number')
    return side, side


def resize_pos_embed_hook(module: nn.Module, state_dict: dict, prefix: str,
                          *args, **kwargs) -> None:
    """``load_state_dict`` pre-hook: interpolate a checkpoint's ``pos_embed`` made for
    another resolution to ``module.pos_embed``'s grid ``module.patch_resolution``."""
    key = prefix + 'pos_embed'
    if key not in state_dict or state_dict[key].shape == module.pos_embed.shape:
        return
    ckpt_pos_embed = state_dict[key]
    src_grid = square_grid(ckpt_pos_embed.shape[1])
    with torch.no_grad():
        state_dict[key] = grid_pos_embed(ckpt_pos_embed, src_grid,
                                         module.patch_resolution).flatten(1, 2)
