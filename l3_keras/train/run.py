"""One training run: checks, strategy, model, resume, `fit` (or the multi-worker loop), results.

Every user error is raised as L3Error before the first step: missing or unreadable data, a preset
that does not fit the shards, a global batch that does not split over the replicas.

Resuming: run the same command again. The model and optimizer come back from the latest checkpoint
(`checkpoint.py`) and training continues at that step, so the resumed run ends at the same step
count as an uninterrupted one. The pair stream does NOT replay: it is reseeded with
(seed + resumed step), so the resumed run continues with fresh pairs (from the same distribution,
not bit-identical to those the uninterrupted run would have drawn).
"""
from __future__ import annotations

import dataclasses
import os
from typing import List, Optional

import keras
import numpy as np
import tensorflow as tf

from l3_keras import models
from l3_keras.config import DataConfig, ModelConfig, TrainConfig
from l3_keras.data import pairs
from l3_keras.train import callbacks, checkpoint, data, loop, rundir, strategy as strategies
from l3_keras.train.callbacks import log


@dataclasses.dataclass(frozen=True)
class Inputs:
    """Shard files to train on and the held-out shards (whole videos) to validate on."""

    train: List[str]
    val: List[str]


def find_inputs(data_path, model_config: ModelConfig, train_config: TrainConfig, prepared_dir, *,
                val_data=None, data_config: Optional[DataConfig] = None, label_from=None,
                videos_per_shard=None, workers=1):
    """Resolves --data / --val-data to (Inputs, DataConfig), preparing videos when needed.

    Raises:
        L3Error: no videos or shards, or too few shards to hold some out.
    """
    data_config = data_config or DataConfig.for_model(model_config)
    kwargs = dict(label_from=label_from, videos_per_shard=videos_per_shard, workers=workers)
    files = data.resolve_shards(data_path, data_config, prepared_dir, **kwargs)
    if val_data:
        val = data.resolve_shards(val_data, data_config, os.path.join(prepared_dir, "val"), **kwargs)
        return Inputs(files, val), data_config
    return Inputs(*data.split_shards(files, train_config.val_fraction)), data_config


@dataclasses.dataclass
class _Run:
    run_dir: str
    train_config: TrainConfig
    strategy: tf.distribute.Strategy
    global_batch: int
    chief: bool
    model: keras.Model = None
    optimizer: keras.optimizers.Optimizer = None
    checkpointer: checkpoint.Checkpointer = None
    progress: callbacks.Progress = None


def make_optimizer(train_config: TrainConfig, loss_scaling: bool):
    """Adam with decoupled weight decay (paper: lr 1e-4, wd 1e-5); LossScaleOptimizer for fp16."""
    lr = train_config.learning_rate
    if train_config.lr_schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=train_config.total_steps)
    opt = keras.optimizers.Adam(lr, weight_decay=train_config.weight_decay)
    return keras.optimizers.LossScaleOptimizer(opt) if loss_scaling else opt


def train(run_dir, model_config: ModelConfig, train_config: TrainConfig, inputs: Inputs,
          data_config: Optional[DataConfig] = None, per_class: bool = False) -> dict:
    """Trains (or resumes) the AVC model in `run_dir`; returns the held-out results (`fit_model`)."""
    return fit_model(run_dir, model_config, train_config, inputs, data_config, per_class)[1]


def fit_model(run_dir, model_config: ModelConfig, train_config: TrainConfig, inputs: Inputs,
              data_config: Optional[DataConfig] = None, per_class: bool = False):
    """Trains (or resumes) the AVC model in `run_dir`.

    Args:
        run_dir: the run directory (layout in `rundir`); created.
        model_config: the preset to train.
        train_config: optimisation, schedule, strategy, precision.
        inputs: training and held-out shard files.
        data_config: defaults to DataConfig.for_model(model_config).
        per_class: also report held-out AVC accuracy per class (labelled collections).

    Returns:
        (the trained keras.Model, results): results = {"avc_accuracy", "loss", "pairs", "steps",
        "per_class"?} on the held-out pairs, also written to results.json.

    Raises:
        L3Error: (before training) bad data, preset/data mismatch, global batch vs replicas.
    """
    with strategies.precision(train_config.mixed_precision):
        return _fit_model(run_dir, model_config, train_config, inputs, data_config, per_class)


