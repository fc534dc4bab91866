"""The reversible block: two streams coupled through two branches, and its inverse.

The coupling is additive by default (``y = x + D * F``, the RevViT/RevMViT block, with
stochastic depth and in-place sums); any other is given as a forward/inverse pair
(:class:`Coupling`), e.g. :func:`momentum` (MomentumNet) or :func:`affine`.
"""
from contextlib import nullcontext
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .block import InvertibleBlock, Streams
from .module_hooks import has_hooks
from .recomputation import Grads, recompute_vjp, trainable_parameters
from .replay import ForwardState, buffers_kept


class Coupling(NamedTuple):
    """How a stream ``x`` and a branch output ``b`` combine: ``y = forward(x, b)``,
    invertible in ``x`` for every ``b``: ``x = inverse(y, b)``."""
    forward: Callable[[Tensor, Tensor], Tensor]
    inverse: Callable[[Tensor, Tensor], Tensor]


def momentum(beta: float) -> Coupling:
    """MomentumNet's ``y = beta * x + (1 - beta) * b`` (Sander et al., 2021)."""
    if not 0 < beta < 1:
        raise ValueError(f'beta must be in (0, 1), got {beta}')
    return Coupling(lambda x, b: beta * x + (1 - beta) * b,
                    lambda y, b: (y - (1 - beta) * b) / beta)


def affine(dim: int = -1) -> Coupling:
    """``y = x * exp(s) + t`` with ``s, t`` the halves of the branch output along
    ``dim`` (which then has twice the stream's channels), as in RealNVP/Glow."""
    def forward(x: Tensor, b: Tensor) -> Tensor:
        s, t = b.chunk(2, dim)
        return x * s.exp() + t

    def inverse(y: Tensor, b: Tensor) -> Tensor:
        s, t = b.chunk(2, dim)
        return (y - t) * (-s).exp()

    return Coupling(forward, inverse)


class BlockRecord(NamedTuple):
    """What a block's forward drew and ran under, to replay it exactly in backward."""
    f_state: ForwardState
    g_state: ForwardState
    keep_mask: Optional[Tensor]


def _scale(x: Tensor, mask: Optional[Tensor]) -> Tensor:
    return x if mask is None else x * mask


def _may_overwrite(branch: Tensor, stream: Tensor, others: Sequence[Tensor]) -> bool:
    """Whether ``stream + branch`` may go into ``branch``'s buffer: no graph is recorded
    through them, no compiler or tracer plans the buffers, and ``branch`` is a contiguous
    tensor of the sum's shape and dtype sharing memory with neither ``stream`` nor
    ``others`` (the tensors still in use)."""
    if torch.is_grad_enabled() and (branch.requires_grad or stream.requires_grad):
        return False
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    if (not branch.is_contiguous() or branch.shape != stream.shape
            or branch.dtype != stream.dtype):
        return False
    storage = branch.untyped_storage().data_ptr()
    return all(storage != t.untyped_storage().data_ptr() for t in (stream, *others))


def _add(stream: Tensor, branch: Tensor, mask: Optional[Tensor], *others: Tensor,
         alpha: int = 1, reuse: bool = True) -> Tensor:
    """``stream + alpha * D * branch``, ``D`` the stochastic-depth ``mask``; into
    ``branch``'s buffer if ``reuse`` (no hook can see ``branch``) and
    :func:`_may_overwrite`: a stream-sized buffer less to allocate and fill."""
    if not (reuse and _may_overwrite(branch, stream, others)):
        return torch.add(stream, _scale(branch, mask), alpha=alpha)
    if mask is not None:
        branch.mul_(mask)
    return torch.add(stream, branch, alpha=alpha, out=branch)


class _RoundToGrid(torch.autograd.Function):
    """``x`` in float64, rounded to the grid of ``2 ** -bits``; the gradient passes
    straight through, in ``x``'s dtype."""

    @staticmethod
    def forward(ctx, x: Tensor, bits: int) -> Tensor:
        ctx.dtype = x.dtype
        scale = 2. ** bits  # a power of two: exact scaling
        return torch.round(x.double() * scale).div_(scale)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tuple[Tensor, None]:
        return grad.to(ctx.dtype), None


def to_fixed_point(x: Tensor, bits: int) -> Tensor:
    """``x`` as a fixed-point number with ``bits`` fractional bits (float64 on the grid
    of ``2 ** -bits``, so that sums and differences of such numbers are exact);
    gradients pass straight through."""
    return _RoundToGrid.apply(x, bits)


