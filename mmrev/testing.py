"""Helpers to check reversible backprop against ordinary backprop."""
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from mmrev.reversible.diagnostics import (
    gradient_errors,
    projection_loss,
    relative_error,
    reversible_sequences,
    set_reversible,
)

__all__ = ['autocast_gradient_errors', 'backprop_gradients', 'gradient_errors',
           'projection_loss', 'relative_error', 'reversible_sequences', 'saved_tensor_bytes',
           'set_reversible']


def backprop_gradients(model: nn.Module, inputs: Tensor, reversible: bool,
                       seed: int = 0, loss_fn: Callable = projection_loss,
                       autocast: Optional[torch.dtype] = None) -> Dict[str, Tensor]:
    """Gradients of every trainable parameter and of ``inputs`` after one backward
    with reversible backprop on or off, from the RNG state ``seed`` (the caller's
    RNG is restored afterwards). With ``autocast``, the forward runs under autocast to
    that dtype and the backward outside it, as mmengine's AMP optim wrappers do."""
    set_reversible(model, reversible)
    model.zero_grad(set_to_none=True)
    inputs = inputs.detach().requires_grad_()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        with torch.autocast(inputs.device.type, dtype=autocast,
                            enabled=autocast is not None):
            outputs = model(inputs)
        loss_fn(outputs).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()
             if p.grad is not None}
    grads['input'] = inputs.grad.clone()
    model.zero_grad(set_to_none=True)
    return grads


def autocast_gradient_errors(model: nn.Module, inputs: Tensor,
                             dtype: torch.dtype = torch.bfloat16) -> Tuple[float, float]:
    """Relative error of reversible against ordinary gradients under autocast to
    ``dtype``, and of ordinary autocast against float32 (the noise of mixed precision
    itself), on the same batch and RNG state, over all gradients at once: the inverse's
    float32 rounding flips the half-precision rounding of a few recomputed elements, so
    single small tensors can land on either side of the noise."""
    def flat(grads: Dict[str, Tensor]) -> Tensor:
        return torch.cat([grad.flatten() for grad in grads.values()])

    fp32 = flat(backprop_gradients(model, inputs, reversible=False))
    ordinary = flat(backprop_gradients(model, inputs, reversible=False, autocast=dtype))
    reversible = flat(backprop_gradients(model, inputs, reversible=True, autocast=dtype))
    return relative_error(reversible, ordinary), relative_error(ordinary, fp32)


def saved_tensor_bytes(model: nn.Module, forward: Callable[[], object]) -> int:
    """Bytes of the tensors autograd saves for backward while ``forward()`` runs
    ``model``: each storage counted once, ``model``'s parameters left out."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages = {}

    def pack(tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        forward()
    return sum(storages.values())
