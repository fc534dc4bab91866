"""Helpers to check reversible backprop against ordinary backprop."""
from typing import Callable, Dict

import torch
from torch import Tensor, nn

from mmrev.reversible.diagnostics import (
    gradient_errors,
    projection_loss,
    relative_error,
    reversible_sequences,
    set_reversible,
)

__all__ = ['backprop_gradients', 'gradient_errors', 'projection_loss', 'relative_error',
           'reversible_sequences', 'set_reversible']


def backprop_gradients(model: nn.Module, inputs: Tensor, reversible: bool,
                       seed: int = 0,
                       loss_fn: Callable = projection_loss) -> Dict[str, Tensor]:
    """Gradients of every trainable parameter and of ``inputs`` after one backward
    with reversible backprop on or off, from the RNG state ``seed`` (the caller's
    RNG is restored afterwards)."""
    set_reversible(model, reversible)
    model.zero_grad(set_to_none=True)
    inputs = inputs.detach().requires_grad_()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        loss_fn(model(inputs)).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()
             if p.grad is not None}
    grads['input'] = inputs.grad.clone()
    model.zero_grad(set_to_none=True)
    return grads
