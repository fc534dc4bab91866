"""Runtime parts of mmrev; importing it makes mmengine load training checkpoints
with ``weights_only=True`` (see :mod:`mmrev.engine.checkpoint`)."""
from .checkpoint import load_checkpoint_file
from .hooks import ReversibleBackpropHook

__all__ = ['load_checkpoint_file', 'ReversibleBackpropHook']
