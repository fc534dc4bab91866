"""FSDP2 for mmengine's FlexibleRunner, with reversible backprop kept.

mmengine's ``FSDPStrategy`` wraps the model in FSDP1 (``FullyShardedDataParallel``), whose
flat parameters reversible backprop cannot differentiate in its reruns (it refuses them).
:class:`FullyShardStrategy` shards with FSDP2's ``fully_shard`` instead: each reversible
block, then the whole model; checkpoints hold the full, unsharded state, as one process
would save it.
"""
import re
from typing import Sequence, Tuple

from mmengine._strategy import DDPStrategy
from mmengine.device import get_device
from mmengine.model import is_model_wrapper
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import fully_shard

from mmrev.registry import STRATEGIES
from mmrev.reversible import InvertibleBlock

# gathered to rank 0 (on the CPU) to save; loaded from the full state on every rank
SAVE_OPTIONS = StateDictOptions(full_state_dict=True, cpu_offload=True)
OPTIMIZER_KEYS = ('state', 'param_groups')


@STRATEGIES.register_module()
class FullyShardStrategy(DDPStrategy):
    """Data-parallel training with parameters, gradients and optimizer state sharded
    across processes by FSDP2 (``torch.distributed.fsdp.fully_shard``), for
    :class:`mmengine.runner.FlexibleRunner`: ``strategy=dict(type='mmrev.FullyShardStrategy')``.

    Each :class:`~mmrev.reversible.InvertibleBlock` (a RevViT or RevMViT block) is sharded
    on its own, and then the model (the rest): a block's parameters are gathered for its
    forward and again for its reversible backward, so activation memory stays constant in
    depth and parameter memory is divided by the number of processes. Checkpoints hold
    the full state dicts of the model and the optimizer, gathered on rank 0, which saves
    them; loading and resuming read them on every rank. For mixed precision use the
    optim wrapper's autocast (``AmpOptimWrapper``, ``mmrev.BF16OptimWrapper``): FSDP2's
    own ``param_dtype`` would cast the blocks' inputs, the reversible streams, to half
    precision, where their inverse is no longer exact.

    Args:
        reshard_after_forward (bool): free each block's gathered parameters after its
            forward (gathering them again for backward) rather than keeping them.
            Defaults to True.
        **kwargs: the arguments of mmengine's ``DDPStrategy`` (``sync_bn``,
            ``auto_scale_lr``, ``env_kwargs`` ...), but ``model_wrapper``.
    """

    def __init__(self, *, reshard_after_forward: bool = True, **kwargs):
        if 'model_wrapper' in kwargs:
            raise ValueError('FullyShardStrategy shards the model with fully_shard and '
                             'takes no model_wrapper: remove it, or use DDPStrategy')
        super().__init__(**kwargs)
        self.reshard_after_forward = reshard_after_forward
        self._gathered: dict = {}  # the state dicts being saved

    def _wrap_model(self, model: nn.Module) -> nn.Module:
        if is_model_wrapper(model):
            raise TypeError(f'FullyShardStrategy shards a bare model, got it inside '
                            f'{type(model).__name__}')
        model = self.convert_model(model.to(get_device()))
        for module in model.modules():
            if isinstance(module, InvertibleBlock):
                fully_shard(module, reshard_after_forward=self.reshard_after_forward)
        return fully_shard(model, reshard_after_forward=self.reshard_after_forward)

    def model_state_dict(self) -> dict:
        """The full model state dict on rank 0 (empty on the others): a collective, so
        :meth:`save_checkpoint` gathers it on every rank before rank 0 saves."""
        if 'model' in self._gathered:
            return self._gathered['model']
        return get_model_state_dict(self.model, options=SAVE_OPTIONS)

    def optim_state_dict(self) -> dict:
        """The optim wrapper's state dict with the full optimizer state, by parameter
        name, on rank 0 (a collective, like :meth:`model_state_dict`)."""
        if 'optimizer' in self._gathered:
            return self._gathered['optimizer']
        return {**self.optim_wrapper.state_dict(),  # e.g. a loss scaler's state
                **get_optimizer_state_dict(self.model, self.optim_wrapper.optimizer,
                                           options=SAVE_OPTIONS)}

    def save_checkpoint(self, filename: str, **kwargs) -> None:
        """Save a checkpoint as ``DDPStrategy`` does, on rank 0, once every rank has
        taken part in gathering the state dicts (the same arguments)."""
        gathered = dict(model=self.model_state_dict())
        if kwargs.get('save_optimizer', True) and hasattr(self, 'optim_wrapper'):
            gathered['optimizer'] = self.optim_state_dict()
        self._gathered = gathered
        try:
            super().save_checkpoint(filename, **kwargs)  # on rank 0 only
        finally:
            self._gathered = {}

    def load_model_state_dict(self, state_dict: dict, *, strict: bool = False,
                              revise_keys: Sequence[Tuple[str, str]] = ((r'^module\.', ''), )
                              ) -> None:
        """Load a full (unsharded) model state dict into the shards of every rank,
        after renaming its keys by ``revise_keys`` (pattern, replacement)."""
        for pattern, replacement in revise_keys:
            state_dict = {re.sub(pattern, replacement, key): value
                          for key, value in state_dict.items()}
        set_model_state_dict(self.model, state_dict, options=StateDictOptions(
            full_state_dict=True, strict=strict))

    def load_optim_state_dict(self, state_dict: dict) -> None:
        """Load a state dict of :meth:`optim_state_dict`: the optimizer's full state
        into its shards, then the optim wrapper's own state."""
        optimizer = self.optim_wrapper.optimizer
        set_optimizer_state_dict(
            self.model, optimizer, {key: state_dict[key] for key in OPTIMIZER_KEYS},
            options=StateDictOptions(full_state_dict=True))
        self.optim_wrapper.load_state_dict({
            **{key: value for key, value in state_dict.items() if key not in OPTIMIZER_KEYS},
            **optimizer.state_dict()})
