"""Whether PyTorch module hooks act on a module: reversible backprop treats such
modules as ordinary autograd would see them.

A hook on a block (or on a module inside it) may change what the block computes, expect
its backward to run through autograd (``register_full_backward_hook``), or keep the
tensors a module returns. Reversible backprop inverts the bare block, runs no autograd
graph through it and writes sums into fresh branch outputs, so a block with hooks runs
under ordinary autograd instead (see :class:`~mmrev.reversible.ReversibleSequence`) and
no output a hook can see is written in place. The one exception is FSDP2's
``fully_shard`` on a block itself, whose hooks reversible backprop runs as they expect.
FSDP1 (``FullyShardedDataParallel``) replaces a module's parameters with views of its
flat parameters, which reversible backprop cannot differentiate in its reruns: it is
detected (:func:`fsdp1_flattened`) and refused.
"""
from typing import Any, Optional

import torch
from torch import nn
from torch.nn.modules import module as _module

_GLOBAL_HOOKS = ('_global_forward_hooks', '_global_forward_pre_hooks',
                 '_global_backward_hooks', '_global_backward_pre_hooks')
_HOOKS = ('_forward_hooks', '_forward_pre_hooks', '_backward_hooks', '_backward_pre_hooks')


def fsdp2_state(module: nn.Module) -> Optional[Any]:
    """The state of FSDP2's ``fully_shard`` on ``module`` itself (None if not sharded)."""
    if not torch.distributed.is_available():
        return None
    from torch.distributed.fsdp import FSDPModule, fully_shard
    return fully_shard.state(module) if isinstance(module, FSDPModule) else None


def fsdp1_flattened(module: nn.Module) -> bool:
    """Whether FSDP1 (``FullyShardedDataParallel``) wraps a module inside ``module`` or
    has flattened its parameters (``use_orig_params=True``: the parameters are marked;
    ``False``: they are replaced by views of the flat parameter while it runs)."""
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return False  # FSDP1 needs a process group: no walk over the modules without one
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.fsdp._common_utils import _is_fsdp_flattened

    def flattened(tensor: Any) -> bool:
        return isinstance(tensor, torch.Tensor) and (
            _is_fsdp_flattened(tensor)
            or tensor._base is not None and _is_fsdp_flattened(tensor._base))

    return any(isinstance(m, FullyShardedDataParallel)
               or any(map(flattened, m._parameters.values()))
               or any(map(flattened, vars(m).values())) for m in module.modules())


def has_hooks(module: nn.Module, but_fsdp2: bool = False) -> bool:
    """Whether a forward, forward-pre or backward hook is registered on ``module``, on a
    module inside it, or for all modules (``torch.nn.modules.module.register_module_*``);
    with ``but_fsdp2``, leaving out those of FSDP2's ``fully_shard`` on ``module``."""
    if any(getattr(_module, name) for name in _GLOBAL_HOOKS):
        return True
    own = fsdp2_state(module) if but_fsdp2 else None
    for m in module.modules():
        for name in _HOOKS:
            hooks = getattr(m, name).values()
            if any(m is not module or own is None or getattr(hook, '__self__', None)
                   is not own for hook in hooks):
                return True
    return False
