"""Reversible backprop through a stack of ReversibleBlocks.

The forward keeps no activations: only the stack's two output streams are saved. In
backward, each block recomputes its inputs from its outputs, backpropagates through
itself, and hands the recomputed inputs down to the block below as that block's outputs.
Activation memory therefore does not grow with depth.
"""
from typing import Callable, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .coupling import BlockRecord, ReversibleBlock, Streams
from .recomputation import call, recompute


class _ReversibleBlockFunction(torch.autograd.Function):
    """One block of a reversible stack, as one autograd node that saves nothing but
    the block's record (RNG/autocast states, stochastic-depth mask; the top block also
    saves its outputs).

    The block's trainable parameters are inputs of the node and their gradients its
    outputs, as for any autograd op: autograd accumulates each one once, block by
    block, so DDP's gradient hooks fire once per parameter and all-reduce overlaps
    with backward; and the backward runs even when the stack's input needs no gradient.
    """

    @staticmethod
    def forward(ctx, x1: Tensor, x2: Tensor, block: ReversibleBlock,
                handoff: List[Streams], is_top: bool, *params: Tensor) -> Streams:
        records = []
        y1, y2 = block(x1, x2, records)
        ctx.block, ctx.handoff, ctx.record = block, handoff, records[0]
        if is_top:
            ctx.save_for_backward(y1, y2)
        return y1, y2

    @staticmethod
    def backward(ctx, dy1: Tensor, dy2: Tensor) -> Tuple:
        if ctx.saved_tensors:
            y1, y2 = ctx.saved_tensors
        elif ctx.handoff:
            y1, y2 = ctx.handoff.pop()
        else:
            raise RuntimeError('Reversible backprop runs one backward per forward; '
                               'set reversible=False to backpropagate twice')
        x1, x2, dx1, dx2, param_grads = ctx.block.backward_pass(
            y1, y2, dy1, dy2, ctx.record)
        ctx.handoff.append((x1, x2))
        return (dx1, dx2, None, None, None, *param_grads)


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

    @property
    def runner(self) -> Callable:
        """How the non-reversible parts around the stack should run: :func:`recompute`
        while it trains with reversible backprop (they then keep only their inputs
        too), else :func:`call`."""
        return recompute if self.reversible and self.training else call

    @staticmethod
    def input_streams(x1: Tensor, x2: Tensor) -> Streams:
        """The streams as the blocks take them: in float32 (or wider) under autocast,
        since the inverse, Y1 - F(X2), undoes a block exactly only if its outputs were
        not rounded to half precision."""
        if torch.is_autocast_enabled(x1.device.type):
            return tuple(x.to(torch.promote_types(x.dtype, torch.float32))
                         for x in (x1, x2))
        return x1, x2

    def forward(self, x1: Tensor, x2: Tensor, out_indices: Optional[Sequence[int]] = None,
                records: Optional[List[BlockRecord]] = None
                ) -> Union[Streams, List[Streams]]:
        """The streams after the last block; with ``out_indices``, the list of the
        streams after each of those blocks (their gradients enter the backward at their
        block; no other block's outputs are kept). Under ordinary autograd, each block
        appends its record to ``records`` if it is a list."""
        x1, x2 = self.input_streams(x1, x2)
        reversible = self.reversible and self.training and torch.is_grad_enabled()
        keep = set(out_indices if out_indices is not None else [len(self) - 1])
        outs, handoff = [], []
        for i, block in enumerate(self):
            if reversible:
                x1, x2 = _ReversibleBlockFunction.apply(
                    x1, x2, block, handoff, i == len(self) - 1,
                    *block.trainable_parameters())
            else:
                x1, x2 = block(x1, x2, records)
            if i in keep:
                outs.append((x1, x2))
        return outs if out_indices is not None else outs[-1]
