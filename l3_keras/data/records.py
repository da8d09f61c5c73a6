"""TFRecord layout: one `tf.train.Example` per video (a `video.DecodedVideo`), and shard writing.

A record keeps everything the pair sampler needs, on ONE time axis whose origin (t = 0) is the first
audio sample: audio sample k plays at k / sample_rate seconds, frame i is shown at frame_times[i].

Features:
    video_id     bytes     stable id (path relative to the collection root)
    label        bytes     class name for labelled collections, b"" otherwise
    sample_rate  int64     Hz of `audio_pcm16`
    audio_pcm16  bytes     mono int16 little-endian PCM
    frames       bytes[F]  JPEG frames (short side = DataConfig.frame_short_side)
    frame_times  float[F]  presentation time of each frame, seconds, increasing
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import tensorflow as tf

from l3_keras import files


def _bytes(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def encode_example(video) -> bytes:
    """Serialises a `video.DecodedVideo` into a tf.train.Example string."""
    feature = {
        "video_id": _bytes([video.video_id.encode()]),
        "label": _bytes([video.label.encode()]),
        "sample_rate": tf.train.Feature(int64_list=tf.train.Int64List(value=[video.sample_rate])),
        "audio_pcm16": _bytes([np.asarray(video.audio, "<i2").tobytes()]),
        "frames": _bytes(list(video.frames)),
        "frame_times": tf.train.Feature(
            float_list=tf.train.FloatList(value=np.asarray(video.frame_times, np.float32))
        ),
    }
    # deterministic: map entries sorted by key, so the same video gives the same bytes in any
    # process (the default order varies from process to process).
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString(deterministic=True)


FEATURES = {
    "video_id": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "sample_rate": tf.io.FixedLenFeature([], tf.int64),
    "audio_pcm16": tf.io.FixedLenFeature([], tf.string),
    "frames": tf.io.RaggedFeature(tf.string),
    "frame_times": tf.io.RaggedFeature(tf.float32),
}


def parse_example(serialized: tf.Tensor) -> dict:
    """Parses one serialized record (graph-safe, for `tf.data.Dataset.map`).

    Returns:
        dict with video_id (string), label (string), sample_rate (int64),
        audio (int16 [samples]), frames (string [F]), frame_times (float32 [F]).
    """
    ex = tf.io.parse_single_example(serialized, FEATURES)
    return {
        "video_id": ex["video_id"],
        "label": ex["label"],
        "sample_rate": ex["sample_rate"],
        "audio": tf.io.decode_raw(ex["audio_pcm16"], tf.int16, little_endian=True),
        "frames": ex["frames"],
        "frame_times": ex["frame_times"],
    }


def write_shard(path: str, serialized_examples: Iterable[bytes]) -> int:
    """Writes records to `path` atomically (`files.atomic_write`).

    A reader (or a resumed run) never sees a half-written shard under its final name.

    Returns:
        the number of records written.
    """
    n = 0
    with files.atomic_write(path) as tmp, tf.io.TFRecordWriter(tmp) as writer:
        for ex in serialized_examples:
            writer.write(ex)
            n += 1
    return n
