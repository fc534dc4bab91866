from .reversible_backprop_hook import ReversibleBackpropHook

__all__ = ['ReversibleBackpropHook']
