"""How faithfully a reversible stack inverts: measurements for monitoring a training run.

Reversible backprop is exact only if each block's inputs can be recomputed from its
outputs. Low precision, badly conditioned blocks or a bug break that silently; these
functions measure it on given input streams, leaving the caller's RNG, the parameters'
``.grad`` and the buffers (running statistics) as they were.
"""
from typing import Dict, Iterator, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .backprop import ReversibleSequence
from .replay import ForwardState, buffers_kept


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


@torch.no_grad()
def reconstruction_errors(sequence: ReversibleSequence, x1: Tensor,
                          x2: Tensor) -> Tuple[float, float]:
    """Max absolute and relative error of the input streams recomputed from the outputs.

    Runs the stack forward as in training (streams in float32 under autocast),
    recording each sub-function's RNG and autocast state, then inverts it block by block
    replaying those states, as reversible backprop does in backward. The relative error
    is divided by the largest input magnitude; both are NaN if the recomputation
    produced NaN.
    """
    states = []
    x1, x2 = sequence.input_streams(x1, x2)
    with torch.random.fork_rng(devices=[x1.device] if x1.is_cuda else []), \
            buffers_kept(sequence):
        # not __call__: forward hooks on the stack must not see this run
        (y1, y2), = sequence.run_blocks(x1, x2, [len(sequence) - 1], records=states)
    y1, y2 = sequence.inverse(y1, y2, states)
    # torch's max propagates NaN (Python's max would not)
    abs_err = torch.stack([(y1 - x1).abs().max(), (y2 - x2).abs().max()]).max().item()
    scale = max(x1.abs().max().item(), x2.abs().max().item())
    return abs_err, abs_err / scale if scale else abs_err


def _stack_gradients(sequence: ReversibleSequence, x1: Tensor, x2: Tensor,
                     reversible: bool, state: ForwardState) -> Dict[str, Tensor]:
    """Gradients of a projection loss of the outputs, run under ``state``."""
    x1, x2 = x1.detach().requires_grad_(), x2.detach().requires_grad_()
    sequence.reversible = reversible
    with torch.enable_grad(), state.replay():
        # .forward, not __call__: forward hooks on the stack must not see this run
        projection_loss(sequence.forward(x1, x2)).backward()
    grads = {name: p.grad for name, p in sequence.named_parameters() if p.grad is not None}
    sequence.zero_grad(set_to_none=True)
    return dict(grads, x1=x1.grad, x2=x2.grad)


def gradient_error(sequence: ReversibleSequence, x1: Tensor, x2: Tensor) -> float:
    """Largest relative difference between reversible and ordinary gradients (of the
    inputs and of every parameter) of the stack on these inputs, both runs from the same
    RNG and autocast state. Needs the stack in training mode and costs one forward with
    saved activations and two backward passes of it."""
    params = list(sequence.parameters())
    saved_grads, saved_reversible = [p.grad for p in params], sequence.reversible
    sequence.zero_grad(set_to_none=True)
    state = ForwardState(x1)
    try:
        with buffers_kept(sequence):
            expected = _stack_gradients(sequence, x1, x2, False, state)
            actual = _stack_gradients(sequence, x1, x2, True, state)
    finally:
        sequence.reversible = saved_reversible
        for param, grad in zip(params, saved_grads):
            param.grad = grad
    return torch.tensor(list(gradient_errors(actual, expected).values())).max().item()
