"""The custom training loop, for MultiWorkerMirroredStrategy (Keras 3 `fit` fails under it:
keras-team/keras#20585).

Same model, objective (`train.objective`), data, optimizer and checkpoints as the `fit` path:
`strategy.run` of a GradientTape step whose per-example loss is averaged over the GLOBAL batch
(`tf.nn.compute_average_loss`), so that the optimizer's all-reduce SUM of gradients gives the mean
over all replicas. With fp16 the optimizer is Keras' LossScaleOptimizer: `scale_loss` before the
tape's gradient, `apply_gradients` unscales and skips steps with overflowing gradients. Only the chief writes history.csv, TensorBoard and curves.
"""
from __future__ import annotations

import os

import keras
import tensorflow as tf

from l3_keras.train import rundir
from l3_keras.train.callbacks import log
from l3_keras.train.objective import Objective, pair_accuracy
from l3_keras.train.state import Run

SUM = tf.distribute.ReduceOp.SUM


def train_step(objective: Objective, optimizer, strategy, global_batch):
    """iterator -> (loss, summed accuracy) of one global batch: a tf.function over `strategy.run`."""
    model = objective.model
    variables = model.trainable_variables

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            probs = model(x, training=True)
            per_pair = objective.loss(y, probs)
            loss = tf.nn.compute_average_loss(per_pair, global_batch_size=global_batch)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            scaled = optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, variables)
        optimizer.apply_gradients(zip(grads, variables))
        return loss, tf.reduce_sum(objective.accuracy(y, probs))

    @tf.function
    def step(iterator):
        loss, correct = strategy.run(replica_step, args=next(iterator))
        return strategy.reduce(SUM, loss, axis=None), strategy.reduce(SUM, correct, axis=None)

    return step


def evaluate(model, dataset) -> dict:
    """{"loss", "avc_accuracy"} of `model` over a finite batched (inputs, label) dataset."""
    return evaluator(model)(dataset)


def evaluator(model):
    """`evaluate` bound to `model`, traced once for all its calls (the validation of every epoch)."""
    @tf.function
    def batch_sums(x, y):
        probs = model(x, training=False)
        loss = keras.losses.sparse_categorical_crossentropy(y, probs)
        return (tf.reduce_sum(loss), tf.reduce_sum(pair_accuracy(y, probs)),
                tf.cast(tf.size(y), tf.float32))

    def run(dataset) -> dict:
        total = [0.0, 0.0, 0.0]
        for x, y in dataset:
            total = [t + float(v) for t, v in zip(total, batch_sums(x, y))]
        return {"loss": total[0] / max(total[2], 1), "avc_accuracy": total[1] / max(total[2], 1)}

    return run


def custom_fit(run: Run, make_train_dataset, val_dataset) -> None:
    """Trains from the restored step to epochs x steps_per_epoch, validating and checkpointing.

    Args:
        run: the run's model, optimizer, strategy, train config, checkpointer, progress.
        make_train_dataset: start step -> distributed training dataset.
        val_dataset: the fixed validation pairs (batched, finite).
    """
    start_step = run.start_step
    tc, spe = run.train_config, run.train_config.steps_per_epoch
    total = tc.epochs * spe
    step_fn = train_step(run.objective, run.optimizer, run.strategy, run.global_batch)
    validate = evaluator(run.model)
    iterator = iter(make_train_dataset(start_step))
    writers = {}
    if run.chief:
        writers = {k: tf.summary.create_file_writer(os.path.join(run.run_dir, rundir.LOGS, k))
                   for k in ("train", "validation")}
    sums = [0.0, 0.0, 0]  # loss, correct pairs, steps since the epoch (or the resume) began
    for step in range(start_step + 1, total + 1):
        loss, correct = step_fn(iterator)
        sums = [sums[0] + float(loss), sums[1] + float(correct), sums[2] + 1]
        run.progress.update(step, lambda: {"loss": sums[0] / sums[2],
                                           "avc_accuracy": sums[1] / (sums[2] * run.global_batch)})
        if step % spe == 0:
            run.progress.end_epoch(step)
            epoch = step // spe - 1
            logs = {"loss": sums[0] / sums[2], "avc_accuracy": sums[1] / (sums[2] * run.global_batch),
                    "learning_rate": float(keras.ops.convert_to_numpy(run.optimizer.learning_rate)),
                    "pairs_per_second": run.progress.epoch_rates[-1]}
            val = validate(val_dataset)
            logs.update({f"val_{k}": v for k, v in val.items()})
            log.info("epoch %d: %s", epoch + 1, "  ".join(f"{k} {v:.4f}" for k, v in sorted(logs.items())))
            if run.chief:
                _write_epoch(run.run_dir, writers, epoch, logs)
            sums = [0.0, 0.0, 0]
            run.checkpointer.save(step)
            run.progress.restart_clock(step)
        elif tc.checkpoint_every and step % tc.checkpoint_every == 0:
            run.checkpointer.save(step)


def _write_epoch(run_dir, writers, epoch, logs):
    """Epoch logs in the places the `fit` path's callbacks use: TensorBoard, history.csv, curves."""
    for name, writer in writers.items():
        prefix = "val_" if name == "validation" else ""
        with writer.as_default():
            for key in ("loss", "avc_accuracy", "learning_rate"):
                if prefix + key in logs:
                    tf.summary.scalar(f"epoch_{key}", logs[prefix + key], step=epoch)
        writer.flush()
    rundir.append_history(run_dir, epoch, logs)
    rundir.plot_curves(run_dir)
