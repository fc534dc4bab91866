"""Reversible backprop through a stack of InvertibleBlocks.

The forward keeps no activations: only the stack's two output streams are saved. In
backward, each block recomputes its inputs from its outputs, backpropagates through
itself, and hands the recomputed inputs down to the block below as that block's outputs.
Activation memory therefore does not grow with depth.
"""
import warnings
from functools import partial
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .block import InvertibleBlock, Streams
from .coupling import ReversibleBlock, to_fixed_point
from .module_hooks import fsdp1_flattened, fsdp2_state, has_hooks
from .recomputation import EAGER_REASON, call, defers_to_backward, recompute, refuse_double_backward


class _ReversibleBlockFunction(torch.autograd.Function):
    """One block of a reversible stack, as one autograd node that saves nothing but
    the block's record (RNG/autocast states, stochastic-depth mask) and, if
    ``save_outputs``, its outputs (the stack's last ones, those it returns, and those
    below a block that does not run reversibly).

    The block's trainable parameters are inputs of the node and their gradients its
    outputs, as for any autograd op: autograd accumulates each one once, block by
    block, so DDP's gradient hooks fire once per parameter and all-reduce overlaps
    with backward; and the backward runs even when the stack's input needs no gradient.
    Each backward hands the block's recomputed inputs down, in ``handoff[index - 1]``,
    to the block below if ``hand_down``.
    """

    @staticmethod
    def forward(ctx, x1: Tensor, x2: Tensor, block: InvertibleBlock,
                handoff: Dict[int, Streams], index: int, save_outputs: bool,
                hand_down: bool, *params: Tensor) -> Streams:
        records = []
        # the block's own forward: its module hooks (FSDP2's) run around this node
        y1, y2 = type(block).forward(block, x1, x2, records)
        ctx.block, ctx.handoff, ctx.index, ctx.record = block, handoff, index, records[0]
        ctx.hand_down = hand_down
        if save_outputs:
            ctx.save_for_backward(y1, y2)
        return y1, y2

    @staticmethod
    def backward(ctx, dy1: Tensor, dy2: Tensor) -> Tuple:
        refuse_double_backward()
        # a block that saved no outputs has one consumer, the reversible block above,
        # whose backward always runs first and hands them down
        recomputed = ctx.handoff.pop(ctx.index, None)
        y1, y2 = ctx.saved_tensors or recomputed
        x1, x2, dx1, dx2, param_grads = ctx.block.backward_pass(
            y1, y2, dy1, dy2, ctx.record)
        if ctx.hand_down:
            ctx.handoff[ctx.index - 1] = (x1, x2)
        return (dx1, dx2, None, None, None, None, None, *param_grads)


def _apply_block(x1: Tensor, x2: Tensor, *, block: InvertibleBlock,
                 handoff: Dict[int, Streams], index: int, save_outputs: bool,
                 hand_down: bool) -> Streams:
    """``block`` as one :class:`_ReversibleBlockFunction`, on the parameters it has
    now: under FSDP2, called as the block's forward, the unsharded ones."""
    return _ReversibleBlockFunction.apply(x1, x2, block, handoff, index, save_outputs,
                                          hand_down, *block.trainable_parameters())


def _call_through_hooks(block: InvertibleBlock, forward: Callable, *streams: Tensor):
    """``forward(*streams)`` called as ``block``'s forward, inside its module hooks:
    FSDP2's gather the block's parameters before it and reshard them after; in backward
    they gather them again before the node's backward and reduce-scatter the gradients
    it returns."""
    block.forward = forward
    try:
        return block(*streams)
    finally:
        del block.forward


@torch.compiler.disable(reason=EAGER_REASON)
def _run_reversibly(blocks: Sequence[InvertibleBlock], x1: Tensor, x2: Tensor,
                    keep: set) -> List[Streams]:
    """Run ``blocks`` with reversible backprop, except those a module hook acts on
    (other than FSDP2's ``fully_shard`` on the block itself), which run under ordinary
    autograd; return the streams after the blocks in ``keep``."""
    if fsdp1_flattened(blocks):
        raise RuntimeError(
            'FSDP1 (FullyShardedDataParallel, mmengine\'s FSDPStrategy) flattens the '
            'parameters of reversible blocks, which reversible backprop cannot '
            'differentiate when it reruns the blocks in backward. Shard with FSDP2 '
            'instead (torch.distributed.fsdp.fully_shard on each reversible block and on '
            'the root; with mmengine, the FlexibleRunner strategy mmrev.FullyShardStrategy), '
            'or train with ordinary backprop (reversible=False, or '
            'mmrev.reversible.set_reversible(model, False)), which FSDP1 supports')
    ordinary = [has_hooks(block, but_fsdp2=True) for block in blocks]
    if any(ordinary):
        warnings.warn(
            f'Module hooks act on reversible blocks '
            f'{[i for i, hooked in enumerate(ordinary) if hooked]} or inside them '
            f'(forward, pre-forward or backward hooks, e.g. FSDP2\'s fully_shard on F '
            f'and G): those run with ordinary backprop (their activations kept), so that '
            f'the hooks see and do what they would without reversible backprop; shard '
            f'whole blocks to keep reversible backprop', stacklevel=3)
    outs, handoff, last = [], {}, len(blocks) - 1
    for i, block in enumerate(blocks):
        if ordinary[i]:
            x1, x2 = block(x1, x2)
        else:
            forward = partial(_apply_block, block=block, handoff=handoff, index=i,
                              save_outputs=i in keep or i == last or ordinary[i + 1],
                              hand_down=i > 0 and not ordinary[i - 1])
            x1, x2 = (_call_through_hooks(block, forward, x1, x2)
                      if fsdp2_state(block) is not None else forward(x1, x2))
        if i in keep:
            outs.append((x1, x2))
    return outs


