"""The transformer MLP: Linear, GELU, Linear, with optional dropout."""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmrev.reversible import has_hooks


class Mlp(nn.Module):
    """Token-wise two-layer perceptron.

    Args:
        in_channels (int): input and output channels.
        hidden_channels (int): channels of the hidden layer.
        out_channels (int, optional): output channels. Defaults to ``in_channels``.
        drop (float): dropout after the activation and after the output layer.
            Defaults to 0.
    """

    def __init__(self, in_channels: int, hidden_channels: int,
                 out_channels: Optional[int] = None, drop: float = 0.):
        super().__init__()
        self.fc1 = nn.Linear(in_channels, hidden_channels)
        self.fc2 = nn.Linear(hidden_channels, out_channels or in_channels)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.fc1(x)
        # With no graph to record (eval, the reversible forward), GELU overwrites fc1's
        # fresh output, unless a hook may keep it: a hidden-sized buffer less to fill.
        if hidden.requires_grad or has_hooks(self.fc1):
            hidden = F.gelu(hidden)
        else:
            hidden = torch.ops.aten.gelu_(hidden)
        return self.drop(self.fc2(self.drop(hidden)))
