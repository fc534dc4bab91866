"""Model-agnostic reversible backprop: additive coupling blocks, a stack runner, and
recompute-in-backward for the non-invertible parts of a model."""
from .backprop import ReversibleSequence
from .coupling import BlockRecord, ReversibleBlock
from .module_hooks import has_hooks
from .recomputation import call, defers_to_backward, recompute, recompute_vjp, trainable_parameters
from .replay import ForwardState, buffers_kept

__all__ = ['BlockRecord', 'ForwardState', 'ReversibleBlock', 'ReversibleSequence',
           'buffers_kept', 'call', 'defers_to_backward', 'has_hooks', 'recompute',
           'recompute_vjp', 'trainable_parameters']
