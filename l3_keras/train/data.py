"""Training inputs: videos or shards -> checked shard lists, a held-out split, the validation pairs.

Held-out = whole shards, so whole videos: `split_shards` keeps every k-th shard (sorted by name)
for validation, a deterministic split that no training pair ever comes from.
"""
from __future__ import annotations

import glob
import os
from typing import List, Optional, Sequence, Tuple

import tensorflow as tf

from l3_keras.config import DataConfig, ModelConfig
from l3_keras.data import pairs, records
from l3_keras.errors import L3Error


def resolve_shards(data, data_config: DataConfig, prepared_dir, *, label_from=None,
                   videos_per_shard=None, workers=1) -> List[str]:
    """Shard files for `data`, preparing videos first when `data` is a folder of videos.

    Args:
        data: a folder of *.tfrecord shards (from `prepare`), a glob or list of shard files, or a
            folder / list file of videos, which is prepared into `prepared_dir` (resumably).
        data_config: decoding settings for videos (DataConfig.for_model of the preset).
        prepared_dir: where videos are prepared.
        label_from, videos_per_shard, workers: passed to `prepare`.

    Raises:
        L3Error: nothing there, or no videos in a folder without shards.
    """
    if isinstance(data, (list, tuple)):
        return sorted(os.fspath(p) for p in data)
    data = os.fspath(data)
    if os.path.isdir(data):
        shards = sorted(glob.glob(os.path.join(glob.escape(data), "*.tfrecord")))
        if shards:
            return shards
    elif any(ch in data for ch in "*?[") or data.endswith(".tfrecord"):
        shards = sorted(glob.glob(data))
        if not shards:
            raise L3Error(f"No shard files match {data}; check the path or run `l3 prepare`.")
        return shards
    from l3_keras.data.prepare import prepare  # decoding needs PyAV: only when there are videos

    prepare(data, prepared_dir, data_config, workers=workers, label_from=label_from,
            videos_per_shard=videos_per_shard, progress=False)
    return sorted(glob.glob(os.path.join(glob.escape(os.fspath(prepared_dir)), "*.tfrecord")))


def split_shards(files: Sequence[str], val_fraction: float) -> Tuple[List[str], List[str]]:
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


def check_shards(files: Sequence[str], model_config: ModelConfig, what: str = "training") -> None:
    """Reads the first record of every shard, before any training: fails fast with what to do.

    Raises:
        L3Error: no files, unreadable files, all empty, or records whose sample rate or frame size
            do not fit the model preset.
    """
    if not files:
        raise L3Error(f"No {what} shards; run `l3 prepare` or point --data at prepared shards.")
    first = None
    for path in files:
        try:
            head = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
            if head is not None and first is None:
                first = records.parse_example(head)
        except (tf.errors.OpError, ValueError) as err:
            raise L3Error(f"Cannot read {what} shard {path} ({type(err).__name__}); prepare it "
                          "again or remove it.") from None
    if first is None:
        raise L3Error(f"All {len(files)} {what} shard(s) are empty; prepare the videos again.")
    rate = int(first["sample_rate"])
    if rate != model_config.sample_rate:
        raise L3Error(f"The {what} shards hold audio at {rate} Hz but preset {model_config.name!r} "
                      f"takes {model_config.sample_rate} Hz; prepare with --preset "
                      f"{model_config.name} or choose the preset the data was made for.")
    height, width = tf.image.extract_jpeg_shape(first["frames"][0]).numpy()[:2]
    crop = model_config.image_size[0]
    if min(height, width) < crop:
        raise L3Error(f"The {what} shards hold {height}x{width} frames, smaller than preset "
                      f"{model_config.name!r}'s {crop}x{crop} crop; prepare with --preset "
                      f"{model_config.name}.")


def validation_pairs(files, model_config: ModelConfig, data_config: DataConfig, count: int,
                     batch: Optional[int], seed: int, with_metadata: bool = False):
    """A fixed set of `count` held-out pairs: centre crops, no jitter, same pairs on every pass."""
    ds = pairs.make_pair_dataset(files, model_config, data_config, training=False, repeat=True,
                                 seed=seed, samples_per_record=4, with_metadata=with_metadata)
    ds = ds.take(count)
    # Keras' evaluate() deletes the validation iterator after every epoch, and in TF 2.21 deleting
    # an autotuned iterator can block until its tuning thread next wakes (measured: 36.8 s, idle,
    # after a 45 s epoch). These fixed pairs need no tuning: without it deletion takes 0.2 s.
    options = tf.data.Options()
    options.autotune.enabled = False
    ds = ds.with_options(options)
    return ds.batch(batch) if batch else ds


def labels_by_video(files) -> dict:
    """{video_id: label} of labelled shards (label "" when unlabelled)."""
    spec = {k: records.FEATURES[k] for k in ("video_id", "label")}
    out = {}
    for serialized in tf.data.TFRecordDataset(list(files)):
        ex = tf.io.parse_single_example(serialized, spec)
        out[ex["video_id"].numpy().decode()] = ex["label"].numpy().decode()
    return out
