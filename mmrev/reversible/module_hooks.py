"""Whether PyTorch module hooks act on a module: reversible backprop treats such
modules as ordinary autograd would see them.

A hook on a block (or on a module inside it) may change what the block computes, expect
its backward to run through autograd (``register_full_backward_hook``), or keep the
tensors a module returns. Reversible backprop inverts the bare block, runs no autograd
graph through it and writes sums into fresh branch outputs, so a block with hooks runs
under ordinary autograd instead (see :class:`~mmrev.reversible.ReversibleSequence`) and
no output a hook can see is written in place.
"""
from torch import nn
from torch.nn.modules import module as _module

_GLOBAL_HOOKS = ('_global_forward_hooks', '_global_forward_pre_hooks',
                 '_global_backward_hooks', '_global_backward_pre_hooks')
_HOOKS = ('_forward_hooks', '_forward_pre_hooks', '_backward_hooks', '_backward_pre_hooks')


def has_hooks(module: nn.Module) -> bool:
    """Whether a forward, forward-pre or backward hook is registered on ``module``, on a
    module inside it, or for all modules (``torch.nn.modules.module.register_module_*``)."""
    if any(getattr(_module, name) for name in _GLOBAL_HOOKS):
        return True
    return any(getattr(m, name) for m in module.modules() for name in _HOOKS)
