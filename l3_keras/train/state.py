"""The state of one training run, shared by both training paths (`fit` and the custom loop)."""
from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from l3_keras.config import TrainConfig
from l3_keras.train.callbacks import Progress
from l3_keras.train.checkpoint import Checkpointer
from l3_keras.train.objective import Objective


@dataclasses.dataclass(frozen=True)
class Run:
    """Everything a training loop needs, built before the first step (`run.start`).

    Attributes:
        run_dir: the run directory (`rundir` layout).
        train_config: optimisation, schedule, strategy, precision.
        strategy: the distribution strategy the model and optimizer were built under.
        global_batch: pairs per step over all replicas.
        chief: whether this worker writes the run directory's files.
        model: the AVC model: checkpointed, saved, evaluated on the held-out pairs.
        objective: what the optimizer trains (`train.objective`; its model shares the AVC model's
            weights, and is compiled for the `fit` path).
        optimizer: its optimizer (LossScaleOptimizer under fp16).
        checkpointer: saves and restores model + optimizer + steps taken.
        progress: progress lines with rate and ETA.
        start_step: the step restored from the latest checkpoint (0 for a new run).
    """

    run_dir: str
    train_config: TrainConfig
    strategy: tf.distribute.Strategy
    global_batch: int
    chief: bool
    model: keras.Model
    objective: Objective
    optimizer: keras.optimizers.Optimizer
    checkpointer: Checkpointer
    progress: Progress
    start_step: int
