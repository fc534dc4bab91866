"""Helpers to check reversible backprop against ordinary backprop."""
from typing import Callable, Dict, Iterator, Sequence, Union

import torch
from torch import Tensor, nn

from mmrev.reversible import ReversibleSequence


def reversible_sequences(model: nn.Module) -> Iterator[ReversibleSequence]:
    """Every reversible stack in ``model`` (DDP-wrapped or not)."""
    return (m for m in model.modules() if isinstance(m, ReversibleSequence))


def set_reversible(model: nn.Module, reversible: bool) -> None:
    """Switch reversible backprop on or off for every stack in ``model``."""
    for sequence in reversible_sequences(model):
        sequence.reversible = reversible


def projection_loss(outputs: Union[Tensor, Sequence[Tensor]]) -> Tensor:
    """A scalar that weights every output element by a fixed pseudo-random factor
    (its own generator: the global RNG is not touched)."""
    outputs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    generator = torch.Generator().manual_seed(0)
    return sum((out.float() * torch.randn(out.shape, generator=generator).to(
        out.device)).sum() for out in outputs)


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


def relative_error(actual: Tensor, expected: Tensor) -> float:
    """``max|actual - expected| / max|expected|`` (0 when both are 0)."""
    scale = expected.abs().max().item()
    diff = (actual.double() - expected.double()).abs().max().item()
    return diff / scale if scale else diff


def gradient_errors(actual: Dict[str, Tensor],
                    expected: Dict[str, Tensor]) -> Dict[str, float]:
    """Per-tensor relative error; raises if the two sets of gradients differ in
    which tensors received one."""
    if actual.keys() != expected.keys():
        raise AssertionError(
            f'Different tensors got gradients: only in actual '
            f'{sorted(actual.keys() - expected.keys())}, only in expected '
            f'{sorted(expected.keys() - actual.keys())}')
    return {k: relative_error(actual[k], expected[k]) for k in expected}
