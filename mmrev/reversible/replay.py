"""Capture and replay of the state a sub-function ran under: RNG and autocast.

Reversible backprop reruns each sub-function in backward. To give the same numbers as in
the forward, the rerun must draw the same random numbers (dropout, drop path) and run under
the same autocast settings, even when backward is called outside the autocast context.
The caller's RNG stream is never reseeded: the state is captured, and replayed in a fork.
Reruns also leave the modules' buffers (running statistics) as the forward left them.
"""
from contextlib import ExitStack, contextmanager
from typing import Iterator

import torch
from torch import nn


def _rng_module(device: torch.device):
    """The torch module with the RNG of an accelerator ``device`` (``torch.cuda``, ...)."""
    try:
        module = torch.get_device_module(device)
    except RuntimeError:  # no torch.<device type> module
        module = None
    if not all(hasattr(module, name) for name in ('get_rng_state', 'set_rng_state')):
        raise RuntimeError(
            f'Reversible backprop replays the random numbers of the forward in backward, '
            f'and torch.{device.type} has no get_rng_state/set_rng_state to do that: run '
            f'the model with reversible=False on {device.type}')
    return module


class ForwardState:
    """The RNG and autocast state in force when ``x`` was passed to a sub-function:
    the CPU generator and, for an accelerator tensor, that device's; autocast on the
    CPU and on ``x``'s device type."""

    __slots__ = ('device', 'cpu_rng', 'device_rng', 'autocast')

    def __init__(self, x: torch.Tensor):
        self.device = x.device
        self.cpu_rng = torch.get_rng_state()
        self.device_rng = (None if x.device.type == 'cpu'
                           else _rng_module(x.device).get_rng_state(x.device))
        self.autocast = [(device_type, torch.is_autocast_enabled(device_type),
                          torch.get_autocast_dtype(device_type))
                         for device_type in dict.fromkeys(('cpu', x.device.type))]

    @property
    def autocast_enabled(self) -> bool:
        """Whether the sub-function ran under autocast on any device."""
        return any(enabled for _, enabled, _ in self.autocast)

    @contextmanager
    def replay(self) -> Iterator[None]:
        """Run the body under the captured state; restore the caller's RNG afterwards."""
        devices = [self.device] if self.device_rng is not None else []
        with torch.random.fork_rng(devices=devices, device_type=self.device.type
                                   if devices else 'cuda'), ExitStack() as stack:
            torch.set_rng_state(self.cpu_rng)
            if self.device_rng is not None:
                _rng_module(self.device).set_rng_state(self.device_rng, self.device)
            for device_type, enabled, dtype in self.autocast:
                stack.enter_context(
                    torch.autocast(device_type, dtype=dtype, enabled=enabled))
            yield


@contextmanager
def buffers_kept(module: nn.Module) -> Iterator[None]:
    """Run the body, then put ``module``'s buffers back as they were: a rerun in
    training mode must not update running statistics (BatchNorm) a second time."""
    saved = {name: buffer.clone() for name, buffer in module.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for name, buffer in module.named_buffers():
                if name in saved:
                    buffer.copy_(saved[name])
