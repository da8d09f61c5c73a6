"""The audio-visual correspondence (AVC) pair stream (paper Sec. 3.3).

Elements are `({"image": float32 [H, W, 3] in [0, 1], "audio": float32 [samples] in [-1, 1]},
label int32)`: label 1 when the 1 s of audio contains the moment the frame was shown (a positive),
0 when the audio comes from a different video (a negative). `samples` is
`model_config.audio_samples` (sample_rate x 1 s) and [H, W] its image_size.

Pipeline (one path for shards and for videos read directly):

    records --sample_record--> per-record samples (frame JPEG + its time, the 1 s window that
        contains it, one random 1 s window for negatives; int16)
    --shuffle--> blocks of `PairOptions.block_size` --pair_block--> exactly half positives; every
        negative gets the random window of a block-mate from another video_id
    --unbatch--> decode only the crop of the JPEG, augment, int16 -> float --batch--> per replica

With `PairOptions.positives_only` (in-batch negatives) there are no blocks: every sample becomes a
positive labelled with its video's key, and the loss makes the negatives (`train.objective`).

`sample_record` is the ONE function that picks timestamps, so positives overlap by construction.
Every random choice is a stateless op keyed by (seed, element index), so the same seed gives the
same pairs, and the evaluation stream (training=False) is the same set of pairs on every pass.
"""
from __future__ import annotations

import dataclasses
import logging
import random
from typing import Iterable, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from l3_keras.config import DataConfig, ModelConfig, check_fits
from l3_keras.data import records, shards
from l3_keras.errors import L3Error

AUTOTUNE = tf.data.AUTOTUNE
GAIN_DB = 6.0  # training audio gain is uniform in +-GAIN_DB
BRIGHTNESS_DELTA = 0.12  # training brightness jitter, added to [0, 1] pixels
SATURATION_RANGE = (0.7, 1.3)  # training saturation factor
# Salts that make the stateless seeds of different stages independent of one another.
_SAMPLE, _PAIR, _AUGMENT, _FILES, _SHUFFLE = range(5)

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PairOptions:
    """Tuning knobs of the pair stream: throughput and mixing, never what a pair is.

    Attributes:
        pairs_per_video: pairs drawn from each parsed record (one video). Parsing a 10 s
            paper-size record costs about as much as augmenting one pair, so 2-4 raise throughput
            (benchmarks/pairs.py prints the figures); the shuffle buffer spreads a video's pairs
            apart. Training takes TrainConfig.pairs_per_video.
        block_size: samples paired together (negatives come from block-mates); each block is
            exactly half positives.
        shuffle_buffer: samples in the training shuffle buffer; each holds a JPEG and 2 s of int16
            audio (~200 KB at 48 kHz).
        cycle_length: shards read in parallel (interleaved).
        positives_only: every element a positive (no blocks, no negatives), labelled with its
            video's key (`video_key`) instead of 1: the stream of in-batch negatives
            (TrainConfig.negatives="batch"), whose loss needs to know which pairs share a video.
    """

    pairs_per_video: int = 1
    block_size: int = 64
    shuffle_buffer: int = 512
    cycle_length: int = 8
    positives_only: bool = False


def video_key(video_id: tf.Tensor) -> tf.Tensor:
    """int32 >= 0 per video id (a hash): equal for pairs of one video, almost never otherwise."""
    return tf.cast(tf.strings.to_hash_bucket_fast(video_id, 2**31 - 1), tf.int32)


def _key(seed: tf.Tensor, salt: int, index: tf.Tensor) -> tf.Tensor:
    """A stateless-op seed [2] for (`seed`, stage `salt`, element `index`)."""
    base = tf.stack([tf.cast(seed, tf.int64), tf.constant(salt, tf.int64)])
    return tf.random.experimental.stateless_fold_in(base, tf.cast(index, tf.int64))


# ----------------------------------------------------------------------------------------------
# The sampler: the only place that picks times.


