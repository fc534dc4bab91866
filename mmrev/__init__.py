"""mmrev: Reversible Vision Transformers for mmpretrain, mmdet and mmaction2.

The engine, :mod:`mmrev.reversible`, needs torch alone. With mmengine installed,
``import mmrev`` also plugs mmrev into the OpenMMLab toolboxes (the ``mmrev`` registry
scope, checkpoint loaders, model index), each part set up only once it is needed: see
:mod:`mmrev.openmmlab`.
"""
from importlib import metadata

from .version import __version__

MIN_TORCH = (2, 5)  # autocast state per device type, torch.serialization's safe globals
try:
    _TORCH = metadata.version('torch')
except metadata.PackageNotFoundError:  # torch from a source build: not checked
    _TORCH = None
if _TORCH and tuple(int(part) for part in _TORCH.split('.')[:2]) < MIN_TORCH:
    raise ImportError(f'mmrev needs torch >= {".".join(map(str, MIN_TORCH))}, found '
                      f'{_TORCH}: upgrade torch (pip install -U torch)')

try:
    import mmengine  # noqa: F401
except ModuleNotFoundError as error:  # torch alone: the engine works, nothing to plug in
    if error.name != 'mmengine':
        raise
else:
    from .openmmlab import plug_in
    plug_in()

__all__ = ['__version__']
