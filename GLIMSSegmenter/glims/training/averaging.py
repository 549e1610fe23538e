"""An exponential moving average (EMA) of a network's weights, for validating and keeping smoothed weights.

After every optimiser step ``average = d * average + (1 - d) * weights``, with the decay ``d`` ramped up as
``min(decay, (1 + n) / (10 + n))`` over the first ``n`` updates so that the average is not dominated by the
starting weights for long. Buffers (none in GLIMS today) are copied, not averaged. The averaged copy is a full
module in evaluation mode, so the trainer validates and saves it exactly as it would the raw network.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Generic, TypeVar

import torch

__all__ = ["WeightAverage"]

NetworkT = TypeVar("NetworkT", bound=torch.nn.Module)


class WeightAverage(Generic[NetworkT]):
    """The running average of ``net``'s parameters (see module docstring); ``model`` is of ``net``'s class."""

    def __init__(self, net: NetworkT, decay: float, updates: int = 0) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"decay must be in (0, 1), not {decay}")
        self.decay = decay
        self.updates = updates
        self.model = copy.deepcopy(net).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

    def current_decay(self) -> float:
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, net: torch.nn.Module) -> None:
        """Fold ``net``'s current weights into the average (call after each optimiser step)."""
        decay = self.current_decay()
        averaged = dict(self.model.named_parameters())
        for name, parameter in net.named_parameters():
            averaged[name].lerp_(parameter.detach(), 1.0 - decay)
        own_buffers = dict(self.model.named_buffers())
        for name, buffer in net.named_buffers():
            own_buffers[name].copy_(buffer)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: tensor.detach().clone() for name, tensor in self.model.state_dict().items()}

    def load_state_dict(self, weights: Mapping[str, torch.Tensor]) -> None:
        self.model.load_state_dict(weights)