def sample_record(record: dict, key: tf.Tensor, num_samples: int, window: int,
                  context: int = 0) -> dict:
    """Picks `num_samples` frames of one record and, for each, the 1 s window that contains it.

    For a frame shown at t seconds (sample ts = round(t * sr)), the positive window starts
    uniformly in [max(0, ts - window), min(ts, N - window)] samples, so it always contains ts; the
    frame is drawn uniformly among frames with 0 <= t <= N / sr (frames after the audio ends have
    no window). A second, unrelated window (uniform start) is what other videos get as a negative.

    Args:
        record: from `records.parse_example`: audio int16 [N], frames string [F],
            frame_times float32 [F], video_id, sample_rate.
        key: stateless seed [2].
        num_samples: S, samples drawn from this record (frames may repeat).
        window: samples in one audio window (model_config.audio_samples).
        context: samples of the record's own audio (zeros beyond its ends) kept on each side of
            every window, for edge-free models (model_config.audio_context_samples).

    Returns:
        dict of [S]-leading tensors: video_id string, frame string (JPEG), frame_time float32,
        pos_start int32, pos_audio int16 [S, window + 2 context], neg_start int32, neg_audio.
    """
    audio, times = record["audio"], record["frame_times"]
    n = tf.shape(audio)[0]
    sr = tf.cast(record["sample_rate"], tf.float32)
    k_frame, k_pos, k_neg = tf.unstack(tf.random.experimental.stateless_split(key, 3))
    # Uniform over valid frames: the argmax of random scores with invalid frames masked out.
    valid = _frames_in_audio(record)
    scores = tf.random.stateless_uniform([num_samples, tf.shape(times)[0]], k_frame)
    index = tf.argmax(tf.where(valid[None, :], scores, -1.0), axis=1, output_type=tf.int32)
    frame_time = tf.gather(times, index)
    ts = tf.clip_by_value(tf.cast(tf.round(frame_time * sr), tf.int32), 0, n)
    lo, hi = tf.maximum(0, ts - window), tf.minimum(ts, n - window)
    pos_start = lo + _uniform_int(k_pos, [num_samples], hi - lo + 1)
    neg_start = _uniform_int(k_neg, [num_samples], tf.fill([num_samples], n - window + 1))
    padded = tf.pad(audio, [[context, context]])  # window at `start` begins at padded[start]
    return {
        "video_id": tf.fill([num_samples], record["video_id"]),
        "frame": tf.gather(record["frames"], index),
        "frame_time": frame_time,
        "pos_start": pos_start,
        "pos_audio": _windows(padded, pos_start, window + 2 * context),
        "neg_start": neg_start,
        "neg_audio": _windows(padded, neg_start, window + 2 * context),
    }


def _frames_in_audio(record):
    """bool [F]: frames shown while the audio plays (0 <= t <= duration); only they get windows."""
    times = record["frame_times"]
    duration = tf.cast(tf.shape(record["audio"])[0], tf.float32)
    return (times >= 0.0) & (times * tf.cast(record["sample_rate"], tf.float32) <= duration)


def _uniform_int(key, shape, count):
    """Integers uniform in [0, count) (count int32 [shape], all >= 1)."""
    u = tf.random.stateless_uniform(shape, key)
    return tf.minimum(tf.cast(u * tf.cast(count, tf.float32), tf.int32), count - 1)


def _windows(audio, starts, window):
    """int16 [S, window]: audio[starts[s] : starts[s] + window] for each s (S static).

    S contiguous slices copy memory; a gather with an [S, window] index matrix is ~6x slower.
    """
    num = starts.shape[0]
    return tf.ensure_shape(tf.stack([audio[s:s + window] for s in tf.unstack(starts, num=num)]),
                           [num, window])


