"""mmrev: Reversible Vision Transformers for mmpretrain and mmdet."""
from . import models  # noqa: F401,E402  registers the models
from .version import __version__

__all__ = ['__version__']