class ReversibleBlock(InvertibleBlock):
    """``Y1 = X1 + D * F(X2)``, ``Y2 = X2 + D * G(Y1)``; inverse
    ``X2 = Y2 - D * G(Y1)``, ``X1 = Y1 - D * F(X2)``; with a ``coupling``,
    ``Y1 = c(X1, F(X2))``, ``Y2 = c(X2, G(Y1))``.

    ``D`` is the block's stochastic depth: in training, a per-sample keep mask (scaled
    by ``1 / (1 - drop_path)``) shared by both branches, so a dropped sample skips the
    whole block, as in the official models; 1 otherwise.

    Args:
        f (nn.Module): first sub-function (e.g. norm + attention).
        g (nn.Module): second sub-function (e.g. norm + MLP).
        drop_path (float): probability of dropping the block per sample. Defaults to 0.
        g_chunks (int): split the backward rerun of G into this many chunks along
            dim 1 (tokens). Exact only for a token-wise G without per-element
            randomness (dropout). Defaults to 1.
        coupling (Coupling, optional): another coupling than the additive one
            (which is the fastest: its backward needs no rerun of the sums). Its
            backward is :class:`InvertibleBlock`'s generic one; ``drop_path`` and
            ``g_chunks`` are for the additive coupling. Defaults to None: additive.

    With no graph to record (eval, ``torch.no_grad``, the reversible forward), each sum
    is written into the fresh output of its branch, unless a module hook acts on that
    branch (it may keep the output). Modules with running statistics (BatchNorm) in a
    branch are updated once per step: the reruns in backward restore them.
    """

    def __init__(self, f: nn.Module, g: nn.Module, drop_path: float = 0.,
                 g_chunks: int = 1, coupling: Optional[Coupling] = None):
        super().__init__()
        if g_chunks < 1:
            raise ValueError(f'g_chunks must be >= 1, got {g_chunks}')
        if not 0 <= drop_path < 1:
            raise ValueError(f'drop_path must be in [0, 1), got {drop_path}')
        if coupling is not None and (drop_path or g_chunks > 1):
            raise ValueError('drop_path and g_chunks are for the additive coupling: '
                             'leave them at 0 and 1 with a coupling, or use coupling=None')
        self.f, self.g, self.drop_path, self.g_chunks = f, g, drop_path, g_chunks
        self.coupling = coupling
        self.exact_bits: Optional[int] = None  # set by ReversibleSequence(exact_bits=...)

    def keep_mask(self, x: Tensor) -> Optional[Tensor]:
        """The stochastic-depth mask ``D`` for a batch like ``x`` (None: keep all)."""
        if not self.training or self.drop_path == 0:
            return None
        keep = 1 - self.drop_path
        shape = (x.shape[0], ) + (1, ) * (x.ndim - 1)
        return x.new_empty(shape).bernoulli_(keep).div_(keep)

    def trainable_parameters(self) -> List[nn.Parameter]:
        """F's then G's parameters that require grad: the order of
        :meth:`backward_pass`'s parameter gradients."""
        return trainable_parameters(self.f) + trainable_parameters(self.g)

    def _couple(self, branch: nn.Module, stream: Tensor, branch_input: Tensor,
                mask: Optional[Tensor], alpha: int = 1) -> Tensor:
        """The coupling of ``stream`` with ``branch(branch_input)`` (its inverse for
        ``alpha=-1``)."""
        if self.exact_bits is not None:
            out = to_fixed_point(_scale(branch(branch_input.float()), mask), self.exact_bits)
            return torch.add(stream, out, alpha=alpha)
        out = branch(branch_input)
        if self.coupling is not None:
            return (self.coupling.forward if alpha == 1 else self.coupling.inverse)(
                stream, out)
        return _add(stream, out, mask, branch_input, alpha=alpha,
                    reuse=not has_hooks(branch))

    def forward(self, x1: Tensor, x2: Tensor,
                records: Optional[List[BlockRecord]] = None) -> Streams:
        """Apply the block; if ``records`` is a list, append what a replay needs."""
        mask = self.keep_mask(x2)
        f_state = ForwardState(x2) if records is not None else None
        y1 = self._couple(self.f, x1, x2, mask)
        g_state = ForwardState(y1) if records is not None else None
        y2 = self._couple(self.g, x2, y1, mask)
        if records is not None:
            records.append(BlockRecord(f_state, g_state, mask))
        return y1, y2

    def rerun(self, x1: Tensor, x2: Tensor, record: BlockRecord) -> Streams:
        """The forward of ``record`` again, under autograd."""
        with record.f_state.replay():
            y1 = self._couple(self.f, x1, x2, record.keep_mask)
        with record.g_state.replay():
            y2 = self._couple(self.g, x2, y1, record.keep_mask)
        return y1, y2

    @torch.no_grad()
    def inverse(self, y1: Tensor, y2: Tensor,
                record: Optional[BlockRecord] = None) -> Streams:
        """Recompute the inputs from the outputs, replaying the forward's ``record``
        (which a training-mode forward with randomness needs)."""
        mask = record.keep_mask if record else None
        with record.g_state.replay() if record else nullcontext(), buffers_kept(self.g):
            x2 = self._couple(self.g, y2, y1, mask, alpha=-1)
        with record.f_state.replay() if record else nullcontext(), buffers_kept(self.f):
            x1 = self._couple(self.f, y1, x2, mask, alpha=-1)
        return x1, x2

    def backward_pass(self, y1: Tensor, y2: Tensor, dy1: Tensor, dy2: Tensor,
                      record: BlockRecord) -> Tuple[Tensor, Tensor, Tensor, Tensor, Grads]:
        """From outputs and their gradients, return the inputs, their gradients and
        the gradients of :meth:`trainable_parameters`. For the additive coupling: G's
        rerun and vector-Jacobian product, the sum undone, then F's (half a block's
        activations at a time, no rerun of the sums)."""
        if self.coupling is not None or self.exact_bits is not None:
            return super().backward_pass(y1, y2, dy1, dy2, record)
        mask = record.keep_mask
        (g_y1, ), (dy1_through_g, ), g_grads = recompute_vjp(
            self.g, [y1], [_scale(dy2, mask)], record.g_state,
            trainable_parameters(self.g), self.g_chunks)
        x2 = _add(y2, g_y1, mask, y1, alpha=-1)
        dx1 = _add(dy1, dy1_through_g, None, dy2)
        del g_y1, dy1_through_g  # unless reused by the sums: free before F's rerun, the peak
        (f_x2, ), (dx2_through_f, ), f_grads = recompute_vjp(
            self.f, [x2], [_scale(dx1, mask)], record.f_state,
            trainable_parameters(self.f))
        x1 = _add(y1, f_x2, mask, x2, alpha=-1)
        dx2 = _add(dy2, dx2_through_f, None, dx1)
        return x1, x2, dx1, dx2, f_grads + g_grads
