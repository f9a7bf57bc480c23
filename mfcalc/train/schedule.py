"""Learning-rate schedules of a member's fit: plateau decay, or a cosine that ends in the budget.

``plateau`` halves the rate when the validation loss stalls; on a large data set that can
take longer than the wall-clock budget, and the model is then exported at its starting rate
(the candidate default model of the campaign was, at 1e-3 after 38 epochs).  ``cosine``
decays from ``lr`` to ``min_lr`` over a planned number of epochs: ``epochs``, or with a
deadline as many as fit in the member's share of it, planned once from the first epoch's
duration and checkpointed so that a resumed run follows the same plan.  The rate is set per
epoch, and every parameter group keeps its ratio to ``lr`` (a separate ``trunk_lr``).
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

import torch

from mfcalc.config import TrainSettings

IMPROVEMENT = 1e-4  # relative fall of the validation loss that counts as progress
PLAN_MARGIN = 0.95  # share of the remaining time the cosine plan fills: later epochs run a little slower


def cosine_factor(epoch: int, planned: int, floor: float) -> float:
    """Multiplier of the base rate for 0-based ``epoch`` of ``planned``: 1 at the first epoch,
    ``floor`` at the last (and after it), half a cosine in between."""
    if planned <= 1:
        return 1.0
    t = min(epoch, planned - 1) / (planned - 1)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))


def plan_epochs(max_epochs: int, epoch_seconds: float, seconds_left: float) -> int:
    """Epochs that fit: the one already run plus those its duration fits into ``seconds_left``
    (with :data:`PLAN_MARGIN`), at least 1 and at most ``max_epochs``."""
    more = int(PLAN_MARGIN * max(seconds_left, 0.0) / max(epoch_seconds, 1e-9))
    return max(1, min(max_epochs, 1 + more))


class Schedule:
    """Sets the optimiser's rate before every epoch and says when the schedule has run out."""

    def __init__(self, settings: TrainSettings, opt: torch.optim.Optimizer):
        self.kind = settings.lr_schedule
        self.opt = opt
        self.max_epochs = settings.epochs
        self.floor = settings.min_lr / settings.lr
        self.base: List[float] = [float(g["lr"]) for g in opt.param_groups]
        self.planned: Optional[int] = None
        self.plateau = (
            torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, factor=settings.lr_factor, patience=settings.lr_patience, threshold=IMPROVEMENT
            )
            if self.kind == "plateau"
            else None
        )

    def start_epoch(self, epoch: int) -> None:
        """Set the rate for 0-based ``epoch`` (cosine; the plateau rule acts after epochs)."""
        if self.plateau is not None:
            return
        factor = cosine_factor(epoch, self.planned or self.max_epochs, self.floor)
        for group, base in zip(self.opt.param_groups, self.base):
            group["lr"] = base * factor

    def end_epoch(
        self, epochs_done: int, valid_loss: float, epoch_seconds: float, seconds_left: Optional[float]
    ) -> None:
        """After an epoch: the plateau rule sees the loss; the cosine plan is fixed after the first."""
        if self.plateau is not None:
            self.plateau.step(valid_loss)
        elif self.planned is None:
            self.planned = (
                self.max_epochs if seconds_left is None else plan_epochs(self.max_epochs, epoch_seconds, seconds_left)
            )

    def stop_reason(self, epoch: int) -> Optional[str]:
        """Why the schedule ends training after ``epoch`` epochs (``None``: go on)."""
        if self.planned is not None and self.planned < self.max_epochs and epoch >= self.planned:
            return f"the cosine schedule reached min_lr after the {self.planned} epochs that fit the time budget"
        return None

    def state_dict(self) -> Dict[str, Any]:
        if self.plateau is not None:
            return self.plateau.state_dict()
        return {"planned": self.planned}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if self.plateau is not None:
            self.plateau.load_state_dict(state)
        else:
            self.planned = state["planned"]
