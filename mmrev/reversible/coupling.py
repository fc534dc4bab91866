"""The reversible block: additive coupling of two streams, and its inverse."""
from contextlib import nullcontext
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from .replay import ForwardState

Streams = Tuple[Tensor, Tensor]
ParamGrads = Dict[Tensor, Tensor]


def _recompute_vjp(fn: nn.Module, x: Tensor, dy: Tensor, state: ForwardState,
                   param_grads: ParamGrads, chunks: int = 1) -> Tuple[Tensor, Tensor]:
    """Rerun ``fn(x)`` as in the forward and backpropagate ``dy`` through it.

    Returns ``fn(x)`` and the gradient of ``x``; the gradients of ``fn``'s trainable
    parameters go into ``param_grads`` (not into ``.grad``: the caller hands them to
    autograd). With ``chunks > 1`` the rerun is split along dim 1 to bound its
    activation memory.
    """
    params = [p for p in fn.parameters() if p.requires_grad]
    outs, dxs = [], []
    for x_part, dy_part in zip(x.chunk(chunks, 1), dy.chunk(chunks, 1)):
        x_part = x_part.detach().requires_grad_()
        with torch.enable_grad(), state.replay():
            out = fn(x_part)
        dx, *grads = torch.autograd.grad(
            out, [x_part, *params], dy_part.to(out.dtype), allow_unused=True)
        outs.append(out.detach())
        dxs.append(dx)
        for param, grad in zip(params, grads):
            if grad is None:
                continue
            if param in param_grads:
                param_grads[param].add_(grad)
            else:
                param_grads[param] = grad
    if chunks == 1:
        return outs[0], dxs[0]
    return torch.cat(outs, 1), torch.cat(dxs, 1)


class ReversibleBlock(nn.Module):
    """``Y1 = X1 + F(X2)``, ``Y2 = X2 + G(Y1)``; inverse ``X2 = Y2 - G(Y1)``,
    ``X1 = Y1 - F(X2)``.

    Args:
        f (nn.Module): first sub-function (e.g. norm + attention + drop path).
        g (nn.Module): second sub-function (e.g. norm + MLP + drop path).
        g_chunks (int): split the backward rerun of G into this many chunks along
            dim 1 (tokens). Exact only for a token-wise G whose randomness is per
            sample (drop path), not per element (dropout). Defaults to 1.
    """

    def __init__(self, f: nn.Module, g: nn.Module, g_chunks: int = 1):
        super().__init__()
        if g_chunks < 1:
            raise ValueError(f'g_chunks must be >= 1, got {g_chunks}')
        self.f, self.g, self.g_chunks = f, g, g_chunks

    def forward(self, x1: Tensor, x2: Tensor,
                states: Optional[List[ForwardState]] = None) -> Streams:
        """Apply the block; if ``states`` is a list, record F's and G's states in it."""
        if states is not None:
            states.append(ForwardState(x2))
        y1 = x1 + self.f(x2)
        if states is not None:
            states.append(ForwardState(y1))
        y2 = x2 + self.g(y1)
        return y1, y2

    @torch.no_grad()
    def inverse(self, y1: Tensor, y2: Tensor, f_state: Optional[ForwardState] = None,
                g_state: Optional[ForwardState] = None) -> Streams:
        """Recompute the inputs from the outputs (replaying recorded states, if any)."""
        with g_state.replay() if g_state else nullcontext():
            x2 = y2 - self.g(y1)
        with f_state.replay() if f_state else nullcontext():
            x1 = y1 - self.f(x2)
        return x1, x2

    def backward_pass(self, y1: Tensor, y2: Tensor, dy1: Tensor, dy2: Tensor,
                      f_state: ForwardState, g_state: ForwardState,
                      param_grads: ParamGrads) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """From outputs and their gradients, return inputs and their gradients;
        add the parameters' gradients to ``param_grads``."""
        g_y1, dy1_through_g = _recompute_vjp(self.g, y1, dy2, g_state, param_grads,
                                             self.g_chunks)
        x2 = y2 - g_y1
        dx1 = dy1 + dy1_through_g
        f_x2, dx2_through_f = _recompute_vjp(self.f, x2, dx1, f_state, param_grads)
        x1 = y1 - f_x2
        dx2 = dy2 + dx2_through_f
        return x1, x2, dx1, dx2
