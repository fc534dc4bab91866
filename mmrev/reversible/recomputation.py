"""Recompute in backward: the vector-Jacobian product of a rerun, and a checkpointed call.

Both rerun a function under the state its forward ran under (:class:`ForwardState`: RNG
and autocast), so the rerun draws the same random numbers and computes the same values;
a module's buffers (running statistics) are left as the forward left them.
:func:`recompute_vjp` is the backward step of every reversible block;
:func:`recompute` runs a non-invertible function (a RevMViT stage transition) so that
only its inputs are kept for backward. A chain of :func:`recompute` calls can keep only
the chain's inputs: a call made with ``regenerate=True`` lets the calls that take its
outputs keep, instead of them, the way to regenerate them in backward.
"""
from contextlib import nullcontext
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .replay import ForwardState, buffers_kept

Grads = List[Optional[Tensor]]


def trainable_parameters(module: nn.Module) -> List[nn.Parameter]:
    """The parameters of ``module`` that require grad, in ``parameters()`` order."""
    return [p for p in module.parameters() if p.requires_grad]


def _as_tuple(x) -> tuple:
    return x if isinstance(x, tuple) else (x, )


def _keeping_buffers(fn: Callable):
    return buffers_kept(fn) if isinstance(fn, nn.Module) else nullcontext()


def _sum(total: Optional[Tensor], part: Optional[Tensor]) -> Optional[Tensor]:
    """``total + part`` (None counts as 0), into ``total``, a gradient of our own."""
    return part if total is None else total if part is None else total.add_(part)


def _joined(parts: Sequence[Sequence[Tensor]]) -> Tuple[Tensor, ...]:
    """Per-chunk tensors joined again along dim 1."""
    return tuple(parts[0]) if len(parts) == 1 else tuple(torch.cat(p, 1) for p in zip(*parts))


def _chunks(state: ForwardState, chunks: int) -> int:
    """The chunks of a rerun: none under autocast (see :func:`recompute_vjp`)."""
    return 1 if state.autocast_enabled else chunks


def _forward_again(fn: Callable, inputs: Sequence[Tensor], state: ForwardState,
                   chunks: int = 1) -> Tuple[Tensor, ...]:
    """The outputs of ``fn(*inputs)`` again, without grad, under ``state``; in
    ``chunks`` along dim 1 as :func:`recompute_vjp` reruns."""
    chunks = _chunks(state, chunks)
    parts = []
    for xs in zip(*(x.chunk(chunks, 1) for x in inputs)):
        with torch.no_grad(), _keeping_buffers(fn), state.replay():
            parts.append(_as_tuple(fn(*xs)))
    return _joined(parts)


def recompute_vjp(fn: Callable, inputs: Sequence[Tensor],
                  grad_outputs: Sequence[Optional[Tensor]], state: ForwardState,
                  params: Sequence[Tensor], chunks: int = 1
                  ) -> Tuple[Tuple[Tensor, ...], Tuple[Tensor, ...], Grads]:
    """Rerun ``fn(*inputs)`` under ``state`` and backpropagate ``grad_outputs``.

    Returns the outputs (detached), the gradients of ``inputs`` (zeros where the outputs
    do not depend on one) and of ``params`` (None where they do not depend on one),
    returned, not accumulated into ``.grad``. With ``chunks > 1`` the rerun is split into chunks
    along dim 1 of every input and output, which bounds its activation memory; exact
    for a ``fn`` that acts on each position of dim 1 separately and draws no
    per-element random numbers. Under autocast the rerun is not split: half-precision
    matrix products summed over chunks round differently from one product over all
    rows, and the gradients would differ from ordinary backprop by that rounding.
    """
    params = list(params)
    chunks = _chunks(state, chunks)
    outputs, input_grads, param_grads = [], [], [None] * len(params)
    parts = [x.chunk(chunks, 1) for x in inputs]
    grad_parts = [g.chunk(chunks, 1) if g is not None else [None] * chunks
                  for g in grad_outputs]
    for i in range(len(parts[0])):
        xs = [part[i].detach().requires_grad_() for part in parts]
        with _keeping_buffers(fn):  # restored after the backward, which may read them
            with torch.enable_grad(), state.replay():
                out = _as_tuple(fn(*xs))
            pairs = [(o, g[i].to(o.dtype)) for o, g in zip(out, grad_parts)
                     if g[i] is not None and o.requires_grad]
            grads = torch.autograd.grad(
                [o for o, _ in pairs], [*xs, *params], [g for _, g in pairs],
                allow_unused=True) if pairs else [None] * (len(xs) + len(params))
        input_grads.append([torch.zeros_like(x) if grad is None else grad
                            for x, grad in zip(xs, grads)])
        param_grads = [_sum(total, grad) for total, grad in zip(param_grads, grads[len(xs):])]
        outputs.append([o.detach() for o in out])
    return _joined(outputs), _joined(input_grads), param_grads


