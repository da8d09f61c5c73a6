"""Checkpoints that let a killed run continue: model + optimizer state every N steps and at epoch ends.

One mechanism for both training paths (`model.fit` and the multi-worker loop):
`tf.train.Checkpoint(model=..., optimizer=...)` under a `tf.train.CheckpointManager` in
`RUN_DIR/checkpoints/`, plus the number of training steps taken, so a restored run knows where it
stands and Adam's moments come back instead of starting from zero. (The optimizer's own
`iterations` is not the step: under fp16 loss scaling it skips the steps whose gradients overflow.)

Keras' `BackupAndRestore` is not used: on resume it restarts the interrupted epoch from its first
batch, so a run killed mid-epoch would end with more steps than an uninterrupted one.

Multi-worker: every worker must take part in saving (the values are read collectively), but only
the chief writes into `checkpoints/`; the others write into a private temp folder that is deleted
right after (the TF multi-worker guide's recipe). All workers restore from the chief's folder.
A checkpoint is complete before `checkpoints/checkpoint` names it, so a SIGKILL during a save
leaves the previous one as the latest.
"""
from __future__ import annotations

import os
import shutil

import keras
import tensorflow as tf

CHECKPOINTS = "checkpoints"


class Checkpointer:
    """Saves and restores (model, optimizer) for one run directory.

    Args:
        run_dir: the run directory; checkpoints go to run_dir/checkpoints.
        model: the AVC model.
        optimizer: its optimizer (built here if needed, so its slots exist before a restore).
        chief: whether this worker writes the real files.
        worker: this worker's index, names its temp folder when not chief.
        max_to_keep: checkpoints kept.
    """

    def __init__(self, run_dir, model, optimizer, chief=True, worker=0, max_to_keep=2):
        self.directory = os.path.join(run_dir, CHECKPOINTS)
        self.chief = chief
        write_dir = self.directory if chief else os.path.join(run_dir, f".worker-{worker}-tmp")
        self._write_dir = write_dir
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
        self.steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="steps_taken")
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, steps=self.steps)
        self.manager = tf.train.CheckpointManager(self.checkpoint, write_dir, max_to_keep)

    @property
    def step(self) -> int:
        """Training steps taken: by the last save, or restored."""
        return int(self.steps.numpy())

    def restore(self) -> int:
        """Restores the chief's latest checkpoint, if any; returns the step it resumes at (0 if none)."""
        latest = tf.train.latest_checkpoint(self.directory)
        if latest:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
        return self.step

    def save(self, step: int) -> None:
        """Saves the model, the optimizer and `step` (training steps taken so far)."""
        self.steps.assign(step)
        self.manager.save(checkpoint_number=step)
        if not self.chief:
            shutil.rmtree(self._write_dir, ignore_errors=True)


class CheckpointCallback(keras.callbacks.Callback):
    """`fit` callback: saves every `every` steps (global step) and at every epoch end."""

    def __init__(self, checkpointer: Checkpointer, every: int, start_step: int):
        super().__init__()
        self.checkpointer, self.every, self.step = checkpointer, every, start_step

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.every and self.step % self.every == 0:
            self.checkpointer.save(self.step)

    def on_epoch_end(self, epoch, logs=None):
        self.checkpointer.save(self.step)
