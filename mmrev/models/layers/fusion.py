"""Lateral fusion of two equal-width streams."""
import re

import torch
from torch import Tensor, nn

from .mlp import Mlp

_REDUCTIONS = {
    'add': torch.add,
    'max': torch.maximum,
    'min': torch.minimum,
    'avg': lambda a, b: (a + b) / 2,
}
_CONCAT_LINEAR = re.compile(r'concat_linear(?:_(\d+(?:\.\d*)?))?')


class TwoStreamFusion(nn.Module):
    """Fuse two streams of C channels (last dim) as SlowFast's ``TwoStreamFusion`` fuses
    their concatenation ``x = [x1, x2]``.

    Modes: ``'add'``, ``'max'``, ``'min'``, ``'avg'``: element-wise over the two streams,
    giving C channels; ``'concat'``: ``x`` (2C); ``'concat_linear_<r>'``: ``x + MLP(x)``
    with an MLP 2C -> int(2C * r) -> 2C (``'concat_linear'``: r = 1).

    Args:
        mode (str): the fusion mode.
        channels (int): channels of the concatenation, 2C.
    """

    def __init__(self, mode: str, channels: int):
        super().__init__()
        self.mode = mode
        match = _CONCAT_LINEAR.fullmatch(mode)
        if match:
            ratio = float(match.group(1) or 1)
            self.mlp = Mlp(channels, int(channels * ratio))
        elif mode != 'concat' and mode not in _REDUCTIONS:
            raise ValueError(f'Unknown two-stream fusion mode {mode!r}: choose '
                             f"'concat', 'concat_linear_<ratio>' or one of "
                             f'{sorted(_REDUCTIONS)}')

    @staticmethod
    def out_channels(mode: str, channels: int) -> int:
        """Channels of the fused output for the 2C-wide ``channels``."""
        return channels // 2 if mode in _REDUCTIONS else channels

    def forward(self, x1: Tensor, x2: Tensor) -> Tensor:
        if self.mode in _REDUCTIONS:
            return _REDUCTIONS[self.mode](x1, x2)
        x = torch.cat([x1, x2], dim=-1)
        return x if self.mode == 'concat' else x + self.mlp(x)
