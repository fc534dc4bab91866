"""mmrev: Reversible Vision Transformers for mmpretrain and mmdet."""
from . import engine, models  # noqa: F401  checkpoint loaders (weights_only kept), models
from .version import __version__

__all__ = ['__version__']