def refuse_double_backward() -> None:
    """Raise in a backward that records a graph (``create_graph=True``): the reruns of
    reversible backprop record none, so a second-order gradient would be wrong."""
    if torch.is_grad_enabled():
        raise RuntimeError(
            'mmrev does not support double backward (create_graph=True, e.g. a gradient '
            'penalty) through reversible backprop and its recomputed parts, whose reruns '
            'record no graph of the backward: set reversible=False for it')


class _Recompute(torch.autograd.Function):
    """``fn(*inputs)`` as one autograd node that saves only its inputs. Its parameters
    are inputs of the node, and their gradients its outputs, as for any autograd op.

    An input made by a node with ``regenerate`` on is not saved: the node that made it
    reruns (without grad, from its own kept inputs) when a backward first needs it, and
    keeps the result until its own backward, which comes after all its consumers'."""

    @staticmethod
    def forward(ctx, fn: Callable, chunks: int, regenerate: bool, sources: list,
                *tensors: Tensor):
        inputs = tensors[:len(sources)]
        ctx.fn, ctx.chunks, ctx.regenerate, ctx.sources = fn, chunks, regenerate, sources
        ctx.regenerated = None
        ctx.state = ForwardState(inputs[0])
        ctx.save_for_backward(*(None if source else x for x, source in zip(inputs, sources)),
                              *tensors[len(sources):])
        return fn(*inputs)

    @staticmethod
    def backward(ctx, *grad_outputs: Tensor) -> tuple:
        refuse_double_backward()
        inputs, params = _kept_inputs(ctx)
        ctx.regenerated = None  # every consumer's backward has run
        _, input_grads, param_grads = recompute_vjp(
            ctx.fn, inputs, grad_outputs, ctx.state, params, ctx.chunks)
        return (None, None, None, None, *input_grads, *param_grads)


def _source(x: Tensor) -> Optional[Tuple[object, int]]:
    """``(node, output index)`` if ``x`` is an output of a :func:`recompute` node made
    with ``regenerate=True``, else None."""
    node = x.grad_fn
    if isinstance(node, _Recompute._backward_cls) and node.regenerate:
        return node, x.output_nr
    return None


def _kept_inputs(ctx) -> Tuple[List[Tensor], List[Tensor]]:
    """The inputs of a :class:`_Recompute` node (saved or regenerated) and its
    parameters."""
    saved = ctx.saved_tensors
    inputs = [x if source is None else _regenerated(*source)
              for x, source in zip(saved, ctx.sources)]
    return inputs, list(saved[len(ctx.sources):])


def _regenerated(node, index: int) -> Tensor:
    if node.regenerated is None:
        node.regenerated = _forward_again(node.fn, _kept_inputs(node)[0], node.state,
                                          node.chunks)
    return node.regenerated[index]


def defers_to_backward() -> bool:
    """Whether a forward may keep only what a rerun in backward needs: grad mode is on
    and no ``torch.jit`` trace is recording (a trace records the ordinary graph)."""
    return torch.is_grad_enabled() and not torch.jit.is_tracing()


EAGER_REASON = ('reruns in backward replay the eager RNG, which compiled random ops do not '
                'draw from: mmrev runs them uncompiled')


def call(fn: Callable, *inputs: Tensor, params: Optional[Sequence[Tensor]] = None,
         chunks: int = 1, regenerate: bool = False):
    """``fn(*inputs)`` under ordinary autograd: :func:`recompute`'s signature, so that a
    model can take either as the way to run its parts."""
    return fn(*inputs)


@torch.compiler.disable(reason=EAGER_REASON)
def recompute(fn: Callable, *inputs: Tensor, params: Optional[Sequence[Tensor]] = None,
              chunks: int = 1, regenerate: bool = False):
    """``fn(*inputs)``, keeping only ``inputs`` for backward, which reruns ``fn``.

    Like non-reentrant ``torch.utils.checkpoint``, with the reversible blocks' rules:
    the rerun replays the forward's RNG and autocast state without reseeding the
    caller's RNG, and gradients reach ``params`` (default: ``fn``'s trainable
    parameters, for a module) even when no input requires grad. Where
    :func:`defers_to_backward` is false it is just ``fn(*inputs)``. Under
    ``torch.compile`` it runs uncompiled (a graph break), since a compiled rerun
    would not draw the forward's random numbers.

    Args:
        fn: a function of tensors returning a tensor or a tuple of tensors.
        *inputs: its tensor arguments.
        params: the tensors ``fn`` uses besides ``inputs`` that need gradients.
        chunks: rerun in this many chunks along dim 1 (see :func:`recompute_vjp`).
        regenerate: let the later :func:`recompute` calls that take an output of this
            one as an input keep, instead of it, the way to regenerate it: in backward
            this call reruns without grad when the first of them needs it, and the
            result is kept until this call's own backward. Less memory from the forward
            to the backward, for one more forward of ``fn``.
    """
    if params is None:
        if not isinstance(fn, nn.Module):
            raise TypeError('recompute needs params=[...] for a function that is not '
                            'an nn.Module')
        params = trainable_parameters(fn)
    if not defers_to_backward():
        return fn(*inputs)
    sources = [_source(x) for x in inputs]
    return _Recompute.apply(fn, chunks, regenerate, sources, *inputs, *params)
