"""Model-agnostic reversible backprop: the block contract, coupling blocks (additive,
MomentumNet, affine or any forward/inverse pair), a stack runner, and
recompute-in-backward for the non-invertible parts of a model. Needs torch alone."""
from .backprop import ReversibleSequence
from .block import InvertibleBlock
from .coupling import BlockRecord, Coupling, ReversibleBlock, affine, momentum
from .diagnostics import set_reversible
from .module_hooks import has_hooks
from .recomputation import call, defers_to_backward, recompute, recompute_vjp, trainable_parameters
from .replay import ForwardState, buffers_kept

__all__ = ['BlockRecord', 'Coupling', 'ForwardState', 'InvertibleBlock', 'ReversibleBlock',
           'ReversibleSequence', 'affine', 'buffers_kept', 'call', 'defers_to_backward',
           'has_hooks', 'momentum', 'recompute', 'recompute_vjp', 'set_reversible',
           'trainable_parameters']
