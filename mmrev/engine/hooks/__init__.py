from .atomic_checkpoint_hook import AtomicCheckpointHook
from .reversible_backprop_hook import ReversibleBackpropHook

__all__ = ['AtomicCheckpointHook', 'ReversibleBackpropHook']
