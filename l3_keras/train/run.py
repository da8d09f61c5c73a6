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

import os

import keras
import numpy as np
import tensorflow as tf

from l3_keras import files, models
from l3_keras.config import ModelConfig, TrainConfig
from l3_keras.data import pairs, shards
from l3_keras.train import (callbacks, checkpoint, data, loop, objective as objectives, rundir,
                            strategy as strategies)
from l3_keras.train.callbacks import log
from l3_keras.train.data import Inputs
from l3_keras.train.state import Run


def make_optimizer(train_config: TrainConfig, loss_scaling: bool):
    """Adam with decoupled weight decay (paper: lr 1e-4, wd 1e-5); LossScaleOptimizer for fp16."""
    lr = train_config.learning_rate
    if train_config.lr_schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=train_config.total_steps)
    opt = keras.optimizers.Adam(lr, weight_decay=train_config.weight_decay)
    return keras.optimizers.LossScaleOptimizer(opt) if loss_scaling else opt


def train(run_dir, model_config: ModelConfig, train_config: TrainConfig, inputs: Inputs,
          per_class: bool = False):
    """Trains (or resumes) the AVC model in `run_dir`, then scores the held-out pairs.

    Args:
        run_dir: the run directory (layout in `rundir`); created.
        model_config: the preset to train.
        train_config: optimisation, schedule, strategy, precision.
        inputs: training and held-out shard files (`data.find_inputs`).
        per_class: also report held-out AVC accuracy per class (labelled collections).

    Returns:
        (the trained keras.Model, results): results = {"avc_accuracy", "loss", "pairs", "steps",
        "per_class"?} on the held-out pairs, also written to results.json.

    Raises:
        L3Error: (before training) bad data, preset/data mismatch, global batch vs replicas.
    """
    tc = train_config
    with strategies.precision(tc.mixed_precision):
        # First: MultiWorkerMirroredStrategy must exist before TensorFlow runs any op.
        strategy = strategies.make_strategy(tc.strategy)
        train_set = shards.check(inputs.train, model_config, "training")
        val_set = shards.check(inputs.val, model_config, "validation")
        run = start(run_dir, model_config, tc, strategy, {"train": inputs.train, "val": inputs.val},
                    train_set.data_config)
        options = pairs.PairOptions(pairs_per_video=tc.pairs_per_video,
                                    positives_only=tc.negatives == "batch")

        def train_dataset(step):
            return pairs.distributed_pair_dataset(strategy, train_set, model_config,
                                                  global_batch=run.global_batch, training=True,
                                                  seed=tc.seed + step, options=options)

        val = data.held_out_pairs(val_set, model_config, tc.validation_pairs, run.global_batch,
                                  tc.seed, tc.pairs_per_video)
        if run.start_step < tc.total_steps:
            custom = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            (loop.custom_fit if custom else _fit)(run, train_dataset, val)
        results = _held_out(run, val_set, model_config, per_class)
        results["pairs_per_second"] = round(run.progress.pairs_per_second, 2)  # per epoch: history
        if run.chief:
            rundir.save_model(run.model, run.run_dir)
            files.write_json(os.path.join(run.run_dir, rundir.RESULTS), results)
            rundir.plot_curves(run.run_dir)
        return run.model, results


