"""An exponential moving average (EMA) of a model's weights, for evaluation.

After every optimizer step, for every floating-point entry of the model's state dict
(parameters and buffers such as BatchNorm running statistics)::

    ema = decay * ema + (1 - decay) * weight

and integer buffers (BatchNorm's ``num_batches_tracked``) are copied. This is timm's
``ModelEmaV2``/``ModelEmaV3`` update over the whole state dict with a constant decay, and the
update of ModelTC/United-Perception ``up/utils/model/ema_helper.py`` (``EMA.step`` without a
step count). The seg-benchmark recipes use that file's ``exp`` variant (``ExpEMA``, selected by
``ema_type: exp`` in their configs): its runner (``up/runner/base_runner.py``, ``train``) calls
``ema.step(model, curr_step=iter_idx)`` after every optimizer step with the 0-based iteration
index, and the decay ramps up as ``decay * (1 - exp(-iter_idx / 2000))``, so the first update
copies the weights. ``ramp_iters`` (recipe field ``train.ema_ramp_iters``) turns that ramp on.
Integer buffers stay untouched there (``v.dtype.is_floating_point``); copying them here changes
no weight used in evaluation.

With gradient accumulation (``train.grad_accum_steps``) the update follows each optimizer
step, not each micro-batch, so the ramp and :attr:`ModelEMA.updates` count optimizer steps.

The averaged copy lives on the model's device, never requires gradients, stays in eval mode,
and is saved into and restored from training checkpoints (:meth:`ModelEMA.state_dict`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn


class ModelEMA:
    """The EMA of ``model``'s state dict.

    Args:
        model: the (unwrapped) model; copied with ``copy.deepcopy`` at construction.
        decay: in (0, 1).
        ramp_iters: None (constant ``decay``), or United-Perception ``ExpEMA``'s ramp: the
            update after optimizer step ``t`` (1-based, the reference's 0-based iteration
            index ``t - 1``) uses ``decay * (1 - exp(-(t - 1) / ramp_iters))``.

    Attributes:
        module: the averaged model (eval mode, no gradients); evaluate or save it.
        updates: number of :meth:`update` calls so far.

    Raises:
        ValueError: ``decay`` outside (0, 1) or ``ramp_iters`` <= 0.
    """

    def __init__(self, model: nn.Module, decay: float, ramp_iters: float | None = None) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        if ramp_iters is not None and ramp_iters <= 0:
            raise ValueError(f"EMA ramp_iters must be positive, got {ramp_iters}")
        self.decay = float(decay)
        self.ramp_iters = ramp_iters
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for param in self.module.parameters():
            param.requires_grad_(False)

    def current_decay(self, step: int) -> float:
        """The decay used by the update after optimizer step ``step`` (1-based): ``decay``,
        or with ``ramp_iters`` ``decay * (1 - exp(-(step - 1) / ramp_iters))`` (0 at step 1)."""
        if self.ramp_iters is None:
            return self.decay
        return self.decay * (1.0 - math.exp(-(step - 1) / self.ramp_iters))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current state (call after each optimizer step).

        Raises:
            KeyError: ``model``'s state dict lacks a key of the average (another architecture).
        """
        self.updates += 1
        decay = self.current_decay(self.updates)
        source = model.state_dict()
        averaged, current = [], []
        for key, ema_value in self.module.state_dict().items():
            value = source[key].detach()
            if ema_value.dtype.is_floating_point:
                averaged.append(ema_value)
                current.append(value.to(ema_value.dtype))
            else:
                ema_value.copy_(value)
        if averaged:
            torch._foreach_mul_(averaged, decay)
            torch._foreach_add_(averaged, current, alpha=1.0 - decay)

    def state_dict(self) -> dict[str, Any]:
        """``{"decay", "ramp_iters", "updates", "model"}``; loadable with ``weights_only=True``."""
        return {
            "decay": self.decay,
            "ramp_iters": self.ramp_iters,
            "updates": self.updates,
            "model": {k: v.detach().clone() for k, v in self.module.state_dict().items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output (strict on the model keys); the decay given at
        construction is kept (a changed recipe wins), the update count is restored."""
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["model"], strict=True)

    def weights(self) -> dict[str, Tensor]:
        """The averaged state dict, detached, on the CPU (what ``final.pt`` holds)."""
        return {k: v.detach().cpu() for k, v in self.module.state_dict().items()}
