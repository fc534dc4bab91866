"""Capture and replay of the state a sub-function ran under: RNG and autocast.

Reversible backprop reruns each sub-function in backward. To give the same numbers as in
the forward, the rerun must draw the same random numbers (dropout, drop path) and run under
the same autocast settings, even when backward is called outside the autocast context.
The caller's RNG stream is never reseeded: the state is captured, and replayed in a fork.
"""
from contextlib import ExitStack, contextmanager
from typing import Iterator

import torch


def _autocast_device_types() -> tuple:
    return ('cpu', 'cuda') if torch.cuda.is_available() else ('cpu', )


class ForwardState:
    """The RNG and autocast state in force when ``x`` was passed to a sub-function."""

    __slots__ = ('device', 'cpu_rng', 'cuda_rng', 'autocast')

    def __init__(self, x: torch.Tensor):
        self.device = x.device
        self.cpu_rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state(x.device) if x.is_cuda else None
        self.autocast = [(device_type, torch.is_autocast_enabled(device_type),
                          torch.get_autocast_dtype(device_type))
                         for device_type in _autocast_device_types()]

    @property
    def autocast_enabled(self) -> bool:
        """Whether the sub-function ran under autocast on any device."""
        return any(enabled for _, enabled, _ in self.autocast)

    @contextmanager
    def replay(self) -> Iterator[None]:
        """Run the body under the captured state; restore the caller's RNG afterwards."""
        cuda_devices = [self.device] if self.cuda_rng is not None else []
        with torch.random.fork_rng(devices=cuda_devices), ExitStack() as stack:
            torch.set_rng_state(self.cpu_rng)
            if self.cuda_rng is not None:
                torch.cuda.set_rng_state(self.cuda_rng, self.device)
            for device_type, enabled, dtype in self.autocast:
                stack.enter_context(
                    torch.autocast(device_type, dtype=dtype, enabled=enabled))
            yield