def _fit_model(run_dir, model_config, train_config, inputs, data_config, per_class):
    tc = train_config
    data_config = data_config or DataConfig.for_model(model_config)
    # First: MultiWorkerMirroredStrategy must exist before TensorFlow runs any op.
    strategy = strategies.make_strategy(tc.strategy)
    data.check_shards(inputs.train, model_config, "training")
    data.check_shards(inputs.val, model_config, "validation")
    pairs._check_configs(model_config, data_config)
    global_batch = tc.global_batch or strategies.global_batch(strategy, tc.batch_per_replica)
    strategies.check_global_batch(strategy, global_batch)
    custom = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    ctx = _Run(os.fspath(run_dir), tc, strategy, global_batch, strategies.is_chief(strategy))
    os.makedirs(ctx.run_dir, exist_ok=True)
    if ctx.chief:
        rundir.write_config(ctx.run_dir, model_config, data_config, tc,
                            {"train": inputs.train, "val": inputs.val})
    keras.utils.set_random_seed(tc.seed)
    with strategy.scope():
        ctx.model = models.build_l3(model_config)
        ctx.optimizer = make_optimizer(tc, custom and tc.mixed_precision == "fp16")
        if not custom:
            ctx.model.compile(ctx.optimizer, loss="sparse_categorical_crossentropy",
                              metrics=[keras.metrics.SparseCategoricalAccuracy(name="avc_accuracy")])
            ctx.optimizer = ctx.model.optimizer  # compile wraps it for fp16
        ctx.checkpointer = checkpoint.Checkpointer(ctx.run_dir, ctx.model, ctx.optimizer, ctx.chief,
                                                   strategies.worker_id(strategy))
        start = ctx.checkpointer.restore()
    log.info("%s: %s on %d replica(s), global batch %d, %s, %s at step %d/%d", ctx.run_dir,
             model_config.name, strategy.num_replicas_in_sync, global_batch,
             keras.mixed_precision.global_policy().name, "resuming" if start else "starting",
             start, tc.total_steps)
    ctx.progress = callbacks.Progress(tc.total_steps, start, global_batch, tc.log_every)

    def train_dataset(step):
        return pairs.distributed_pair_dataset(strategy, inputs.train, model_config, data_config,
                                              global_batch=global_batch, training=True,
                                              seed=tc.seed + step,
                                              samples_per_record=tc.pairs_per_video)

    val = data.validation_pairs(inputs.val, model_config, data_config, tc.validation_pairs,
                                global_batch, seed=tc.seed)
    if start < tc.total_steps:
        (loop.custom_fit if custom else _fit)(ctx, train_dataset, val, start)
    results = _held_out(ctx, inputs.val, model_config, data_config, per_class)
    results["epoch_pairs_per_second"] = [round(r, 2) for r in ctx.progress.epoch_rates]
    if ctx.chief:
        rundir.save_model(ctx.model, ctx.run_dir)
        rundir.write_json(os.path.join(ctx.run_dir, rundir.RESULTS), results)
        rundir.plot_curves(ctx.run_dir)
    return ctx.model, results


def _fit(ctx: _Run, train_dataset, val, start: int) -> None:
    """model.fit from `start`; an epoch interrupted mid-way is first finished with its remaining steps."""
    spe, tc = ctx.train_config.steps_per_epoch, ctx.train_config
    epoch, done = divmod(start, spe)
    step = start
    while epoch < tc.epochs:
        steps = spe - done
        cbs = callbacks.fit_callbacks(ctx.run_dir, checkpoint.CheckpointCallback(
            ctx.checkpointer, tc.checkpoint_every, step), ctx.progress, step, tc.log_every)
        # One partial epoch (after a mid-epoch resume), then the rest in one call.
        last = epoch + 1 if done else tc.epochs
        # fit makes a new validation iterator every epoch (Keras 3.15's evaluate resets it), so
        # every epoch scores the same fixed pairs: validation_steps batches of the repeated stream.
        ctx.model.fit(train_dataset(step), initial_epoch=epoch, epochs=last, steps_per_epoch=steps,
                      validation_data=val.repeat(),
                      validation_steps=-(-tc.validation_pairs // ctx.global_batch),
                      callbacks=cbs, verbose=0)
        step += steps * (last - epoch)
        epoch, done = last, 0


def _held_out(ctx: _Run, val_files, model_config, data_config, per_class: bool) -> dict:
    """AVC accuracy on the fixed held-out pairs; per class of the frame's video when asked."""
    ds = data.validation_pairs(val_files, model_config, data_config, ctx.train_config.validation_pairs,
                               ctx.global_batch, seed=ctx.train_config.seed, with_metadata=per_class)
    if not per_class:
        return {**loop.evaluate(ctx.model, ds), "pairs": ctx.train_config.validation_pairs,
                "steps": ctx.checkpointer.step}
    labels = data.labels_by_video(val_files)
    hits, classes, losses = [], [], []
    for x, y, meta in ds:
        probs = ctx.model(x, training=False).numpy()
        y = y.numpy()
        hits.append(probs.argmax(-1) == y)
        losses.append(-np.log(np.maximum(probs[np.arange(len(y)), y], 1e-12)))
        classes += [labels.get(v.decode(), "") for v in meta["video_id"].numpy()]
    hits, classes = np.concatenate(hits), np.array(classes)
    table = {str(c): {"avc_accuracy": float(hits[classes == c].mean()), "pairs": int((classes == c).sum())}
             for c in sorted(set(classes))}
    return {"avc_accuracy": float(hits.mean()), "loss": float(np.concatenate(losses).mean()),
            "pairs": int(len(hits)), "steps": ctx.checkpointer.step, "per_class": table}
