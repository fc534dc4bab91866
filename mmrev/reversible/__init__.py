"""Model-agnostic reversible backprop: additive coupling blocks and a stack runner."""
from .backprop import ReversibleSequence
from .coupling import BlockRecord, ReversibleBlock
from .replay import ForwardState

__all__ = ['BlockRecord', 'ReversibleBlock', 'ReversibleSequence', 'ForwardState']
