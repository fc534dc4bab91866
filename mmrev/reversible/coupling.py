"""The reversible block: additive coupling of two streams, and its inverse."""
from contextlib import nullcontext
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from .replay import ForwardState

Streams = Tuple[Tensor, Tensor]
Grads = List[Optional[Tensor]]


def trainable_parameters(module: nn.Module) -> List[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def _recompute_vjp(fn: nn.Module, x: Tensor, dy: Tensor, state: ForwardState,
                   chunks: int = 1) -> Tuple[Tensor, Tensor, Grads]:
    """Rerun ``fn(x)`` as in the forward and backpropagate ``dy`` through it.

    Returns ``fn(x)``, the gradient of ``x`` and the gradients of
    ``trainable_parameters(fn)`` (not accumulated into ``.grad``: the caller hands them
    to autograd). With ``chunks > 1`` the rerun is split along dim 1, which bounds its
    activation memory.
    """
    params = trainable_parameters(fn)
    outs, dxs, param_grads = [], [], [None] * len(params)
    for x_part, dy_part in zip(x.chunk(chunks, 1), dy.chunk(chunks, 1)):
        x_part = x_part.detach().requires_grad_()
        with torch.enable_grad(), state.replay():
            out = fn(x_part)
        dx, *grads = torch.autograd.grad(
            out, [x_part, *params], dy_part.to(out.dtype), allow_unused=True)
        outs.append(out.detach())
        dxs.append(dx)
        param_grads = [total if grad is None else grad if total is None else total + grad
                       for total, grad in zip(param_grads, grads)]
    if chunks == 1:
        return outs[0], dxs[0], param_grads
    return torch.cat(outs, 1), torch.cat(dxs, 1), param_grads


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

    def trainable_parameters(self) -> List[nn.Parameter]:
        """F's then G's parameters that require grad: the order of
        :meth:`backward_pass`'s parameter gradients."""
        return trainable_parameters(self.f) + trainable_parameters(self.g)

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
                      f_state: ForwardState, g_state: ForwardState
                      ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Grads]:
        """From outputs and their gradients, return the inputs, their gradients and
        the gradients of :meth:`trainable_parameters`."""
        g_y1, dy1_through_g, g_grads = _recompute_vjp(self.g, y1, dy2, g_state,
                                                      self.g_chunks)
        x2 = y2 - g_y1
        dx1 = dy1 + dy1_through_g
        f_x2, dx2_through_f, f_grads = _recompute_vjp(self.f, x2, dx1, f_state)
        x1 = y1 - f_x2
        dx2 = dy2 + dx2_through_f
        return x1, x2, dx1, dx2, f_grads + g_grads
