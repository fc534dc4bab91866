"""The block contract: what a block of a :class:`~mmrev.reversible.ReversibleSequence`
provides, and a generic backward step that any such block can use."""
from abc import ABCMeta, abstractmethod
from typing import Any, List, Optional, Tuple

import torch
from torch import Tensor, nn

from .recomputation import Grads, trainable_parameters
from .replay import buffers_kept

Streams = Tuple[Tensor, Tensor]


class InvertibleBlock(nn.Module, metaclass=ABCMeta):
    """A module mapping two streams to two streams that can undo itself.

    A block provides:

    - ``forward(x1, x2, records=None)``: the outputs ``(y1, y2)``; if ``records`` is a
      list, it appends its *record*: whatever reproduces this forward exactly (RNG and
      autocast states, stochastic-depth masks; see :class:`ForwardState`).
    - ``inverse(y1, y2, record=None)``: the inputs, recomputed from the outputs without
      a graph, replaying ``record`` if given.
    - ``rerun(x1, x2, record)``: the forward again as ``record`` says, under autograd.
    - ``trainable_parameters()``: the parameters that get gradients, in the order of
      :meth:`backward_pass`'s.
    - ``backward_pass(y1, y2, dy1, dy2, record)``: from the outputs and their gradients,
      ``(x1, x2, dx1, dx2, param_grads)``. The default inverts the block, reruns it and
      takes the vector-Jacobian product: one block's activations at a time, for any
      block. Blocks override it with something cheaper when they can
      (:class:`ReversibleBlock` does, for the additive coupling).

    Reruns leave the block's buffers (running statistics) as the forward left them.
    """

    @abstractmethod
    def forward(self, x1: Tensor, x2: Tensor, records: Optional[List[Any]] = None
                ) -> Streams:
        """The outputs; if ``records`` is a list, append this forward's record."""

    @abstractmethod
    def inverse(self, y1: Tensor, y2: Tensor, record: Any = None) -> Streams:
        """The inputs recomputed from the outputs (no graph), replaying ``record``."""

    @abstractmethod
    def rerun(self, x1: Tensor, x2: Tensor, record: Any) -> Streams:
        """The recorded forward again, under autograd."""

    def trainable_parameters(self) -> List[nn.Parameter]:
        """The parameters that require grad."""
        return trainable_parameters(self)

    def backward_pass(self, y1: Tensor, y2: Tensor, dy1: Tensor, dy2: Tensor,
                      record: Any) -> Tuple[Tensor, Tensor, Tensor, Tensor, Grads]:
        """Inputs, their gradients and those of :meth:`trainable_parameters`."""
        x1, x2 = self.inverse(y1, y2, record)
        params = self.trainable_parameters()
        inputs = [x1.detach().requires_grad_(), x2.detach().requires_grad_()]
        with torch.enable_grad(), buffers_kept(self):
            outputs = self.rerun(*inputs, record)
            grads = torch.autograd.grad(outputs, [*inputs, *params], [dy1, dy2],
                                        allow_unused=True)
        dx1, dx2 = (torch.zeros_like(x) if grad is None else grad
                    for x, grad in zip(inputs, grads))
        return x1, x2, dx1, dx2, list(grads[2:])
