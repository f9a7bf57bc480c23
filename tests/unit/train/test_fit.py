"""Early stopping: never before min_epochs, and the best epoch is the one exported."""

from mfcalc.config import TrainSettings
from mfcalc.train.fit import EarlyStopping
from mfcalc.train.loop import early_best_warning


def run(losses, settings, lr=1e-3):
    stopping = EarlyStopping(settings.early_stopping, settings.min_epochs)
    for epoch, loss in enumerate(losses, start=1):
        stopping.update(epoch, loss)
        reason = stopping.stop_reason(epoch, lr, settings)
        if reason:
            return epoch, reason, stopping
    return len(losses), None, stopping


def test_no_patience_stop_before_min_epochs():
    settings = TrainSettings(epochs=100, early_stopping=3, min_epochs=10)
    epoch, reason, stopping = run([1.0] + [2.0] * 50, settings)
    assert epoch == 10 and "no relative improvement" in reason and stopping.best_epoch == 1
    epoch, _, _ = run([1.0] + [2.0] * 50, TrainSettings(epochs=100, early_stopping=3, min_epochs=0))
    assert epoch == 4  # without the minimum the noisy first epoch would have ended training at once


def test_min_lr_stop_also_waits_for_min_epochs():
    settings = TrainSettings(epochs=100, early_stopping=50, min_epochs=5, min_lr=1e-5)
    epoch, reason, _ = run([3.0, 2.0, 1.0, 0.5, 0.25, 0.1], settings, lr=1e-6)
    assert epoch == 5 and "min_lr" in reason


def test_small_improvements_keep_the_best_weights_but_not_the_patience():
    stopping = EarlyStopping(patience=2, min_epochs=0)
    assert stopping.update(1, 1.0)
    assert stopping.update(2, 1.0 - 1e-6)  # lower, so its weights are kept...
    assert stopping.bad_epochs == 1 and stopping.best_epoch == 2  # ...but it is not progress


def test_epochs_limit_always_stops():
    settings = TrainSettings(epochs=3, min_epochs=40)
    assert run([3.0, 2.0, 1.0, 0.5], settings)[:2] == (3, "reached 3 epochs")


def test_a_best_epoch_among_the_first_few_is_warned_about():
    assert "barely trained" in early_best_warning(1, 21)
    assert early_best_warning(1, 2) is None  # a two-epoch run has nothing to compare with
    assert early_best_warning(30, 50) is None
