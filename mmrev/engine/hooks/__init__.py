from .atomic_checkpoint_hook import AtomicCheckpointHook
from .random_state_hook import RandomStateHook
from .reversible_backprop_hook import ReversibleBackpropHook

__all__ = ['AtomicCheckpointHook', 'RandomStateHook', 'ReversibleBackpropHook']
