"""Prepared shard sets: listing them, reading back how they were prepared, checking them against a
model once, and holding out whole videos.

A shard set is the `*.tfrecord` files `prepare` writes, with the manifest beside them that records
the `DataConfig` they were prepared with (`manifest.json`, or `manifest-part-*.json` for the parts
of a split preparation). `check` is the one place where shards meet a model: it opens every shard,
reads the settings back (from the manifest; from the first record for shards without one) and
raises one L3Error that says what to do when they do not fit. It returns a `ShardSet`, which the
pair stream takes as already checked.

Held-out = whole shards, so whole videos: `split` keeps every k-th shard (sorted by name) for
validation, a deterministic split that no training pair ever comes from.

Paths go through `tf.io.gfile`, so shard sets may live on any file system TensorFlow reads
(local, gs://, ...).
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import List, Optional, Sequence, Tuple

import tensorflow as tf

from l3_keras.config import DataConfig, ModelConfig, check_fits
from l3_keras.data import records
from l3_keras.errors import L3Error

SHARD_PATTERN = "*.tfrecord"
MANIFEST = "manifest.json"
MANIFEST_PARTS = "manifest-part-*.json"


@dataclasses.dataclass(frozen=True)
class ShardSet:
    """Shard files that `check` found readable and fitting a model.

    Attributes:
        files: sorted shard paths.
        data_config: the settings they were prepared with (their manifest); None for shards
            without a manifest (their first record was read instead).
        sample_rate: Hz of their audio.
        frame_short_side: pixels of their frames' short side.
    """

    files: Tuple[str, ...]
    data_config: Optional[DataConfig]
    sample_rate: int
    frame_short_side: int


def list_shards(files) -> List[str]:
    """Sorted shard files of a list of paths, a glob pattern, or a prepared folder.

    Returns:
        the files, possibly none (`check` raises for an empty set).
    """
    if isinstance(files, ShardSet):
        return list(files.files)
    if isinstance(files, (str, os.PathLike)):
        files = os.fspath(files)
        is_dir = tf.io.gfile.isdir(files)
        files = tf.io.gfile.glob(os.path.join(files, SHARD_PATTERN) if is_dir else files)
    return sorted(os.fspath(f) for f in files)


def for_pipeline(files: Sequence[str], input_context=None) -> List[str]:
    """The input pipeline's share: every num_input_pipelines-th file from input_pipeline_id.

    Raises:
        L3Error: fewer files than input pipelines.
    """
    files = list(files)
    if input_context is not None and input_context.num_input_pipelines > 1:
        count = input_context.num_input_pipelines
        if len(files) < count:
            raise L3Error(f"{len(files)} shard file(s) cannot feed {count} input pipelines; "
                          f"prepare with more, smaller shards (--videos-per-shard).")
        files = files[input_context.input_pipeline_id::count]
    return files


def prepared_with(files: Sequence[str]) -> Optional[DataConfig]:
    """The DataConfig in the manifest(s) beside `files`; None if no folder of theirs has one.

    Raises:
        L3Error: manifests that disagree (shards prepared with other settings mixed together).
    """
    found = {}  # manifest path -> DataConfig
    for folder in sorted({os.path.dirname(f) for f in files}):
        whole = os.path.join(folder, MANIFEST)
        paths = [whole] if tf.io.gfile.exists(whole) else sorted(
            tf.io.gfile.glob(os.path.join(folder, MANIFEST_PARTS)))
        for path in paths:
            with tf.io.gfile.GFile(path) as f:
                found[path] = DataConfig.from_dict(json.load(f)["data_config"])
    if not found:
        return None
    (first_path, first), *rest = found.items()
    for path, config in rest:
        if config != first:
            raise L3Error(f"{path} and {first_path} record other preparation settings; train on "
                          "shards prepared alike (one `l3 prepare` setting) or prepare again.")
    return first


def check(files, model_config: ModelConfig, what: str = "training") -> ShardSet:
    """Opens every shard and checks the set fits `model_config`, before any training.

    Reads the first record of every shard (readable, not all empty, one sample rate), the settings
    the set was prepared with (manifest, else the first record: its sample rate and frame size),
    and makes sure the set holds at least 2 distinct videos (negatives come from another video).

    Args:
        files: shard paths, a glob, a prepared folder, or a ShardSet (already read: only its
            fit to `model_config` is checked, no file is opened again).
        model_config: the model the pairs are for.
        what: names the set in messages ("training", "validation", "held-out").

    Returns:
        the checked ShardSet.

    Raises:
        L3Error: no files, unreadable or all-empty shards, settings that do not fit the model,
            fewer than 2 distinct videos.
    """
    if isinstance(files, ShardSet):
        check_fits(model_config, files.sample_rate, files.frame_short_side, f"The {what} shards")
        return files
    files = list_shards(files)
    if not files:
        raise L3Error(f"No record files for {what}; run `l3 prepare` first or check the "
                      "path/pattern given.")
    heads = {path: _first_record(path, what) for path in files}
    first = next((r for r in heads.values() if r is not None), None)
    if first is None:
        raise L3Error(f"All {len(files)} {what} shard(s) are empty; prepare the videos again.")
    settings = prepared_with(files)
    if settings is not None:
        rate, short_side = settings.sample_rate, settings.frame_short_side
    else:
        rate = int(first["sample_rate"])
        short_side = int(min(tf.image.extract_jpeg_shape(first["frames"][0]).numpy()[:2]))
    for path, head in heads.items():
        if head is not None and int(head["sample_rate"]) != rate:
            raise L3Error(f"{path} holds audio at {int(head['sample_rate'])} Hz but its set was "
                          f"prepared at {rate} Hz; use {what} shards prepared alike.")
    check_fits(model_config, rate, short_side, f"The {what} shards")
    _check_two_videos(files, heads, what)
    return ShardSet(tuple(files), settings, rate, short_side)


def _first_record(path: str, what: str) -> Optional[dict]:
    try:
        head = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
        return None if head is None else records.parse_example(head)
    except (tf.errors.OpError, ValueError):
        raise L3Error(f"Cannot read {what} shard {path}; prepare it again or remove it.") from None


def _check_two_videos(files, heads: dict, what: str) -> None:
    """Pairs need 2 distinct videos; reads on past the first records only when they share one."""
    ids = {bytes(h["video_id"].numpy()) for h in heads.values() if h is not None}
    if len(ids) >= 2:
        return
    spec = {"video_id": records.FEATURES["video_id"]}
    for serialized in tf.data.TFRecordDataset(list(files)):
        ids.add(bytes(tf.io.parse_single_example(serialized, spec)["video_id"].numpy()))
        if len(ids) >= 2:
            return
    raise L3Error(f"Pairs need at least 2 distinct videos (negatives come from another video); "
                  f"the {len(files)} {what} shard(s) hold {len(ids)}.")


def split(files: Sequence[str], val_fraction: float) -> Tuple[List[str], List[str]]:
    """(train, val): every round(1 / val_fraction)-th shard, from the middle one, is held out.

    Raises:
        L3Error: fewer than 2 shards, or a fraction outside (0, 0.5].
    """
    files = sorted(files)
    if not 0 < val_fraction <= 0.5:
        raise L3Error(f"val_fraction must be in (0, 0.5]; got {val_fraction}.")
    if len(files) < 2:
        raise L3Error(f"Holding out videos needs at least 2 shards, found {len(files)}; prepare "
                      "with a smaller videos_per_shard or give --val-data.")
    step = max(2, int(round(1 / val_fraction)))
    val = files[step // 2::step] or files[:1]
    return [f for f in files if f not in val], val


def labels_by_video(files) -> dict:
    """{video_id: label} of labelled shards (label "" when unlabelled)."""
    spec = {k: records.FEATURES[k] for k in ("video_id", "label")}
    out = {}
    for serialized in tf.data.TFRecordDataset(list_shards(files)):
        ex = tf.io.parse_single_example(serialized, spec)
        out[ex["video_id"].numpy().decode()] = ex["label"].numpy().decode()
    return out
