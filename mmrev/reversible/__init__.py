"""Model-agnostic reversible backprop: additive coupling blocks, a stack runner, and
recompute-in-backward for the non-invertible parts of a model."""
from .backprop import ReversibleSequence
from .coupling import BlockRecord, ReversibleBlock
from .recomputation import call, recompute, recompute_vjp, trainable_parameters
from .replay import ForwardState

__all__ = ['BlockRecord', 'ForwardState', 'ReversibleBlock', 'ReversibleSequence',
           'call', 'recompute', 'recompute_vjp', 'trainable_parameters']
