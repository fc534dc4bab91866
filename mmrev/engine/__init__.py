"""Runtime parts of mmrev; importing it makes mmengine load training checkpoints
with ``weights_only=True`` (see :mod:`mmrev.engine.checkpoint`)."""
from .amp import BF16OptimWrapper, amp_optim_wrapper
from .checkpoint import load_checkpoint_file
from .distributed import setup_cpu_distributed
from .hooks import ReversibleBackpropHook
from .optimizers import LayerDecayOptimWrapperConstructor

__all__ = ['BF16OptimWrapper', 'amp_optim_wrapper', 'load_checkpoint_file',
           'LayerDecayOptimWrapperConstructor', 'ReversibleBackpropHook',
           'setup_cpu_distributed']
