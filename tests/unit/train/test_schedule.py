"""Learning-rate schedules: the cosine ends at min_lr within its plan, and the plan is state."""

import numpy as np
import pytest
import torch

from mfcalc.config import TrainSettings
from mfcalc.train.schedule import Schedule, cosine_factor, plan_epochs


def test_cosine_starts_at_one_falls_monotonically_and_ends_at_the_floor():
    f = [cosine_factor(e, 10, 0.01) for e in range(14)]
    assert f[0] == 1.0 and f[9] == pytest.approx(0.01) and f[13] == pytest.approx(0.01)
    assert np.all(np.diff(f[:10]) < 0)
    assert f[5] == pytest.approx(0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * 5 / 9)))
    assert cosine_factor(0, 1, 0.01) == 1.0


def test_the_plan_fills_the_time_left_at_the_first_epochs_pace():
    assert plan_epochs(100, epoch_seconds=10.0, seconds_left=100.0) == 10  # 1 run + int(0.95 * 10)
    assert plan_epochs(5, epoch_seconds=10.0, seconds_left=1000.0) == 5
    assert plan_epochs(100, epoch_seconds=10.0, seconds_left=-3.0) == 1


def optimiser_with_two_rates():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    return torch.optim.Adam([{"params": [a], "lr": 1e-3}, {"params": [b], "lr": 1e-4}])


def test_cosine_keeps_each_groups_ratio_and_its_plan_survives_a_checkpoint():
    settings = TrainSettings(epochs=50, lr=1e-3, min_lr=1e-5, lr_schedule="cosine")
    opt = optimiser_with_two_rates()
    sched = Schedule(settings, opt)
    sched.start_epoch(0)
    sched.end_epoch(1, 1.0, epoch_seconds=10.0, seconds_left=60.0)
    assert sched.planned == 6 and sched.stop_reason(5) is None and "time budget" in sched.stop_reason(6)
    sched.start_epoch(5)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5) and opt.param_groups[1]["lr"] == pytest.approx(1e-6)
    again = Schedule(settings, optimiser_with_two_rates())
    again.load_state_dict(sched.state_dict())
    assert again.planned == 6
    again.end_epoch(2, 1.0, epoch_seconds=1.0, seconds_left=1e6)  # the plan is made once, not redone on resume
    assert again.planned == 6


def test_without_a_deadline_the_cosine_spans_the_epochs_and_the_plateau_rule_is_unchanged():
    sched = Schedule(TrainSettings(epochs=8, lr_schedule="cosine"), optimiser_with_two_rates())
    sched.end_epoch(1, 1.0, epoch_seconds=10.0, seconds_left=None)
    assert sched.planned == 8 and sched.stop_reason(8) is None  # the epochs limit itself stops the run
    opt = optimiser_with_two_rates()
    plateau = Schedule(TrainSettings(lr_patience=1, lr_factor=0.5), opt)
    for _ in range(3):
        plateau.start_epoch(0)
        plateau.end_epoch(1, 1.0, 1.0, None)
    assert opt.param_groups[0]["lr"] == pytest.approx(5e-4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"lr_schedule": "step"}, "lr_schedule must be one of plateau, cosine"),
        ({"lr_schedule": "cosine", "min_lr": 1e-2}, "min_lr"),
    ],
)
def test_bad_schedule_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainSettings(**kwargs).validate()
