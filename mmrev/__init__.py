"""mmrev: Reversible Vision Transformers for mmpretrain and mmdet."""
from . import engine, models  # noqa: F401  checkpoint loaders (weights_only kept), models
from .model_index import register_models
from .version import __version__

register_models()  # mmrev's model-index.yml in mmpretrain's ModelHub (get_model, ...)

__all__ = ['__version__']
