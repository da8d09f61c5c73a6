"""Long recordings in bounded memory: windows cut from a stream of samples, embedded exactly or
from one shared feature map.

Framing is `WindowStream`'s: the 1 s windows every hop of `embed`'s module docstring, cut from
chunks as they arrive (a window that straddles two chunks is carried over), so a file is never
held whole. `embed.frame_audio` is the same stream fed in one piece.

Modes (`MODES`):

- "exact" (default): every window goes through the audio tower on its own, as in training.
- "shared": the tower runs ONCE over the signal (the centre-padded signal, extended by
  `SharedTower.context` zero samples at both ends) and each window's embedding is the max of
  the shared last conv map over the window's own cells (its frequency cells x the `cells` time
  cells that start at the window's first spectrogram frame). Where the map's time stride (8
  frames for 4 blocks) does not divide a window's start frame, the map is computed at that
  pooling phase too; phases share every layer before the pool where they part (a 0.1 s hop on
  the paper model needs phases 0 and 4, which part only at the third pool).
  What differs from "exact": cells near a window's edges see the real audio beyond the window
  where per-window inference sees the window's zero padding ('same' convolutions) and, for
  the mel front end, its reflect-padded frames. Interior cells are identical. A model trained on
  padded windows puts much of its response at those edges, so for it "shared" is a different
  embedding, not an approximation; models built with audio context (`edge-free`) see the same
  audio in both modes and agree to float tolerance.
  The map is computed in blocks of windows, each with `context` samples of real audio
  around it, which is enough for the block's cells to equal those of one pass over the file.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import numpy as np

from l3_keras.config import ModelConfig
from l3_keras.errors import L3Error, check_choice

MODES = ("exact", "shared")
CHUNK_SECONDS = 10.0  # decoded audio handed on at a time; also the span of one shared block


def hop_samples(hop_size: float, cfg: ModelConfig) -> int:
    """The hop in samples: rounded, or truncated as OpenL3 does for framing "openl3"."""
    exact = hop_size * cfg.sample_rate
    hop = int(exact) if cfg.framing == "openl3" else int(round(exact))
    if hop < 1:
        raise L3Error(f"hop_size {hop_size} s is below one sample at {cfg.sample_rate} Hz.")
    return hop


@dataclasses.dataclass
class Block:
    """Consecutive windows first .. first + count - 1 and the signal they are cut from.

    Attributes:
        signal: float32 [(count - 1) * hop + span]; window first + i is signal[i * hop:][:span].
        first: index of the first window.
        count: number of windows (may be 0).
        hop, span: window step and length in samples (span includes any context).
    """

    signal: np.ndarray
    first: int
    count: int
    hop: int
    span: int

    def windows(self) -> np.ndarray:
        """float32 [count, span]: a strided view, no copy."""
        if not self.count:
            return np.zeros((0, self.span), np.float32)
        return np.lib.stride_tricks.sliding_window_view(self.signal, self.span)[:: self.hop][: self.count]


class WindowStream:
    """Cuts a stream of mono samples (at the model's rate) into `embed`'s windows.

    Window k spans samples [k * hop - left, k * hop - left + S) of the input (left = S / 2 with
    center, else 0; zeros outside the input), plus `context` samples on each side. The count:
    1 + (max(n + (S if center else 0), S) - S) // hop; for ModelConfig.framing "openl3",
    OpenL3's: windows up to the first that reaches the last sample, timestamps k * hop_size.

    Args:
        cfg: the model config (rate, window S).
        hop_size: seconds between windows.
        center: pad half a window at the start (and the end), as `get_audio_embedding`.
        context: extra samples each window carries on each side (0: the plain window).
    """

    def __init__(self, cfg: ModelConfig, hop_size: float, center: bool = True, context: int = 0):
        self.cfg = cfg
        self.win = cfg.audio_samples
        self.hop = hop_samples(hop_size, cfg)
        self.hop_size = hop_size
        self.openl3 = cfg.framing == "openl3"
        self.center = center
        self.context = context
        self.left = self.win // 2 if center else 0
        self.span = self.win + 2 * context
        self._buf = np.zeros(self.left + context, np.float32)
        self._next = 0  # index of the next window; it starts at self._buf[0] ...
        self._skip = 0  # ... or, when the hop outruns the buffer, this many samples after its end
        self._n = 0  # input samples seen

    def timestamps(self, first: int, count: int) -> np.ndarray:
        """float64 [count] centre times in seconds of windows first .. first + count - 1."""
        k = np.arange(first, first + count)
        if self.openl3:
            return k * self.hop_size
        return (k * self.hop + self.win / 2 - self.left) / self.cfg.sample_rate

    def push(self, x, last: bool = False) -> Block:
        """Appends samples; returns the windows that are now complete (all that remain if last).

        Raises:
            L3Error: at `last`, if no sample was ever pushed.
        """
        x = np.asarray(x, np.float32).reshape(-1)
        self._n += len(x)
        skip, self._skip = min(self._skip, len(x)), max(self._skip - len(x), 0)
        x = x[skip:]
        buf = np.concatenate([self._buf, x]) if len(x) else self._buf
        if last:
            if self._n == 0:
                raise L3Error("audio is empty (0 samples); an embedding needs at least one sample.")
            if self.openl3:
                total = self.win + max(0, -(-(self._n + self.left - self.win) // self.hop)) * self.hop
            else:
                total = max(self._n + (self.win if self.center else 0), self.win)
            count = (total - self.win) // self.hop + 1 - self._next
            need = (count - 1) * self.hop + self.span if count > 0 else 0
            buf = np.pad(buf, (0, max(need - len(buf), 0)))
        else:
            count = (len(buf) - self.span) // self.hop + 1 if len(buf) >= self.span else 0
        block = Block(buf, self._next, max(count, 0), self.hop, self.span)
        self._next += block.count
        self._buf = buf[block.count * self.hop :]
        self._skip += max(block.count * self.hop - len(buf), 0)
        return block


def frame(audio, cfg: ModelConfig, hop_size: float, center: bool, context: Optional[int] = None):
    """The whole of `audio` through a WindowStream: (Block, timestamps).

    context: samples around each window; default the model's own (`audio_context_samples`).
    """
    context = cfg.audio_context_samples if context is None else context
    stream = WindowStream(cfg, hop_size, center, context)
    block = stream.push(audio, last=True)
    return block, stream.timestamps(block.first, block.count)


class SharedTower:
    """The audio tower of an embedding model run over a long signal (mode "shared").

    Args:
        audio_model: `models.audio_embedding_model` (or its loaded .keras file).
        cfg: its ModelConfig.
    """

    def __init__(self, audio_model, cfg: ModelConfig):
        from l3_keras import models

        if cfg.frontend not in ("stft", "mel"):
            raise L3Error(f"mode='shared' supports the 'stft' and 'mel' front ends; {cfg.name!r} "
                          f"uses {cfg.frontend!r}: use mode='exact'.")
        names = [layer.name for layer in audio_model.layers]
        last = models.last_conv_name(cfg, "audio")
        self.cfg = cfg
        self.frontend = audio_model.get_layer("audio_spectrogram")
        self.body = audio_model.layers[names.index("audio_spectrogram_4d") + 1 : names.index(last) + 1]
        self.cells = int(audio_model.get_layer(models.window_map_name(cfg, "audio")).output.shape[2])
        self.stride = 2 ** (len(cfg.filters) - 1)
        frames = self.stride * (math.ceil(models.receptive_frames(cfg) / self.stride) + 1)
        self.context = frames * cfg.hop_length  # samples of real audio around each block

    def spectrogram(self, signal):
        """float32 [n] -> [1, freq, frames, 1], the model's own front end layer."""
        import tensorflow as tf

        x = tf.constant(signal[None], tf.float32)
        if self.cfg.frontend == "stft":
            x = tf.transpose(self.frontend(x[:, :, None]), [0, 2, 1])
        else:
            x = self.frontend(x)
        return x[..., None]

    def maps(self, spec, phases):
        """{phase p: last conv map [1, F, cells, D] whose cell c starts at frame p + stride * c}."""
        import keras

        maps, stride = {0: spec}, 1
        for layer in self.body:
            if isinstance(layer, keras.layers.MaxPooling2D):
                stride *= 2
                wanted = {p % stride for p in phases}
                # A pool at phase r (mod stride) reads the map of phase r mod stride/2, offset
                # by one cell when r is the odd half.
                maps = {r: layer(maps[r % (stride // 2)][:, :, r // (stride // 2) :]) for r in wanted}
            else:
                maps = {r: layer(x, training=False) for r, x in maps.items()}
        return maps

    def embed(self, block: Block, transfer_features: bool = False) -> np.ndarray:
        """float32 [count, D] of a Block cut with context=self.context.

        With transfer_features, each window's cells max-pooled to cfg.audio_transfer_grid
        instead ([count, 4 * 3 * D] for the paper, the layout of `models.audio_embedding_model`'s).
        """

        if block.hop % self.cfg.hop_length:
            raise L3Error(
                f"mode='shared' needs a hop that is a whole number of spectrogram frames "
                f"({self.cfg.hop_length / self.cfg.sample_rate * 1000:g} ms for {self.cfg.name!r}); "
                f"got {block.hop / self.cfg.sample_rate:g} s."
            )
        if not block.count:
            return np.zeros((0, self.cfg.embedding_dim), np.float32)
        spec = self.spectrogram(block.signal)
        h = self.cfg.hop_length
        starts = [(i * block.hop + self.context) // h for i in range(block.count)]
        maps = {p: np.asarray(m[0]) for p, m in self.maps(spec, {s % self.stride for s in starts}).items()}
        freq, _, dim = maps[next(iter(maps))].shape
        rows, cols = self.cfg.audio_transfer_grid
        pf, pt = max(1, freq // rows), max(1, self.cells // cols)  # MaxPooling2D((pf, pt)), valid
        out = np.empty((block.count, rows * cols * dim if transfer_features else dim), np.float32)
        for i, s in enumerate(starts):
            p = s % self.stride
            c = (s - p) // self.stride
            cells = maps[p][:, c : c + self.cells]
            if transfer_features:
                grid = cells[: rows * pf, : cols * pt].reshape(rows, pf, cols, pt, dim)
                out[i] = grid.max(axis=(1, 3)).reshape(-1)
            else:
                out[i] = cells.max(axis=(0, 1))
        return out


def split(block: Block, max_count: int):
    """Block -> Blocks of at most max_count windows each (views of the same signal)."""
    for i in range(0, block.count, max_count):
        n = min(max_count, block.count - i)
        sig = block.signal[i * block.hop : (i + n - 1) * block.hop + block.span]
        yield Block(sig, block.first + i, n, block.hop, block.span)


class StreamEmbedder:
    """Embeds the windows of one signal fed in chunks; memory does not grow with its length.

    Args:
        towers: `embed.EmbeddingModels`.
        hop_size, center: framing (see `embed`).
        batch_size: windows per forward pass (exact mode).
        mode: "exact" or "shared" (module docstring).
    """

    def __init__(self, towers, hop_size: float, center: bool = True, batch_size: int = 32,
                 mode: str = "exact"):
        check_choice("mode", mode, MODES)
        self.towers = towers
        self.mode = mode
        self.batch_size = batch_size
        self.shared = SharedTower(towers.audio, towers.config) if mode == "shared" else None
        context = self.shared.context if self.shared else towers.config.audio_context_samples
        self.stream = WindowStream(towers.config, hop_size, center, context)
        # A shared block spans about CHUNK_SECONDS of windows.
        self.block_windows = max(1, int(CHUNK_SECONDS * towers.config.sample_rate) // self.stream.hop)
        self._out = []

    def push(self, x, last: bool = False):
        block = self.stream.push(x, last)
        if self.shared is not None:
            self._out += [self.shared.embed(b, self.towers.transfer_features)
                          for b in split(block, self.block_windows)]
        elif block.count:
            from l3_keras.embed import run_batched

            self._out += run_batched(self.towers.audio, [block.windows()], self.batch_size,
                                     self.towers.transfer_features)

    def finish(self):
        """Embeds the last windows; returns (float32 [T, D], float64 timestamps [T])."""
        self.push(np.zeros(0, np.float32), last=True)
        emb = np.concatenate(self._out) if self._out else np.zeros((0, 0), np.float32)
        return emb, self.stream.timestamps(0, len(emb))


class Resampler:
    """soxr's streaming resampler (same output as soxr.resample on the whole signal)."""

    def __init__(self, rate: int, target: int):
        import soxr

        self._soxr = soxr.ResampleStream(rate, target, 1, dtype="float32", quality="HQ") \
            if rate != target else None

    def __call__(self, x, last: bool = False) -> np.ndarray:
        if self._soxr is None:
            return np.asarray(x, np.float32)
        return self._soxr.resample_chunk(np.asarray(x, np.float32), last=last)


class ChunkedAudio:
    """Decoded audio at the stream's rate -> chunks of about CHUNK_SECONDS at the model's rate,
    handed to `sink` (a StreamEmbedder's push)."""

    def __init__(self, target_rate: int, sink, chunk_seconds: float = CHUNK_SECONDS):
        self.target = target_rate
        self.sink = sink
        self.chunk_seconds = chunk_seconds
        self._resample: Optional[Resampler] = None
        self._parts, self._n = [], 0
        self.samples = 0  # at the model's rate, handed on

    def __call__(self, x, rate: int):
        if self._resample is None:
            self._resample = Resampler(rate, self.target)
            self._chunk = max(1, int(self.chunk_seconds * rate))
        self._parts.append(x)
        self._n += len(x)
        if self._n >= self._chunk:
            self._hand_on(False)

    def _hand_on(self, last: bool):
        x = np.concatenate(self._parts) if self._parts else np.zeros(0, np.float32)
        self._parts, self._n = [], 0
        y = self._resample(x, last) if self._resample else x
        self.samples += len(y)
        self.sink(y)

    def finish(self, tail_seconds: float = 0.0):
        """Hands on the rest, then `tail_seconds` of silence at the model's rate."""
        self._hand_on(True)
        tail = int(round(tail_seconds * self.target))
        if tail:
            self.samples += tail
            self.sink(np.zeros(tail, np.float32))


def embed_audio_file(path, towers, hop_size=0.1, center=True, batch_size=32, mode="exact",
                     chunk_seconds=CHUNK_SECONDS):
    """Embeds the default audio stream of an audio or video file, decoding it in chunks.

    Returns:
        (float32 [T, D], float64 timestamps [T]), as `embed.get_audio_embedding`.

    Raises:
        L3Error (VideoError): the file cannot be decoded; `.reason` says why.
    """
    from l3_keras.data.video import stream_streams

    embedder = StreamEmbedder(towers, hop_size, center, batch_size, mode)
    chunks = ChunkedAudio(towers.config.sample_rate, embedder.push, chunk_seconds)
    stream_streams(path, chunks)
    chunks.finish()
    return embedder.finish()


def decode_video(path, data_config, sample_rate: int) -> dict:
    """A video decoded exactly as `embed.process_video_file` decodes it, kept whole: for workers
    that decode apart from the embedding (the Beam embed job's crash-isolated decoders).

    Returns:
        dict with audio (float32 mono [n] at `sample_rate`, resampled as decoded and tail-padded),
        sample_rate, frames (JPEG bytes of the frames shown before the audio ends) and
        frame_times (float64 [frames], seconds).

    Raises:
        VideoError: the video cannot be decoded, or has no frame before the audio ends.
    """
    from l3_keras.data.video import NO_FRAMES, VideoError, stream_streams, tail_pad_seconds

    parts, jpegs, times = [], [], []
    chunks = ChunkedAudio(sample_rate, parts.append)
    info = stream_streams(path, chunks, lambda jpeg, t: (jpegs.append(jpeg), times.append(t)),
                          data_config)
    chunks.finish(tail_pad_seconds(info["samples"] / info["rate"], info["video_end"]))
    times = np.asarray(times, np.float64)
    keep = times < chunks.samples / sample_rate
    if not keep.any():
        raise VideoError(str(path), NO_FRAMES)
    return {"audio": np.concatenate(parts), "sample_rate": sample_rate,
            "frames": [j for j, k in zip(jpegs, keep) if k], "frame_times": times[keep]}


def decode_audio(path, sample_rate: int) -> np.ndarray:
    """The whole default audio stream of `path` as mono float32 [n] at `sample_rate` (for short
    files; `embed_audio_file` streams long ones)."""
    from l3_keras.data.video import stream_streams

    parts = []
    chunks = ChunkedAudio(sample_rate, parts.append)
    stream_streams(path, chunks)
    chunks.finish()
    return np.concatenate(parts)
