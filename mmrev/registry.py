"""Registries of the ``mmrev`` scope.

Children of mmengine's root registries, so that ``type='mmrev.RevViT'`` resolves from
configs whose default scope is ``mmpretrain``, ``mmdet`` or ``mmaction``; each imports
the modules that register into it (its ``locations``) on its first lookup.
"""
from mmengine.registry import FUNCTIONS as MMENGINE_FUNCTIONS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import STRATEGIES as MMENGINE_STRATEGIES
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='mmrev',
                  locations=['mmrev.models'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='mmrev',
                 locations=['mmrev.engine.hooks'])
OPTIM_WRAPPERS = Registry('optim_wrapper', parent=MMENGINE_OPTIM_WRAPPERS, scope='mmrev',
                          locations=['mmrev.engine.amp'])
OPTIM_WRAPPER_CONSTRUCTORS = Registry('optimizer wrapper constructor',
                                      parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS,
                                      scope='mmrev', locations=['mmrev.engine.optimizers'])
FUNCTIONS = Registry('function', parent=MMENGINE_FUNCTIONS, scope='mmrev',
                     locations=['mmrev.engine.hooks.random_state_hook'])
STRATEGIES = Registry('strategy', parent=MMENGINE_STRATEGIES, scope='mmrev',
                      locations=['mmrev.engine.fully_shard'])