def start(run_dir, model_config: ModelConfig, train_config: TrainConfig, strategy, inputs: dict,
          data_config) -> Run:
    """Builds the run: config.json, the model and optimizer under `strategy`, the latest checkpoint.

    Args:
        inputs: {"train": [...], "val": [...]} shard files, recorded in config.json.
        data_config: the settings the shards were prepared with (their manifest), or None.

    Raises:
        L3Error: a global batch the replicas cannot split, or a run directory of another model.
    """
    tc = train_config
    global_batch = tc.global_batch or strategies.global_batch(strategy, tc.batch_per_replica)
    strategies.check_global_batch(strategy, global_batch)
    custom = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    run_dir, chief = os.fspath(run_dir), strategies.is_chief(strategy)
    os.makedirs(run_dir, exist_ok=True)
    if chief:
        rundir.write_config(run_dir, model_config, data_config, tc, inputs)
    keras.utils.set_random_seed(tc.seed)
    with strategy.scope():
        model = models.build_l3(model_config)
        objective = objectives.make_objective(model, model_config, tc.negatives)
        optimizer = make_optimizer(tc, custom and tc.mixed_precision == "fp16")
        if not custom:
            objective.model.compile(optimizer, loss=objective.loss, metrics=[
                keras.metrics.MeanMetricWrapper(objective.accuracy, name="avc_accuracy")])
            optimizer = objective.model.optimizer  # compile wraps it for fp16
        checkpointer = checkpoint.Checkpointer(run_dir, model, optimizer, chief,
                                               strategies.worker_id(strategy))
        start_step = checkpointer.restore()
    log.info("%s: %s on %d replica(s), global batch %d, %s, %s at step %d/%d", run_dir,
             model_config.name, strategy.num_replicas_in_sync, global_batch,
             keras.mixed_precision.global_policy().name, "resuming" if start_step else "starting",
             start_step, tc.total_steps)
    progress = callbacks.Progress(tc.total_steps, start_step, global_batch, tc.log_every)
    return Run(run_dir, tc, strategy, global_batch, chief, model, objective, optimizer,
               checkpointer, progress, start_step)


def _fit(run: Run, train_dataset, val) -> None:
    """model.fit from the restored step; an epoch interrupted mid-way is first finished alone."""
    tc = run.train_config
    spe = tc.steps_per_epoch
    epoch, done = divmod(run.start_step, spe)
    step = run.start_step
    validate = loop.evaluator(run.model)
    while epoch < tc.epochs:
        steps = spe - done
        cbs = callbacks.fit_callbacks(
            run.run_dir, checkpoint.CheckpointCallback(run.checkpointer, tc.checkpoint_every, step),
            run.progress, step, tc.log_every, validate=lambda: validate(val))
        # One partial epoch (after a mid-epoch resume), then the rest in one call.
        last = epoch + 1 if done else tc.epochs
        # Validation is the AVC model's on the fixed held-out pairs, whatever the objective
        # trains (`callbacks.ProgressCallback`), as in the custom loop.
        run.objective.model.fit(train_dataset(step), initial_epoch=epoch, epochs=last,
                                steps_per_epoch=steps, callbacks=cbs, verbose=0,
                                shuffle=False)  # the pair stream shuffles itself
        step += steps * (last - epoch)
        epoch, done = last, 0


def _held_out(run: Run, val_set, model_config, per_class: bool) -> dict:
    """AVC accuracy on the fixed held-out pairs; per class of the frame's video when asked."""
    tc = run.train_config
    ds = data.held_out_pairs(val_set, model_config, tc.validation_pairs, run.global_batch, tc.seed,
                             tc.pairs_per_video, with_metadata=per_class)
    if not per_class:
        return {**loop.evaluate(run.model, ds), "pairs": tc.validation_pairs,
                "steps": run.checkpointer.step}
    labels = shards.labels_by_video(val_set)
    hits, classes, losses = [], [], []
    for x, y, meta in ds:
        probs = run.model(x, training=False).numpy()
        y = y.numpy()
        hits.append(probs.argmax(-1) == y)
        losses.append(-np.log(np.maximum(probs[np.arange(len(y)), y], 1e-12)))
        classes += [labels.get(v.decode(), "") for v in meta["video_id"].numpy()]
    hits, classes = np.concatenate(hits), np.array(classes)
    table = {str(c): {"avc_accuracy": float(hits[classes == c].mean()), "pairs": int((classes == c).sum())}
             for c in sorted(set(classes))}
    return {"avc_accuracy": float(hits.mean()), "loss": float(np.concatenate(losses).mean()),
            "pairs": int(len(hits)), "steps": run.checkpointer.step, "per_class": table}
