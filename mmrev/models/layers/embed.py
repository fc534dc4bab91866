"""Images or clips to token maps, and absolute position embeddings for any grid size."""
from typing import Optional, Sequence, Tuple, Union

import torch.nn.functional as F
from torch import Tensor, nn

Size = Union[int, Sequence[int]]
_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
# interpolation of a position embedding over a grid of 1, 2 or 3 dims
_MODES = {1: 'linear', 2: 'bicubic', 3: 'trilinear'}


class PatchEmbed(nn.Module):
    """A strided convolution mapping images (B, C_in, H, W) to token maps (B, h, w, C),
    or clips (B, C_in, T, H, W) to (B, t, h, w, C) when the kernel has three sides.

    Args:
        in_channels (int): image channels.
        embed_dims (int): token channels.
        kernel_size (int | Sequence[int]): convolution kernel; an int or two sides for
            images, three (time first) for clips.
        stride (int | Sequence[int]): convolution stride.
        padding (int | Sequence[int]): convolution padding. Defaults to 0.
    """

    def __init__(self, in_channels: int, embed_dims: int, kernel_size: Size,
                 stride: Size, padding: Size = 0):
        super().__init__()
        dims = 2 if isinstance(kernel_size, int) else len(kernel_size)
        self.projection = _CONV[dims](in_channels, embed_dims, kernel_size, stride, padding)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != self.projection.weight.ndim:
            takes = ('clips (B, C, T, H, W)' if isinstance(self.projection, nn.Conv3d)
                     else 'images (B, C, H, W)')
            raise ValueError(f'This model takes {takes}, got a tensor of shape '
                             f'{tuple(x.shape)}')
        # contiguous: a permuted view would carry its strides into every block's outputs,
        # and each LayerNorm and Linear would copy it first
        return self.projection(x).movedim(1, -1).contiguous()


def grid_pos_embed(pos_embed: Tensor, src_grid: Sequence[int], dst_grid: Sequence[int],
                   mode: Optional[str] = None) -> Tensor:
    """Position embedding (1, prod(src_grid), C) of ``src_grid``, as a (1, *dst_grid, C)
    map of ``dst_grid``, interpolated when the grids differ (``mode``: bicubic over 2
    dims, linear over 1, trilinear over 3)."""
    src_grid, dst_grid = tuple(src_grid), tuple(dst_grid)
    if src_grid == dst_grid:
        return pos_embed.reshape(1, *dst_grid, -1)
    table = pos_embed.reshape(1, *src_grid, -1).movedim(-1, 1)
    table = F.interpolate(table.float(), size=dst_grid, align_corners=False,
                          mode=mode or _MODES[len(dst_grid)])
    return table.to(pos_embed.dtype).movedim(1, -1)


def square_grid(num_tokens: int) -> Tuple[int, int]:
    """The square grid of a checkpoint's position embedding with ``num_tokens``."""
    side = int(round(num_tokens**0.5))
    if side * side != num_tokens:
        raise ValueError(f'Cannot infer the grid of a position embedding with '
                         f'{num_tokens} tokens: it is not a square number')
    return side, side
