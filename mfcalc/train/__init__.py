"""Training: masked multi-fidelity loss, the training loop, checkpoints, metrics."""

from mfcalc.train.loop import load_run_data, train
from mfcalc.train.metrics import accumulate_stats, format_table, residual_data, stats_to_metrics

__all__ = ["train", "load_run_data", "accumulate_stats", "format_table", "residual_data", "stats_to_metrics"]
