"""Runtime parts of mmrev: checkpoint loading (:mod:`~mmrev.engine.checkpoint`), mixed
precision (:mod:`~mmrev.engine.amp`), CPU distributed set-up, FSDP2 sharding for
mmengine's FlexibleRunner, the reversible-backprop and crash-safe checkpoint hooks and
the layer-decay optimizer constructor. Each
submodule is imported when first used (``from mmrev.engine import X`` or a config naming
``mmrev.X``), so that loading checkpoints does not import mmpretrain."""
import importlib

_EXPORTS = {
    'BF16OptimWrapper': 'amp',
    'amp_optim_wrapper': 'amp',
    'load_checkpoint_file': 'checkpoint',
    'setup_cpu_distributed': 'distributed',
    'FullyShardStrategy': 'fully_shard',
    'AtomicCheckpointHook': 'hooks',
    'RandomStateHook': 'hooks',
    'ReversibleBackpropHook': 'hooks',
    'LayerDecayOptimWrapperConstructor': 'optimizers',
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    return getattr(importlib.import_module(f'.{_EXPORTS[name]}', __name__), name)
