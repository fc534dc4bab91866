"""Mixed-precision training: bfloat16 autocast on any device, and what ``--amp`` picks.

mmengine's ``AmpOptimWrapper`` (float16 with loss scaling) needs a GPU. On CPU, mixed
precision means bfloat16, which has float32's exponent range and needs no loss scaling:
:class:`BF16OptimWrapper`. As in mmengine, the forward runs under autocast and the
backward outside it; reversible stacks recompute under the forward's autocast state.
"""
from contextlib import contextmanager
from typing import Iterator, Optional

import torch
from mmengine.device import get_device
from mmengine.optim import OptimWrapper
from torch import nn

from mmrev.registry import OPTIM_WRAPPERS

AMP_WRAPPERS = ('AmpOptimWrapper', 'BF16OptimWrapper', 'mmrev.BF16OptimWrapper')
LOSS_SCALING_DEVICES = ('cuda', 'npu', 'mlu', 'musa')


@OPTIM_WRAPPERS.register_module()
class BF16OptimWrapper(OptimWrapper):
    """``OptimWrapper`` that runs the forward under bfloat16 autocast on the model's
    device (CPU or GPU), without loss scaling. Takes ``OptimWrapper``'s arguments
    (``optimizer``, ``accumulative_counts``, ``clip_grad``)."""

    @contextmanager
    def optim_context(self, model: nn.Module) -> Iterator[None]:
        device_type = next(model.parameters()).device.type
        with super().optim_context(model), torch.autocast(device_type,
                                                          dtype=torch.bfloat16):
            yield


def amp_optim_wrapper(optim_wrapper: dict, device: Optional[str] = None) -> dict:
    """The ``optim_wrapper`` config for ``--amp``.

    On a GPU (or NPU, MLU, MUSA): mmengine's ``AmpOptimWrapper``, float16 with dynamic
    loss scaling unless ``loss_scale`` is set. Elsewhere (CPU): :class:`BF16OptimWrapper`.
    A config that already sets a mixed-precision wrapper is returned unchanged.

    Args:
        optim_wrapper (dict): the config's ``optim_wrapper``.
        device (str, optional): the training device type; defaults to mmengine's
            ``get_device()``.
    """
    wrapper_type = optim_wrapper.get('type', 'OptimWrapper')
    if wrapper_type in AMP_WRAPPERS:
        return optim_wrapper
    if wrapper_type != 'OptimWrapper':
        raise ValueError(f'--amp replaces an OptimWrapper, but the config has '
                         f'{wrapper_type!r}: set optim_wrapper.type to a mixed-precision '
                         f'wrapper ({", ".join(AMP_WRAPPERS)}) yourself')
    if (device or get_device()) in LOSS_SCALING_DEVICES:
        return dict(optim_wrapper, type='AmpOptimWrapper',
                    loss_scale=optim_wrapper.get('loss_scale', 'dynamic'))
    return dict(optim_wrapper, type='mmrev.BF16OptimWrapper')