def pair_block(block: dict, key: tf.Tensor) -> dict:
    """Makes positives and negatives within a block of samples from `sample_record`.

    Exactly floor(B / 2) elements (chosen at random) become negatives; each takes the random
    window of a block-mate with a different video_id (uniform among those). The caller drops
    blocks with a single video_id, which have no negatives to give.

    Args:
        block: sample_record's dict with a leading block dimension B instead of S.
        key: stateless seed [2].

    Returns:
        dict: frame string [B], audio int16 [B, window], label int32 [B], and metadata
        video_id, audio_video_id, frame_time float32 (s), audio_start float32 (s, in the audio's
        own video; set by the caller's sample rate).
    """
    ids = block["video_id"]
    size = tf.shape(ids)[0]
    k_label, k_partner = tf.unstack(tf.random.experimental.stateless_split(key, 2))
    rank = tf.argsort(tf.random.stateless_uniform([size], k_label))
    negative = tf.scatter_nd(rank[:, None], tf.range(size) < size // 2, [size])
    scores = tf.random.stateless_uniform([size, size], k_partner)
    other = tf.not_equal(ids[:, None], ids[None, :])
    partner = tf.argmax(tf.where(other, scores, -1.0), axis=1, output_type=tf.int32)

    def pick(own, others):
        # Negatives take the partner's row of `others`, positives keep their own row.
        mask = tf.reshape(negative, [-1] + [1] * (own.shape.rank - 1))
        return tf.where(mask, tf.gather(others, partner), own)

    return {
        "frame": block["frame"],
        "audio": pick(block["pos_audio"], block["neg_audio"]),
        "label": tf.cast(tf.logical_not(negative), tf.int32),
        "video_id": ids,
        "audio_video_id": pick(ids, ids),
        "frame_time": block["frame_time"],
        "audio_start": pick(block["pos_start"], block["neg_start"]),
    }


def _positive(sample: dict) -> dict:
    """One sample of `sample_record` as a positive pair, labelled with its video's key."""
    return {"frame": sample["frame"], "audio": sample["pos_audio"],
            "label": video_key(sample["video_id"]), "video_id": sample["video_id"],
            "audio_video_id": sample["video_id"], "frame_time": sample["frame_time"],
            "audio_start": sample["pos_start"]}


# ----------------------------------------------------------------------------------------------
# Per-element decoding and augmentation


def decode_image(jpeg, key, crop, training: bool):
    """float32 [height, width, 3] in [0, 1]: a random (training) or centre crop, decoded alone.

    Args:
        crop: (height, width), the model's image_size.
    """
    crop_h, crop_w = crop
    shape = tf.image.extract_jpeg_shape(jpeg)
    h, w = shape[0], shape[1]
    tf.debugging.assert_greater_equal(
        tf.minimum(h - crop_h, w - crop_w), 0,
        message=f"A stored frame is smaller than the {crop_h}x{crop_w} crop; prepare the data "
                f"with DataConfig.for_model of the preset.")
    k_y, k_x, k_flip, k_bright, k_sat = tf.unstack(tf.random.experimental.stateless_split(key, 5))
    if training:
        y = _uniform_int(k_y, [], h - crop_h + 1)
        x = _uniform_int(k_x, [], w - crop_w + 1)
    else:
        y, x = (h - crop_h) // 2, (w - crop_w) // 2
    image = tf.io.decode_and_crop_jpeg(jpeg, tf.stack([y, x, crop_h, crop_w]), channels=3)
    image = tf.image.convert_image_dtype(image, tf.float32)
    if training:
        image = tf.image.stateless_random_flip_left_right(image, k_flip)
        image = _colour_jitter(image, k_bright, k_sat)
    return tf.ensure_shape(image, [crop_h, crop_w, 3])


def _colour_jitter(image, k_bright, k_sat):
    """Random saturation and brightness as ONE 3x3 colour matrix plus an offset, then clipped.

    Saturation blends each pixel with its luma (BT.601), as PIL's ImageEnhance.Color and
    torchvision do; the fused matrix costs about half of tf.image's HSV round trip, which was the
    most expensive step of the pipeline.
    """
    factor = tf.random.stateless_uniform([], k_sat, *SATURATION_RANGE)
    delta = tf.random.stateless_uniform([], k_bright, -BRIGHTNESS_DELTA, BRIGHTNESS_DELTA)
    luma = tf.constant([[0.299, 0.587, 0.114]])
    matrix = factor * tf.eye(3) + (1.0 - factor) * tf.tile(luma, [3, 1])
    pixels = tf.matmul(tf.reshape(image, [-1, 3]), matrix, transpose_b=True) + delta
    return tf.reshape(tf.clip_by_value(pixels, 0.0, 1.0), tf.shape(image))


def to_float_audio(pcm16, key, training: bool):
    """float32 [window] in [-1, 1]; training applies a random gain of +-GAIN_DB.

    The gained waveform is clipped to [-1, 1], as a real recorder would saturate, so inputs stay
    in the range the spectrogram front end sees at inference.
    """
    audio = tf.cast(pcm16, tf.float32) / 32768.0
    if training:
        gain_db = tf.random.stateless_uniform([], key, -GAIN_DB, GAIN_DB)
        audio = tf.clip_by_value(audio * tf.pow(10.0, gain_db / 20.0), -1.0, 1.0)
    return audio


# ----------------------------------------------------------------------------------------------
# Dataset assembly


def _pairs_from_records(
    records_ds: tf.data.Dataset,
    model_config: ModelConfig,
    *,
    training: bool,
    seed: int,
    batch_size: Optional[int],
    options: PairOptions,
    with_metadata: bool,
) -> tf.data.Dataset:
    """Parsed records -> (inputs, label[, metadata]) elements; shared by shards and direct mode.

    The records' sample rate was checked against the model before (`shards.check`, `check_fits`).
    """
    window = model_config.audio_samples
    crop = tuple(model_config.image_size)
    sr = float(model_config.sample_rate)

    def usable(record):
        # Too short for one window, or no frame inside the audio: nothing to sample.
        return (tf.shape(record["audio"])[0] >= window) & tf.reduce_any(_frames_in_audio(record))

    ds = records_ds.filter(usable).enumerate().map(
        lambda i, r: sample_record(r, _key(seed, _SAMPLE, i), options.pairs_per_video, window,
                                   model_config.audio_context_samples),
        num_parallel_calls=AUTOTUNE)
    ds = ds.unbatch()
    if training:
        ds = ds.shuffle(options.shuffle_buffer, seed=seed + _SHUFFLE, reshuffle_each_iteration=True)
    if options.positives_only:
        ds = ds.map(_positive, num_parallel_calls=AUTOTUNE).enumerate()
    else:
        ds = ds.batch(options.block_size).filter(
            lambda b: tf.reduce_any(b["video_id"] != b["video_id"][0]))
        ds = ds.enumerate().map(lambda i, b: pair_block(b, _key(seed, _PAIR, i)),
                                num_parallel_calls=AUTOTUNE)
        ds = ds.unbatch().enumerate()

    def finish(i, e):
        k_image, k_audio = tf.unstack(tf.random.experimental.stateless_split(
            _key(seed, _AUGMENT, i), 2))
        inputs = {"image": decode_image(e["frame"], k_image, crop, training),
                  "audio": to_float_audio(e["audio"], k_audio, training)}
        if not with_metadata:
            return inputs, e["label"]
        meta = {"video_id": e["video_id"], "audio_video_id": e["audio_video_id"],
                "frame_time": e["frame_time"],
                "audio_start": tf.cast(e["audio_start"], tf.float32) / sr}
        return inputs, e["label"], meta

    ds = ds.map(finish, num_parallel_calls=AUTOTUNE)
    if batch_size:
        ds = ds.batch(batch_size, drop_remainder=training, num_parallel_calls=AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).prefetch(AUTOTUNE)


def make_pair_dataset(
    files,
    model_config: ModelConfig,
    *,
    training: bool,
    seed: int = 0,
    batch_size: Optional[int] = None,
    input_context: Optional[tf.distribute.InputContext] = None,
    repeat: Optional[bool] = None,
    with_metadata: bool = False,
    options: PairOptions = PairOptions(),
) -> tf.data.Dataset:
    """AVC pairs from prepared TFRecord shards.

    Args:
        files: a `shards.ShardSet` (checked), or shard paths, a glob pattern, or a folder written
            by `prepare`, which are checked here (`shards.check`).
        model_config: gives the audio window (audio_samples) and the crop (image_size).
        training: random crop, flip, brightness/saturation jitter and +-6 dB gain, shuffling and
            endless repetition; otherwise a centre crop, no jitter, one pass, same pairs each pass.
        seed: all random choices derive from it (stateless); same seed, same pairs.
        batch_size: batch size, or with `input_context` the GLOBAL batch (each pipeline batches
            per replica); None yields single pairs.
        input_context: from `distribute_datasets_from_function`; this pipeline reads every
            num_input_pipelines-th file starting at input_pipeline_id.
        repeat: repeat forever; default `training`.
        with_metadata: elements become (inputs, label, metadata) with video_id, audio_video_id,
            frame_time (s) and audio_start (s) — for tests and debugging, not for `fit`.
        options: tuning knobs (pairs per video, block, shuffle buffer, parallel shards).

    Returns:
        tf.data.Dataset of ({"image": float32 [height, width, 3] in [0, 1],
        "audio": float32 [audio_samples] in [-1, 1]}, label int32), batched if batch_size.

    Raises:
        L3Error: shards that `shards.check` refuses, or fewer files than pipelines.
    """
    files = shards.for_pipeline(shards.check(files, model_config).files, input_context)
    if input_context is not None:
        seed = seed + 7919 * input_context.input_pipeline_id  # pipelines draw different pairs
        if batch_size:
            batch_size = input_context.get_per_replica_batch_size(batch_size)
    repeat = training if repeat is None else repeat
    file_ds = tf.data.Dataset.from_tensor_slices(files)
    if training:
        file_ds = file_ds.shuffle(len(files), seed=seed + _FILES, reshuffle_each_iteration=True)
    if repeat:
        file_ds = file_ds.repeat()
    records_ds = file_ds.interleave(
        tf.data.TFRecordDataset, cycle_length=min(options.cycle_length, len(files)),
        num_parallel_calls=AUTOTUNE, deterministic=True,
    ).map(records.parse_example, num_parallel_calls=AUTOTUNE)
    return _pairs_from_records(records_ds, model_config, training=training, seed=seed,
                               batch_size=batch_size, options=options, with_metadata=with_metadata)


def distributed_pair_dataset(strategy: tf.distribute.Strategy, files, model_config: ModelConfig,
                             *, global_batch: int, training: bool, seed: int = 0,
                             options: PairOptions = PairOptions()) -> tf.distribute.DistributedDataset:
    """`make_pair_dataset` for every input pipeline of `strategy`, batched per replica.

    Args:
        files: as for make_pair_dataset; checked once here, not once per pipeline.
        global_batch: pairs per step over all replicas (paper: 16 per GPU).
    """
    checked = shards.check(files, model_config)

    def dataset_fn(input_context):
        return make_pair_dataset(checked, model_config, training=training, seed=seed,
                                 batch_size=global_batch, input_context=input_context,
                                 options=options)

    return strategy.distribute_datasets_from_function(dataset_fn)


# ----------------------------------------------------------------------------------------------
# Direct mode: videos decoded on the fly, no shards.

_RECORD_SIGNATURE = {
    "video_id": tf.TensorSpec([], tf.string),
    "label": tf.TensorSpec([], tf.string),
    "sample_rate": tf.TensorSpec([], tf.int64),
    "audio": tf.TensorSpec([None], tf.int16),
    "frames": tf.TensorSpec([None], tf.string),
    "frame_times": tf.TensorSpec([None], tf.float32),
}


def _decoded_records(paths: List[str], data_config: DataConfig, repeat: bool, seed: int,
                     skipped: Optional[list]) -> Iterable[dict]:
    """Yields decoded videos as parsed-record dicts; bad files are logged once and skipped.

    Raises:
        L3Error: after the first pass, when fewer than 2 files decoded (no negatives possible;
            without this check a repeating stream would wait forever for a usable block).
    """
    from l3_keras.data.video import VideoError, decode_video  # decoding needs PyAV, only here

    bad, epoch = set(), 0
    while True:
        order = list(paths)
        if repeat:
            random.Random(seed + epoch).shuffle(order)
        for path in order:
            if path in bad:
                continue
            try:
                video = decode_video(path, data_config)
            except VideoError as err:
                bad.add(path)
                if skipped is not None:
                    skipped.append((path, str(err)))
                _log.warning("skipping %s (%d bad so far): %s", path, len(bad), err)
                continue
            yield {"video_id": video.video_id, "label": video.label,
                   "sample_rate": np.int64(video.sample_rate),
                   "audio": np.asarray(video.audio, np.int16),
                   "frames": np.array(video.frames, dtype=object),
                   "frame_times": np.asarray(video.frame_times, np.float32)}
        if len(paths) - len(bad) < 2:
            raise L3Error(f"Only {len(paths) - len(bad)} of {len(paths)} videos decoded; pairs "
                          "need at least 2 (negatives come from another video).")
        epoch += 1
        if not repeat:
            return


def make_pair_dataset_from_videos(
    paths: Sequence[str],
    model_config: ModelConfig,
    data_config: DataConfig,
    *,
    training: bool,
    seed: int = 0,
    batch_size: Optional[int] = None,
    repeat: Optional[bool] = None,
    skipped: Optional[list] = None,
    with_metadata: bool = False,
    options: PairOptions = PairOptions(),
) -> tf.data.Dataset:
    """AVC pairs straight from video files, decoded on the fly with `video.decode_video`.

    The same sampler as `make_pair_dataset`, without preparing shards; decoding runs in one Python
    thread, so this suits small collections and quick checks. Files that fail to decode are
    skipped with a one-line log (and appended as (path, reason) to `skipped` when given).

    Args:
        paths: video files (at least 2 that decode).
        data_config: decoding settings (DataConfig.for_model of the preset, maybe with changes).
        repeat: cycle over the files forever (reshuffled each pass); default `training`.
        skipped: optional list that collects (path, reason) for every skipped file.
        Other arguments: as in make_pair_dataset.

    Returns:
        the same element spec as make_pair_dataset.

    Raises:
        L3Error: fewer than 2 paths, or decoding settings that do not fit the model.
    """
    check_fits(model_config, data_config.sample_rate, data_config.frame_short_side,
               "The decoding settings (DataConfig)")
    paths = sorted(map(str, paths))
    if len(paths) < 2:
        raise L3Error(f"Pairs need at least 2 videos (negatives come from another video); "
                      f"got {len(paths)}.")
    repeat = training if repeat is None else repeat
    records_ds = tf.data.Dataset.from_generator(
        lambda: _decoded_records(paths, data_config, repeat, seed, skipped),
        output_signature=_RECORD_SIGNATURE)
    return _pairs_from_records(records_ds, model_config, training=training, seed=seed,
                               batch_size=batch_size, options=options, with_metadata=with_metadata)
