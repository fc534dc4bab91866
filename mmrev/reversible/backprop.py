"""Reversible backprop through a stack of ReversibleBlocks.

The forward keeps no activations: only the stack's two output streams are saved. The
backward walks the blocks in reverse, recomputing each block's inputs from its outputs and
backpropagating through the block as it goes, so activation memory does not grow with depth.
"""
from typing import Iterable, Tuple

import torch
from torch import Tensor, nn

from .coupling import ReversibleBlock, Streams


class _ReversibleFunction(torch.autograd.Function):
    """Runs ``blocks`` without saving activations; recomputes them in backward.

    The trainable parameters are inputs of the Function and their gradients are its
    outputs, as for any autograd op: autograd accumulates each parameter's gradient
    once, so DDP's gradient hooks fire once (in any of its modes, ``no_sync``
    included), and the backward runs even when the stack's input needs no gradient
    (a frozen stem). Accumulating them into ``.grad`` inside the backward instead
    would fire DDP's hooks twice: autograd still visits every input's accumulator.
    """

    @staticmethod
    def forward(ctx, x1: Tensor, x2: Tensor, blocks: 'ReversibleSequence',
                *params: Tensor) -> Streams:
        ctx.blocks, ctx.params, ctx.states = blocks, params, []
        for block in blocks:
            x1, x2 = block(x1, x2, ctx.states)
        ctx.save_for_backward(x1, x2)
        return x1, x2

    @staticmethod
    def backward(ctx, dy1: Tensor, dy2: Tensor) -> Tuple:
        y1, y2 = ctx.saved_tensors
        states, param_grads = ctx.states, {}
        for i in reversed(range(len(ctx.blocks))):
            y1, y2, dy1, dy2 = ctx.blocks[i].backward_pass(
                y1, y2, dy1, dy2, states[2 * i], states[2 * i + 1], param_grads)
        del ctx.states
        return (dy1, dy2, None) + tuple(param_grads.get(p) for p in ctx.params)


class ReversibleSequence(nn.ModuleList):
    """A stack of :class:`ReversibleBlock` mapping two streams to two streams.

    In training with grad enabled and ``reversible=True``, it runs with reversible
    backprop; otherwise (eval, ``torch.no_grad``, ``reversible=False``) the same blocks
    run under ordinary autograd, with the same numbers.

    Args:
        blocks (Iterable[ReversibleBlock]): the blocks, in order.
        reversible (bool): use reversible backprop in training. Defaults to True.
    """

    def __init__(self, blocks: Iterable[ReversibleBlock], reversible: bool = True):
        super().__init__(blocks)
        self.reversible = reversible

    def forward(self, x1: Tensor, x2: Tensor) -> Streams:
        if self.reversible and self.training and torch.is_grad_enabled():
            params = [p for p in self.parameters() if p.requires_grad]
            return _ReversibleFunction.apply(x1, x2, self, *params)
        for block in self:
            x1, x2 = block(x1, x2)
        return x1, x2
