"""Where training runs: the tf.distribute strategy, the mixed-precision policy, the batch split.

    "auto"         MirroredStrategy over all visible GPUs; the default strategy when there is none
    "mirrored"     MirroredStrategy (all GPUs, or one CPU device)
    "multiworker"  MultiWorkerMirroredStrategy from TF_CONFIG (trained by `loop.py`, not `fit`)
    "default"      tf.distribute.get_strategy(): one device, no replication
"""
from __future__ import annotations

import contextlib
import json
import os

import keras
import tensorflow as tf

from l3_keras.errors import L3Error, check_choice

STRATEGIES = ("auto", "mirrored", "multiworker", "default")
PRECISIONS = {None: "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The strategy called `name` (see the module docstring).

    Raises:
        L3Error: unknown name, or "multiworker" without a TF_CONFIG naming this worker.
    """
    check_choice("strategy", name, STRATEGIES)
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise L3Error("--strategy multiworker needs TF_CONFIG (cluster and this task) in the "
                          "environment; see the TF multi-worker guide.")
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "default" or (name == "auto" and not gpus):
        return tf.distribute.get_strategy()
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the worker that writes the real run files (always, without multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    return task_type == "chief" or (task_type == "worker" and task_id == 0 and "chief" not in cluster)


def worker_id(strategy: tf.distribute.Strategy) -> int:
    resolver = getattr(strategy, "cluster_resolver", None)
    return int(getattr(resolver, "task_id", 0) or 0)


def global_batch(strategy: tf.distribute.Strategy, batch_per_replica: int) -> int:
    """Pairs per step over all replicas (paper: 16 per GPU)."""
    return batch_per_replica * strategy.num_replicas_in_sync


def check_global_batch(strategy: tf.distribute.Strategy, batch: int) -> None:
    """Raises L3Error when `batch` cannot be split evenly over the replicas."""
    replicas = strategy.num_replicas_in_sync
    if batch < 1 or batch % replicas:
        raise L3Error(f"Global batch {batch} is not divisible by the {replicas} replicas; use a "
                      f"multiple of {replicas} (or set the batch per replica instead).")


@contextlib.contextmanager
def precision(mixed_precision):
    """Keras' global dtype policy for building and training inside the block; restored after it.

    "bf16" -> mixed_bfloat16, "fp16" -> mixed_float16 (loss scaling: `fit` adds it, the custom loop
    too), None -> float32. The spectrogram front end, the input BatchNorm and the softmax stay
    float32 whatever the policy (their layers say so). Yields the policy name.
    """
    check_choice("mixed_precision", mixed_precision, tuple(PRECISIONS))
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(PRECISIONS[mixed_precision])
    try:
        yield PRECISIONS[mixed_precision]
    finally:
        keras.mixed_precision.set_global_policy(previous)
