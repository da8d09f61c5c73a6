"""Training inputs: --data / --val-data -> training and held-out shard files, the fixed held-out pairs.

Videos are prepared into shards first (`prepare`, resumable) with the preset's decoding settings
(`DataConfig.for_model`); listing, checking and the held-out split are `data.shards`'.
"""
from __future__ import annotations

import dataclasses
import os
from typing import List, Optional

import tensorflow as tf

from l3_keras.config import DataConfig, ModelConfig, TrainConfig
from l3_keras.data import pairs, shards
from l3_keras.errors import L3Error


@dataclasses.dataclass(frozen=True)
class Inputs:
    """Shard files to train on and the held-out shards (whole videos) to validate on."""

    train: List[str]
    val: List[str]


def find_inputs(data_path, model_config: ModelConfig, train_config: TrainConfig, prepared_dir, *,
                val_data=None, label_from=None, videos_per_shard=None, workers=1) -> Inputs:
    """Resolves --data / --val-data to shard files, preparing videos when needed.

    Without `val_data`, whole shards are held out (`shards.split`, train_config.val_fraction).

    Raises:
        L3Error: no videos or shards, or too few shards to hold some out.
    """
    kwargs = dict(label_from=label_from, videos_per_shard=videos_per_shard, workers=workers)
    files = resolve(data_path, model_config, prepared_dir, **kwargs)
    if val_data:
        val = resolve(val_data, model_config, os.path.join(prepared_dir, "val"), **kwargs)
        return Inputs(files, val)
    return Inputs(*shards.split(files, train_config.val_fraction))


def resolve(data, model_config: ModelConfig, prepared_dir, *, label_from=None,
            videos_per_shard=None, workers=1) -> List[str]:
    """Shard files for `data`, preparing videos first when `data` is a folder of videos.

    Args:
        data: a folder of *.tfrecord shards (from `prepare`), a glob or list of shard files, or a
            folder / list file of videos, which is prepared into `prepared_dir` (resumably) with
            `DataConfig.for_model(model_config)`.
        prepared_dir: where videos are prepared.
        label_from, videos_per_shard, workers: passed to `prepare`.

    Raises:
        L3Error: nothing there, or no videos in a folder without shards.
    """
    if isinstance(data, (list, tuple)):
        return shards.list_shards(data)
    data = os.fspath(data)
    if os.path.isdir(data) or any(ch in data for ch in "*?[") or data.endswith(".tfrecord"):
        found = shards.list_shards(data)
        if found:
            return found
        if not os.path.isdir(data):
            raise L3Error(f"No shard files match {data}; check the path or run `l3 prepare`.")
    from l3_keras.data.prepare import prepare  # decoding needs PyAV: only when there are videos

    prepare(data, prepared_dir, DataConfig.for_model(model_config), workers=workers,
            label_from=label_from, videos_per_shard=videos_per_shard, progress=False)
    return shards.list_shards(prepared_dir)


def held_out_pairs(files, model_config: ModelConfig, count: int, batch: Optional[int], seed: int,
                   pairs_per_video: int, with_metadata: bool = False):
    """A fixed set of `count` held-out pairs: centre crops, no jitter, same pairs on every pass."""
    options = pairs.PairOptions(pairs_per_video=pairs_per_video)
    ds = pairs.make_pair_dataset(files, model_config, training=False, repeat=True, seed=seed,
                                 with_metadata=with_metadata, options=options)
    ds = ds.take(count)
    # Keras' evaluate() deletes the validation iterator after every epoch, and in TF 2.21 deleting
    # an autotuned iterator can block until its tuning thread next wakes (tens of seconds). These
    # fixed pairs need no tuning.
    tf_options = tf.data.Options()
    tf_options.autotune.enabled = False
    ds = ds.with_options(tf_options)
    return ds.batch(batch) if batch else ds
