"""What ``import mmrev`` does for the OpenMMLab toolboxes, each part only when it is needed.

* The ``mmrev`` registry scope (:mod:`mmrev.registry`): ``type='mmrev.RevViT'``,
  ``'mmrev.ReversibleBackpropHook'``, ... resolve from any scope; mmengine imports
  :mod:`mmrev.models` or :mod:`mmrev.engine` when a config first builds one of them.
* mmrev's checkpoint loaders (:mod:`mmrev.engine.checkpoint`), registered with mmengine
  when ``mmengine.runner`` is imported.
* mmrev's models in mmpretrain's ``ModelHub`` (:func:`mmrev.model_index.register_models`),
  when ``mmpretrain.apis`` is imported (``get_model``, ``inference_model``).
* The workaround for mmaction2 1.2.0's packages, which lack
  ``mmaction.models.localizers.drn`` (:func:`patch_mmaction_drn`).

So ``import mmrev`` costs little more than importing torch and mmengine, and a command
pays for mmpretrain, mmdet or mmengine's runner only if it uses them.
"""
import importlib
import importlib.abc
import importlib.util
import sys
from typing import Callable


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs ``callback(module)`` right after the module ``name`` is first imported."""

    def __init__(self, name: str, callback: Callable):
        self.name, self.callback = name, callback

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # the real finders find the module
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        exec_module, callback = spec.loader.exec_module, self.callback

        def exec_then_call(module):
            exec_module(module)
            callback(module)

        spec.loader.exec_module = exec_then_call
        return spec


def when_imported(name: str, callback: Callable) -> None:
    """Call ``callback(module)`` once the module ``name`` is imported (now if it is)."""
    if name in sys.modules:
        callback(sys.modules[name])
    else:
        sys.meta_path.insert(0, _AfterImport(name, callback))


def _register_checkpoint_loaders(_) -> None:
    importlib.import_module('mmrev.engine.checkpoint')


def _register_model_index(_) -> None:
    from .model_index import register_models
    register_models()


def plug_in() -> None:
    """Set up the parts above (idempotent: importing mmrev again does nothing)."""
    importlib.import_module('mmrev.registry')
    when_imported('mmengine.runner', _register_checkpoint_loaders)
    when_imported('mmpretrain.apis', _register_model_index)
    patch_mmaction_drn()


def patch_mmaction_drn() -> None:
    """Let ``import mmaction.models`` work with mmaction2 1.2.0 as published.

    Its wheel and sdist lack the package ``mmaction/models/localizers/drn`` (the folder
    has no ``__init__.py`` in the release, open-mmlab/mmaction2#2714), which
    ``mmaction.models.localizers`` imports, so every mmaction2 model build fails. This
    puts an import-only stand-in for it in ``sys.modules``, whose ``DRN`` raises if
    anyone builds one. Nothing on disk is changed; a source checkout that has the real
    files, or no mmaction2 at all, is left alone.
    """
    name = 'mmaction.models.localizers.drn'
    if name in sys.modules:
        return
    try:
        spec = importlib.util.find_spec('mmaction')
    except (ImportError, ValueError):
        return
    if spec is None or not spec.submodule_search_locations:
        return
    from pathlib import Path
    root = Path(next(iter(spec.submodule_search_locations)))
    if (root / 'models' / 'localizers' / 'drn' / 'drn.py').is_file():
        return

    class DRN:
        """Stand-in for mmaction2's DRN localizer, absent from its 1.2.0 package."""

        def __init__(self, *args, **kwargs):
            raise ImportError('DRN is missing from the mmaction2 1.2.0 package (its '
                              'localizers/drn folder is not packaged): install mmaction2 '
                              'from source to use it')

    package = type(sys)(name)
    package.__path__ = []
    module = type(sys)(name + '.drn')
    module.DRN = DRN
    package.drn = module
    sys.modules[name], sys.modules[name + '.drn'] = package, module