class ReversibleSequence(nn.ModuleList):
    """A stack of :class:`InvertibleBlock` mapping two streams to two streams.

    In training with grad enabled and ``reversible=True``, it runs with reversible
    backprop; otherwise (eval, ``torch.no_grad``, ``reversible=False``, a
    ``torch.jit`` trace) the same blocks run under ordinary autograd, with the same
    numbers. With reversible backprop:

    - a block that a module hook acts on (on the block or inside it, e.g. a feature
      extractor's forward hook, ``register_full_backward_hook``, FSDP2's
      ``fully_shard`` on its branches) runs under ordinary autograd, with a warning:
      hooks behave as without reversible backprop, and that block keeps its
      activations. FSDP2's ``fully_shard`` on whole blocks keeps reversible backprop:
      each block's parameters are gathered for its forward and again for its backward;
    - under ``torch.compile`` the stack runs uncompiled (a graph break): its reruns in
      backward replay the eager RNG, which compiled dropout does not draw from;
    - a second backward (``retain_graph=True``) must start above the stack's last
      block, and double backward (``create_graph=True``) needs ``reversible=False``.

    Args:
        blocks (Iterable[InvertibleBlock]): the blocks, in order.
        reversible (bool): use reversible backprop in training. Defaults to True.
        exact_bits (int, optional): exact mode: the streams are held in fixed point,
            float64 on the grid of ``2 ** -exact_bits`` (integers with that scale), and
            each branch output is rounded to the grid before it is added, so every
            inverse reproduces its inputs bit for bit, at any depth and under any
            autocast dtype, and reversible gradients equal ordinary ones exactly. The
            branches see the streams in float32; the rounding passes gradients straight
            through. Needs :class:`ReversibleBlock` with the additive coupling. Defaults
            to None: streams in the input's precision.
    """

    def __init__(self, blocks: Iterable[InvertibleBlock], reversible: bool = True,
                 exact_bits: Optional[int] = None):
        super().__init__(blocks)
        self.reversible = reversible
        self.exact_bits = exact_bits
        if exact_bits is not None:
            if not 0 < exact_bits <= 40:
                raise ValueError(f'exact_bits must be in [1, 40] (float64 holds 53 bits: '
                                 f'the rest is the streams\' range), got {exact_bits}')
            for block in self:
                if not isinstance(block, ReversibleBlock) or block.coupling is not None:
                    raise ValueError('exact_bits needs ReversibleBlocks with the additive '
                                     'coupling (coupling=None)')
                block.exact_bits = exact_bits

    @property
    def runner(self) -> Callable:
        """How the non-reversible parts around the stack should run: :func:`recompute`
        while it trains with reversible backprop (they then keep only their inputs
        too), else :func:`call`."""
        return recompute if self.reversible and self.training else call

    def input_streams(self, x1: Tensor, x2: Tensor) -> Streams:
        """The streams as the blocks take them: in float32 (or wider) under autocast,
        since the inverse, Y1 - F(X2), undoes a block exactly only if its outputs were
        not rounded to half precision; in exact mode, on the fixed-point grid."""
        if self.exact_bits is not None:
            return tuple(to_fixed_point(x, self.exact_bits) for x in (x1, x2))
        if torch.is_autocast_enabled(x1.device.type):
            return tuple(x.to(torch.promote_types(x.dtype, torch.float32))
                         for x in (x1, x2))
        return x1, x2

    def run_blocks(self, x1: Tensor, x2: Tensor, keep: Sequence[int],
                   records: Optional[list] = None) -> List[Streams]:
        """The streams after each block in ``keep``, from the blocks' input streams:
        the one loop over the blocks, reversible or not (then appending each block's
        record to ``records`` if it is a list)."""
        if self.reversible and self.training and defers_to_backward():
            return _run_reversibly(self, x1, x2, set(keep))
        outs = []
        for i, block in enumerate(self):
            x1, x2 = block(x1, x2, records)
            if i in keep:
                outs.append((x1, x2))
        return outs

    def forward(self, x1: Tensor, x2: Tensor, out_indices: Optional[Sequence[int]] = None,
                records: Optional[list] = None
                ) -> Union[Streams, List[Streams]]:
        """The streams after the last block; with ``out_indices``, the list of the
        streams after each of those blocks (their gradients enter the backward at their
        block; no other block's outputs are kept). Under ordinary autograd, each block
        appends its record to ``records`` if it is a list. In exact mode the streams
        come back in the precision they came in."""
        dtype = x1.dtype
        keep = out_indices if out_indices is not None else [len(self) - 1]
        outs = self.run_blocks(*self.input_streams(x1, x2), keep, records)
        if self.exact_bits is not None:
            outs = [(y1.to(dtype), y2.to(dtype)) for y1, y2 in outs]
        return outs if out_indices is not None else outs[-1]

    @torch.no_grad()
    def inverse(self, y1: Tensor, y2: Tensor, records: Sequence) -> Streams:
        """The stack's inputs recomputed from its outputs, block by block from the top,
        replaying the ``records`` of the forward (as reversible backprop does)."""
        for block, record in zip(reversed(self), reversed(records)):
            y1, y2 = block.inverse(y1, y2, record)
        return y1, y2
