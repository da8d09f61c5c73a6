"""Progress lines with rate and ETA, and the `fit` callbacks that fill the run directory."""
from __future__ import annotations

import logging
import os
import time

import keras
import numpy as np

from l3_keras.train import rundir

log = logging.getLogger("l3_keras.train")


class Progress:
    """Logs "step s/total, loss, accuracy, pairs/s, ETA" every `every` steps (both train paths)."""

    def __init__(self, total_steps: int, start_step: int, global_batch: int, every: int):
        self.total, self.batch, self.every = total_steps, global_batch, max(1, every)
        self._t0, self._s0 = time.perf_counter(), start_step
        self.epoch_rates = []  # pairs/s of each epoch's training steps (validation excluded)

    @property
    def pairs_per_second(self) -> float:
        """Median rate of the epochs trained by this process (nan before one ended)."""
        return float(np.median(self.epoch_rates)) if self.epoch_rates else float("nan")

    def restart_clock(self, step: int) -> None:
        """Rates exclude time spent outside training steps (validation, checkpoints)."""
        self._t0, self._s0 = time.perf_counter(), step

    def end_epoch(self, step: int) -> None:
        elapsed = time.perf_counter() - self._t0
        self.epoch_rates.append((step - self._s0) * self.batch / max(elapsed, 1e-9))

    def update(self, step: int, logs_fn) -> None:
        if step % self.every and step != self.total:
            return
        elapsed = time.perf_counter() - self._t0
        rate = (step - self._s0) * self.batch / max(elapsed, 1e-9)
        eta = (self.total - step) * self.batch / max(rate, 1e-9)
        logs = logs_fn()
        log.info("step %d/%d  loss %.4f  avc_accuracy %.3f  %.1f pairs/s  ETA %s", step,
                 self.total, logs.get("loss", float("nan")), logs.get("avc_accuracy", float("nan")),
                 rate, _duration(eta))


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ProgressCallback(keras.callbacks.Callback):
    """Progress lines; at each epoch end the epoch's rate, then `validate()`'s figures as val_*
    (before the callbacks that write history.csv and TensorBoard)."""

    def __init__(self, progress: Progress, start_step: int, validate=None):
        super().__init__()
        self.progress, self.step, self.validate = progress, start_step, validate

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        self.progress.update(self.step, lambda: {k: float(v) for k, v in (logs or {}).items()})

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0:  # the clock starts after the previous epoch's validation
            self.progress.restart_clock(self.step)

    def on_epoch_end(self, epoch, logs=None):
        logs = {} if logs is None else logs
        self.progress.end_epoch(self.step)  # into history.csv and TensorBoard (callbacks run after)
        logs["pairs_per_second"] = self.progress.epoch_rates[-1]
        if self.validate:
            logs.update({f"val_{k}": v for k, v in self.validate().items()})
        log.info("epoch %d: %s", epoch + 1,
                 "  ".join(f"{k} {float(v):.4f}" for k, v in sorted(logs.items())))


class LearningRateToLogs(keras.callbacks.Callback):
    """Adds "learning_rate" to the epoch logs so that CSVLogger records it (TensorBoard does too)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class CurvesCallback(keras.callbacks.Callback):
    """Redraws curves.png from history.csv after every epoch (run after CSVLogger)."""

    def __init__(self, run_dir):
        super().__init__()
        self.run_dir = run_dir

    def on_epoch_end(self, epoch, logs=None):
        rundir.plot_curves(self.run_dir)


def fit_callbacks(run_dir, checkpoint_cb, progress: Progress, start_step: int, log_every: int,
                  validate=None):
    """Order matters: the epoch's rate is taken before the checkpoint is saved, the rate, the
    learning rate and the validation figures join the logs before CSVLogger, curves read its file.

    Args:
        validate: () -> {"loss", "avc_accuracy"} on the held-out pairs, after every epoch.
    """
    return [
        LearningRateToLogs(),
        ProgressCallback(progress, start_step, validate),
        checkpoint_cb,
        keras.callbacks.TensorBoard(os.path.join(run_dir, rundir.LOGS), update_freq=log_every),
        keras.callbacks.CSVLogger(os.path.join(run_dir, rundir.HISTORY), append=True),
        CurvesCallback(run_dir),
    ]
