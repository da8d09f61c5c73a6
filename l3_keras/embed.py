"""Embeddings from audio, images and videos (the OpenL3-style API).

Time axis: every timestamp is in seconds from the first audio sample (t = 0), the axis that
`l3_keras.data.video` decodes to, and says which instant the embedding describes:

- audio: the CENTRE of the 1 s window. With center=True (default) the signal is padded with
  half a window of zeros at both ends, so window k spans [k * hop - 0.5, k * hop + 0.5] and its
  timestamp is k * hop: 0, 0.1, 0.2, ... for hop 0.1 (the same numbers OpenL3 reports, which it
  calls window starts in the padded signal). With center=False window k spans
  [k * hop, k * hop + 1] and its timestamp is k * hop + 0.5.
- images / video frames: the time the frame is shown.
So an audio embedding and an image embedding with the same timestamp describe the same moment.

Audio shorter than one window gives exactly one window, zero-padded at the end (center=False)
or on both sides (center=True). Empty audio raises L3Error.

Models whose config says framing="openl3" (the `openl3-*` presets, `l3 import-openl3`) are cut
as OpenL3's get_audio_embedding does, so frame counts and timestamps equal OpenL3's: center=True
pads half a window at the START only, windows run until one reaches the last sample (the end is
zero-padded to it), the hop is int(hop_size * rate) samples, and timestamps are k * hop_size
(window centres with center=True, window STARTS with center=False, as OpenL3 reports them).
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import warnings
from typing import Optional

import keras
import numpy as np
import soxr

from l3_keras import embed_stream, models
from l3_keras.config import PRESETS, ModelConfig, get_preset
from l3_keras.errors import L3Error


@dataclasses.dataclass
class EmbeddingModels:
    """The two towers of one L3 model and its config.

    Attributes:
        config: ModelConfig (sample rate, window, image size).
        audio: waveform float32 [b, S] -> [b, D] (or [[b, D], [b, 4*3*D]] with transfer features).
        image: image float32 [b, H, W, 3] in [0, 1] -> [b, D] (same with transfer features), or
            None for an export without an image tower.
        transfer_features: whether the models also return the conv4 features.
    """

    config: ModelConfig
    audio: keras.Model
    image: keras.Model
    transfer_features: bool = False

    @classmethod
    def from_l3(cls, l3, config: ModelConfig, transfer_features=False) -> "EmbeddingModels":
        """Cuts the towers out of an AVC model (built, trained or loaded)."""
        return cls(
            config,
            models.audio_embedding_model(l3, config, transfer_features),
            models.image_embedding_model(l3, config, transfer_features),
            transfer_features,
        )

    def with_precision(self, precision: Optional[str]) -> "EmbeddingModels":
        """The same weights computing in mixed precision: "bf16" or "fp16" (None: self).

        The towers are rebuilt under the Keras policy (`train.strategy.precision`), so the
        layers `models` keeps in float32 (spectrogram front end, input BatchNorm) stay float32;
        embeddings come back as float32.
        """
        if precision is None:
            return self
        from l3_keras.train.strategy import precision as policy

        with policy(precision):
            fresh = EmbeddingModels.from_l3(models.build_l3(self.config), self.config,
                                            self.transfer_features)
        if self.image is None:  # an audio-only import
            fresh = dataclasses.replace(fresh, image=None)
        for old, new in ((self.audio, fresh.audio), (self.image, fresh.image)):
            for layer in new.layers if old is not None else ():
                if layer.weights:
                    layer.set_weights(old.get_layer(layer.name).get_weights())
        return fresh


def load_embedding_models(path, transfer_features=False) -> EmbeddingModels:
    """Loads an export folder written by `l3 export` (saved_models/NAME).

    Args:
        path: export folder with config.json, audio_embedding.keras and image_embedding.keras.
        transfer_features: also return the conv4 features (cut from l3.keras instead).

    Raises:
        L3Error: if the folder is not an export.
    """
    from l3_keras.export import EXPORT_MODEL, read_config

    path = pathlib.Path(path)
    files = [EXPORT_MODEL] if transfer_features else ["audio_embedding.keras"]
    missing = [f for f in ["config.json", *files] if not (path / f).exists()]
    if missing:
        raise L3Error(f"{path} is not an export folder (missing {', '.join(missing)}); run `l3 export`.")
    cfg = read_config(path)
    image_file = path / "image_embedding.keras"  # absent: imported without an image tower
    if transfer_features:
        found = EmbeddingModels.from_l3(keras.models.load_model(path / EXPORT_MODEL), cfg, True)
        return dataclasses.replace(found, image=found.image if image_file.exists() else None)
    audio = keras.models.load_model(path / files[0])
    image = keras.models.load_model(image_file) if image_file.exists() else None
    return EmbeddingModels(cfg, audio, image)


def resolve_models(model, transfer_features=False, precision=None) -> EmbeddingModels:
    """`model` as EmbeddingModels.

    Args:
        model: EmbeddingModels; an export folder path; or a preset name / ModelConfig, which
            builds a model with RANDOM weights (warns; for tests and benchmarks).
        transfer_features: wanted conv4 features (must match a given EmbeddingModels).
        precision: None (float32), "bf16" or "fp16": `EmbeddingModels.with_precision`. Resolve
            once and pass the result when embedding many files (rebuilding takes seconds).
    """
    return _resolve(model, transfer_features).with_precision(precision)


def _resolve(model, transfer_features) -> EmbeddingModels:
    if isinstance(model, EmbeddingModels):
        if model.transfer_features != transfer_features:
            raise L3Error(
                f"These EmbeddingModels have transfer_features={model.transfer_features}; load "
                f"them with transfer_features={transfer_features}."
            )
        return model
    if isinstance(model, ModelConfig) or (isinstance(model, str) and model in PRESETS):
        cfg = model if isinstance(model, ModelConfig) else get_preset(model)
        warnings.warn(f"Model {cfg.name!r} has random weights; pass an export folder for real embeddings.")
        return EmbeddingModels.from_l3(models.build_l3(cfg), cfg, transfer_features)
    if isinstance(model, (str, os.PathLike)):
        return load_embedding_models(model, transfer_features)
    raise L3Error(f"model must be an export folder, a preset name or EmbeddingModels; got {type(model)}.")


def _with_image(models_: EmbeddingModels) -> EmbeddingModels:
    if models_.image is None:
        raise L3Error("This model has no image tower (an OpenL3 import without --image).")
    return models_


def _as_float(x) -> np.ndarray:
    """Integer PCM / pixels -> float32 in [-1, 1] / [0, 1]; floats pass through."""
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.signedinteger):
        return x.astype(np.float32) / (np.iinfo(x.dtype).max + 1)
    if np.issubdtype(x.dtype, np.unsignedinteger):
        return x.astype(np.float32) / np.iinfo(x.dtype).max
    return x.astype(np.float32)


def prepare_audio(audio, sr: int, cfg: ModelConfig) -> np.ndarray:
    """Any clip -> mono float32 [n] at cfg.sample_rate.

    Args:
        audio: [samples] or [samples, channels] (soundfile's layout), float or integer PCM.
        sr: its sample rate in Hz.

    Raises:
        L3Error: empty audio, more than 2 axes, or a non-positive rate.
    """
    audio = _as_float(audio)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)  # down-mix, as openl3 / librosa.to_mono
    if audio.ndim != 1:
        raise L3Error(f"audio must be [samples] or [samples, channels]; got shape {audio.shape}.")
    if audio.size == 0:
        raise L3Error("audio is empty (0 samples); an embedding needs at least one sample.")
    if sr <= 0:
        raise L3Error(f"sample rate must be positive; got {sr}.")
    if sr != cfg.sample_rate:
        audio = soxr.resample(audio, sr, cfg.sample_rate, quality="HQ").astype(np.float32)
    return audio


def frame_audio(audio, cfg: ModelConfig, hop_size: float, center: bool):
    """Mono audio at the model's rate -> 1 s windows (a strided view) and their centre times.

    The framing of `embed_stream.WindowStream`, given the whole signal at once.

    Returns:
        (windows float32 [T, S] view, timestamps float64 [T] in seconds).
    """
    block, timestamps = embed_stream.frame(audio, cfg, hop_size, center)
    return block.windows(), timestamps


def run_batched(model, arrays, batch_size: int, transfer_features: bool) -> list:
    """Runs `model` over the rows of `arrays` (a list of [n_i, ...]) in batches across arrays.

    Eager calls, not `predict`: no tf.function retracing for each new batch size, and the
    convolutions dominate the time anyway.

    Returns:
        a list of float32 [n_i, D] (or [n_i, 4*3*D] with transfer features), one per array.
    """
    counts = [len(a) for a in arrays]
    flat = [row for a in arrays for row in a]  # rows of strided views: copied batch by batch
    out = []
    for start in range(0, len(flat), batch_size):
        y = model(np.stack(flat[start : start + batch_size]), training=False)
        y = y[1] if transfer_features else y
        out.append(np.asarray(y, np.float32))
    return np.split(np.concatenate(out), np.cumsum(counts)[:-1])


def get_audio_embedding(audio, sr=None, model="paper", hop_size=0.1, center=True, batch_size=32,
                        transfer_features=False, mode="exact", precision=None):
    """Embeds 1 s windows every `hop_size` seconds (see the module docstring for timestamps).

    Args:
        audio: [samples] or [samples, channels] at `sr`; a path to an audio or video file
            (decoded and embedded in chunks: memory does not grow with its length); or a list of
            such clips or paths (windows of arrays are batched together).
        sr: sample rate in Hz, or a list of rates for a list of clips (None for paths). Resampled
            with soxr to the model's rate (48 kHz for the paper model) and down-mixed to mono.
        model: an export folder, EmbeddingModels, or a preset name (random weights, warns).
        hop_size: seconds between window starts (paper Sec. 4.2 uses 1 s windows).
        center: pad half a window at both ends so the first window is centred on t = 0.
        batch_size: windows per forward pass.
        transfer_features: return the conv4 features max-pooled to 4x3 (6144-D for the paper
            model, paper Sec. 4.2) instead of the D-dim embedding.
        mode: "exact" (each window through the tower) or "shared" (the tower once over the
            whole signal, each window pooled from the shared map: faster, NOT the same embedding
            for models trained on padded windows; see `embed_stream`).
        precision: None (float32), "bf16" or "fp16" mixed precision (front end float32).

    Returns:
        (embedding float32 [T, D], timestamps float64 [T] in seconds), or two lists for a list input.

    Raises:
        L3Error: empty audio, bad shapes or rates, an undecodable file.
    """
    models_ = resolve_models(model, transfer_features, precision)
    cfg = models_.config
    clips = audio if isinstance(audio, list) else [audio]
    rates = sr if isinstance(sr, (list, tuple)) else [sr] * len(clips)
    if len(rates) != len(clips):
        raise L3Error(f"Got {len(clips)} clips but {len(rates)} sample rates.")
    results = [None] * len(clips)
    arrays = []
    for i, (clip, rate) in enumerate(zip(clips, rates)):
        if isinstance(clip, (str, os.PathLike)):
            results[i] = embed_stream.embed_audio_file(clip, models_, hop_size, center, batch_size, mode)
        elif rate is None:
            raise L3Error("sr is required for audio arrays (the rate they were recorded at).")
        elif mode == "shared":
            embedder = embed_stream.StreamEmbedder(models_, hop_size, center, batch_size, mode)
            embedder.push(prepare_audio(clip, rate, cfg))
            results[i] = embedder.finish()
        else:
            arrays.append((i, frame_audio(prepare_audio(clip, rate, cfg), cfg, hop_size, center)))
    if arrays:
        embedded = run_batched(models_.audio, [w for _, (w, _) in arrays], batch_size, transfer_features)
        for (i, (_, timestamps)), emb in zip(arrays, embedded):
            results[i] = (emb, timestamps)
    if isinstance(audio, list):
        return [e for e, _ in results], [t for _, t in results]
    return results[0]


def to_rgb(image) -> np.ndarray:
    """One image [h, w], [h, w, 1], [h, w, 3] or [h, w, 4] -> [h, w, 3], dtype kept.

    Grayscale is repeated to three channels; RGBA drops alpha (composited on nothing, like
    PIL's convert("RGB")).
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or min(image.shape[:2]) == 0:
        raise L3Error(f"an image must be [h, w] or [h, w, 1|3|4] with h, w > 0; got {image.shape}.")
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return image[:, :, :3]


def prepare_images(images, cfg: ModelConfig) -> np.ndarray:
    """Images of any size -> float32 [N, H, W, 3] in [0, 1] (`preprocess.fit_images`).

    Args:
        images: one image ([h, w] or [h, w, c]), a batch [n, h, w, c], or a list of images.
            uint8 is 0..255, other integers are scaled by their maximum, floats are in [0, 1].
    """
    from l3_keras.preprocess import fit_images

    if not isinstance(images, list):
        images = np.asarray(images)
        images = list(images) if images.ndim == 4 else [images]
    fitted = []
    for image in images:
        image = to_rgb(image)
        x = image if image.dtype == np.uint8 else _as_float(image)
        fitted.append(fit_images(x[None], cfg.image_size).numpy()[0])
    return np.stack(fitted)


def get_image_embedding(images, model="paper", batch_size=32, transfer_features=False,
                        precision=None):
    """Embeds images (paper Sec. 3.1: the vision tower's 224x224 input).

    Args:
        images: see `prepare_images`; any size (resized to cover the model's size, centre-cropped),
            grayscale or RGBA converted to RGB.
        model: an export folder, EmbeddingModels, or a preset name (random weights, warns).
        batch_size: images per forward pass.
        transfer_features: return the conv4 features instead (see get_audio_embedding).
        precision: None (float32), "bf16" or "fp16" mixed precision.

    Returns:
        float32 [N, D]: one row per image (N = 1 for a single image).
    """
    models_ = _with_image(resolve_models(model, transfer_features, precision))
    x = prepare_images(images, models_.config)
    return run_batched(models_.image, [x], batch_size, transfer_features)[0]


def process_video_file(path, model="paper", hop_size=0.1, center=True, batch_size=32,
                       frame_hop_size: Optional[float] = None, mode="exact", precision=None):
    """Audio and frame embeddings of one video on one time axis, decoded in chunks.

    Decoding is `l3_keras.data.video.stream_streams` (PyAV): default audio and video streams,
    t = 0 at the first audio sample, audio resampled to the model's rate with soxr as it is
    decoded, and padded at the end to the video's end (at most 0.5 s, as `decode_streams`).
    Frames are embedded in batches as they are decoded, so memory does not grow with the
    video's length (only the embeddings do).

    Args:
        path: video file.
        model: an export folder, EmbeddingModels, or a preset name.
        hop_size: seconds between audio windows.
        center: see get_audio_embedding.
        batch_size: windows / frames per forward pass.
        frame_hop_size: seconds between frames; default `hop_size`.
        mode: audio mode, see get_audio_embedding.
        precision: None (float32), "bf16" or "fp16" mixed precision.

    Returns:
        dict with audio_embedding [T, D], audio_timestamps [T] (window centres), image_embedding
        [F, D], image_timestamps [F] (times the frames are shown), all times in seconds.

    Raises:
        L3Error (VideoError): the video cannot be decoded; `.reason` says why.
    """
    from l3_keras.data.video import NO_FRAMES, VideoError, stream_streams, tail_pad_seconds
    from l3_keras.preprocess import decode_images

    models_ = _with_image(resolve_models(model, precision=precision))
    cfg = models_.config
    audio = embed_stream.StreamEmbedder(models_, hop_size, center, batch_size, mode)
    chunks = embed_stream.ChunkedAudio(cfg.sample_rate, audio.push)
    jpegs, times, image_embedding = [], [], []

    def embed_frames():
        frames = decode_images(np.array(jpegs, dtype=object), cfg.image_size).numpy()
        image_embedding.extend(run_batched(models_.image, [frames], batch_size, False))
        jpegs.clear()

    def on_frame(jpeg, t):
        jpegs.append(jpeg)
        times.append(t)
        if len(jpegs) == batch_size:
            embed_frames()

    info = stream_streams(path, chunks, on_frame, video_data_config(cfg, hop_size, frame_hop_size))
    if jpegs:
        embed_frames()
    chunks.finish(tail_pad_seconds(info["samples"] / info["rate"], info["video_end"]))
    audio_embedding, audio_timestamps = audio.finish()
    times = np.asarray(times, np.float64)
    keep = times < chunks.samples / cfg.sample_rate  # frames after the audio's end have no sound
    if not keep.any():
        raise VideoError(str(path), NO_FRAMES)
    return {
        "audio_embedding": audio_embedding,
        "audio_timestamps": audio_timestamps,
        "image_embedding": np.concatenate(image_embedding)[keep],
        "image_timestamps": times[keep],
    }


def video_data_config(cfg: ModelConfig, hop_size=0.1, frame_hop_size: Optional[float] = None):
    """The DataConfig `process_video_file` decodes with: the model's rates, a frame every hop."""
    from l3_keras.config import DataConfig

    return DataConfig.for_model(cfg, fps=1.0 / (frame_hop_size or hop_size), max_seconds=None)


def video_inputs(decoded: dict, cfg: ModelConfig, hop_size=0.1, center=True) -> dict:
    """The two towers' inputs for a decoded video (`video.decode_streams` fields).

    Returns:
        dict with audio (float32 [T, S] windows), audio_timestamps [T] (window centres), image
        (float32 [F, H, W, 3] frames in [0, 1]) and image_timestamps [F], in seconds.
    """
    from l3_keras.preprocess import decode_images

    windows, audio_timestamps = frame_audio(
        prepare_audio(decoded["audio"], decoded["sample_rate"], cfg), cfg, hop_size, center)
    frames = decode_images(np.array(decoded["frames"], dtype=object), cfg.image_size).numpy()
    return {
        "audio": windows,
        "audio_timestamps": audio_timestamps,
        "image": frames,
        "image_timestamps": np.asarray(decoded["frame_times"], np.float64),
    }
