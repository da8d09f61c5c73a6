"""Decoding one video file into the record layout: mono int16 audio plus JPEG frames with times.

Time axis (the invariant `records` relies on): t = 0 is the first decoded audio sample; audio sample
k plays at k / sample_rate and frame i is on screen at frame_times[i]. Video frames shown before the
first audio sample are dropped, except the one still on screen at t = 0 (its time becomes 0). Where
the video outlasts the audio by a little (AAC and MP3 tracks often end a frame early), the audio is
padded with silence up to the video's end, at most `MAX_TAIL_PAD_SECONDS`: that is what a viewer
hears, and it keeps a 1.1 s clip with 0.998 s of AAC (openl3's bento.mp4) usable for a 1 s window.
Gaps inside the audio track (timestamps jumping ahead) are filled with silence so that later audio
stays on its timestamps.

Stream choice: among the audio (video) streams, the first with the "default" disposition, else the
first one; attached pictures (cover art) are never the video stream.

Failure reasons: `VideoError.reason` is one of `REASONS`, optionally followed by ": detail" (e.g.
"decode error: Invalid data found when processing input"); `VideoError.bare_reason` is without it.
The container's declared duration is never needed (files that report none are decoded by reading
the streams); it only tells "truncated" apart from other decode errors.

Nothing here imports TensorFlow, so decoding worker processes stay light (`prepare` spawns them).
"""
from __future__ import annotations

import dataclasses
import io
import math
import os
from typing import List, Optional

import av
import numpy as np
import soxr

from l3_keras import media
from l3_keras.errors import L3Error

MIN_SECONDS = 1.0  # one L3 audio window (paper Sec. 3.1)
MAX_TAIL_PAD_SECONDS = 0.5
# Audio timestamp jumps below this are rounding (1 ms container time bases), not gaps.
GAP_TOLERANCE_SECONDS = 0.01

MISSING = "missing file"
EMPTY = "empty file"
UNREADABLE = "unreadable container"
NO_AUDIO = "no audio stream"
NO_VIDEO = "no video stream"
NO_FRAMES = "no video frames"
NO_AUDIO_DECODED = "no audio decoded"
TOO_SHORT = "shorter than 1 s"
TRUNCATED = "truncated"
DECODE_ERROR = "decode error"
REASONS = (
    MISSING, EMPTY, UNREADABLE, NO_AUDIO, NO_VIDEO, NO_FRAMES, NO_AUDIO_DECODED, TOO_SHORT,
    TRUNCATED, DECODE_ERROR,
)


@dataclasses.dataclass
class DecodedVideo:
    """A video decoded for training: mono int16 audio and JPEG frames with their times."""

    video_id: str
    audio: np.ndarray  # int16 [samples]
    sample_rate: int
    frames: List[bytes]  # JPEG
    frame_times: np.ndarray  # float32 [frames], seconds from the first audio sample
    label: str = ""

    @property
    def duration(self) -> float:
        return len(self.audio) / float(self.sample_rate)


class VideoError(L3Error):
    """A video that cannot become a record; `reason` is one of `REASONS` (maybe with ": detail")."""

    def __init__(self, path: str, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"Cannot use video {self.path}: {reason}.")

    @property
    def bare_reason(self) -> str:
        """The reason without its detail: one of `REASONS`."""
        return self.reason.split(":")[0]


def iter_video_paths(root_or_listfile) -> List[str]:
    """Lists the videos to prepare, sorted.

    Args:
        root_or_listfile: a folder (searched recursively for `media.EXTENSIONS["video"]`), one video
            file, or a text file with one path per line (blank lines and "#" comments ignored;
            relative paths are relative to the list file's folder so a list works on any machine).

    Returns:
        sorted, de-duplicated file paths.

    Raises:
        L3Error: if the path does not exist or holds no videos.
    """
    src = os.fspath(root_or_listfile)
    if os.path.isdir(src):
        paths = media.find_files(src, media.VIDEO)
    elif media.is_media(src, media.VIDEO):
        paths = [src] if os.path.isfile(src) else []
    elif os.path.isfile(src):
        base = os.path.dirname(src)
        with open(src) as f:
            lines = [line.strip() for line in f]
        paths = [os.path.join(base, line) for line in lines if line and not line.startswith("#")]
    else:
        raise L3Error(f"Input {src} does not exist; give a folder of videos or a list file.")
    if not paths:
        raise L3Error(
            f"No videos found in {src}; expected files ending in "
            f"{', '.join(media.EXTENSIONS[media.VIDEO])} "
            "or a text file with one video path per line."
        )
    return sorted(set(paths))


def decode_video(path, data_config, video_id: Optional[str] = None, label: str = ""):
    """Decodes `path` into a `DecodedVideo` (see the module docstring for the time axis).

    Args:
        path: video file.
        data_config: `DataConfig` (sample_rate, fps, frame_short_side, jpeg_quality, max_seconds).
        video_id: stored id; defaults to `path`.
        label: class name for labelled collections.

    Returns:
        DecodedVideo with audio int16 [round(duration * sample_rate)], frames (JPEG, short side
        `frame_short_side`) and frame_times float32 [frames], increasing, within [0, duration).

    Raises:
        VideoError: the file cannot become a record; `.reason` says why.
    """
    fields = decode_streams(path, data_config)
    return DecodedVideo(video_id=str(path) if video_id is None else video_id, label=label, **fields)


def decode_streams(path, data_config) -> dict:
    """TensorFlow-free core of `decode_video`.

    Returns:
        dict with audio (int16 [samples]), sample_rate, frames (list of JPEG bytes) and
        frame_times (float32 [frames]): the DecodedVideo fields other than video_id and label.
    """
    path = os.fspath(path)
    limit = data_config.max_seconds or math.inf
    audio, frames = _decode(path, _AudioTrack(limit),
                            lambda stream: _FrameSampler(data_config, limit, stream))
    return _assemble(path, audio, frames, data_config, limit)


def stream_streams(path, on_audio, on_frame=None, data_config=None) -> dict:
    """`decode_streams` for long files: decoded audio and frames go to callbacks, none is kept.

    The time axis, stream choice and gap filling are `decode_streams`'; the caller resamples,
    pads the tail (see `tail_pad_seconds`) and drops frames after the audio's end.

    Args:
        path: audio or video file.
        on_audio: called with (float32 mono [n] at the stream's own rate, that rate) per chunk.
        on_frame: called with (JPEG bytes, time in seconds) per kept frame; None: audio only
            (the video stream, if any, is not decoded).
        data_config: DataConfig for the frames (fps, frame_short_side, jpeg_quality).

    Returns:
        dict with rate (the stream's), samples (decoded at that rate, gaps filled) and
        video_end (seconds on the audio axis; None for audio only).

    Raises:
        VideoError: as `decode_streams`; NO_AUDIO_DECODED when the stream holds no samples.
    """
    path = os.fspath(path)
    frames = (lambda stream: _FrameSampler(data_config, math.inf, stream, on_frame)) if on_frame else None
    audio, frames = _decode(path, _AudioTrack(math.inf, sink=on_audio), frames)
    if not audio.samples:
        raise VideoError(path, NO_AUDIO_DECODED)
    return {"rate": audio.rate, "samples": audio.samples,
            "video_end": frames.end_time if frames else None}


def tail_pad_seconds(audio_seconds: float, video_end: Optional[float]) -> float:
    """Silence added after the audio so that it lasts as long as the video (at most
    MAX_TAIL_PAD_SECONDS; see the module docstring)."""
    if video_end is None:
        return 0.0
    return min(max(video_end - audio_seconds, 0.0), MAX_TAIL_PAD_SECONDS)


def decode_or_reason(path, data_config, decode=decode_streams):
    """`decode(path, data_config)` (default `decode_streams`), or the reason the video is skipped
    (a str) instead of an exception.

    For worker processes: a run over 100k videos records one odd file and carries on.
    """
    try:
        return decode(path, data_config)
    except VideoError as e:
        return e.reason
    except Exception as e:  # noqa: BLE001 - e.g. an FFmpeg/PIL error path nobody anticipated
        return f"unexpected error: {type(e).__name__}: {e}"


def _decode(path: str, audio, make_frames):
    """Opens `path`, picks its streams and decodes them into `audio` (an _AudioTrack) and the
    _FrameSampler that make_frames(video stream) returns (None: audio only).

    Returns:
        (audio, frames or None).
    """
    container = _open(path)
    with container:
        audio_stream = _pick_stream(container.streams.audio)
        if audio_stream is None:
            raise VideoError(path, NO_AUDIO)
        video_stream = _pick_stream(container.streams.video) if make_frames else None
        if make_frames and video_stream is None:
            raise VideoError(path, NO_VIDEO)
        frames = make_frames(video_stream) if make_frames else None
        try:
            _demux(container, audio_stream, video_stream, audio, frames)
        except (av.FFmpegError, ValueError) as e:
            message = getattr(e, "strerror", None) or str(e)
            reason = _truncation(container, audio, frames) or f"{DECODE_ERROR}: {message}"
            raise VideoError(path, reason) from e
        # Some demuxers (Matroska) end a cut file without an error: compare with the header.
        finished = audio.done and (frames is None or frames.done)
        truncated = not finished and _truncation(container, audio, frames)
        if truncated:
            raise VideoError(path, truncated)
    return audio, frames


def _open(path: str):
    if not os.path.exists(path):
        raise VideoError(path, MISSING)
    if os.path.getsize(path) == 0:
        raise VideoError(path, EMPTY)
    try:
        return av.open(path)
    except (av.FFmpegError, UnicodeDecodeError) as e:
        raise VideoError(path, UNREADABLE) from e


def _pick_stream(streams):
    """The first stream with the default disposition, else the first; None if there is none."""
    candidates = [s for s in streams if not s.disposition & av.stream.Disposition.attached_pic]
    for s in candidates:
        if s.disposition & av.stream.Disposition.default:
            return s
    return candidates[0] if candidates else None


def _demux(container, audio_stream, video_stream, audio, frames):
    """Decodes both streams in file order, stopping once each has reached the time limit.

    With video_stream and frames None, decodes the audio alone.
    """
    streams = [s for s in (audio_stream, video_stream) if s is not None]
    for packet in container.demux(*streams):
        if audio.done and (frames is None or frames.done):
            break
        if packet.stream.index == audio_stream.index:
            if not audio.done:
                for frame in packet.decode():
                    audio.push(frame)
                    if frames is not None and frames.origin is None:
                        frames.start(audio.origin)
        elif not frames.done:
            for frame in packet.decode():
                frames.push(frame)
    audio.flush()
    if frames is not None:
        frames.finish()


def _truncation(container, audio, frames) -> Optional[str]:
    """A "truncated" reason if both streams end well before the duration the container declares.

    Tolerant (10 %, at least 0.5 s) because headers round and streams end a frame apart; a stream
    that simply ends early (audio shorter than the video) is not truncation.
    """
    if not container.duration:
        return None
    declared = container.duration / 1e6
    reached = max(audio.end_time, frames.last_time if frames is not None else 0.0)
    if reached < declared - max(MAX_TAIL_PAD_SECONDS, 0.1 * declared):
        return f"{TRUNCATED}: streams end at {reached:.2f} s of {declared:.2f} s"
    return None


def _assemble(path, audio, frames, data_config, limit) -> dict:
    """Resamples the audio, pads its tail to the video's end, cuts at `limit`, drops late frames."""
    sr = data_config.sample_rate
    pcm = audio.pcm16(sr)
    video_end = frames.end_time  # seconds on the audio axis
    n = len(pcm) + int(round(tail_pad_seconds(len(pcm) / sr, video_end) * sr))
    if limit < math.inf:
        n = min(n, int(round(limit * sr)))
    pcm = np.pad(pcm[:n], (0, max(n - len(pcm), 0)))
    if n < int(round(MIN_SECONDS * sr)):
        raise VideoError(path, TOO_SHORT if n else NO_AUDIO_DECODED)
    times = np.asarray(frames.times, np.float32)
    keep = times < n / sr
    if not keep.any():
        raise VideoError(path, NO_FRAMES)
    jpegs = [j for j, k in zip(frames.jpegs, keep) if k]
    return {"audio": pcm, "sample_rate": sr, "frames": jpegs, "frame_times": times[keep]}


class _AudioTrack:
    """Collects decoded audio as mono float32 at the stream's own rate, on its timestamps.

    With a `sink`, chunks go to sink(chunk, rate) instead of being kept.
    """

    def __init__(self, limit: float, sink=None):
        self.limit = limit
        self.sink = sink
        self.rate = None
        self.origin = None  # seconds (stream clock) of the first decoded sample
        self._chunks = []
        self._n = 0
        self._resampler = None
        self._key = None

    @property
    def done(self) -> bool:
        return self.rate is not None and self._n >= self.limit * self.rate

    @property
    def end_time(self) -> float:
        return self._n / self.rate if self.rate else 0.0

    def push(self, frame):
        if self.rate is None:
            self.rate = frame.sample_rate
            self.origin = frame.time or 0.0
        if frame.time is not None:
            gap = int(round((frame.time - self.origin) * self.rate)) - self._n
            if gap > GAP_TOLERANCE_SECONDS * self.rate:
                self._append(np.zeros(gap, np.float32))
        # Converting to planar float at the first rate also absorbs mid-stream format changes;
        # the down-mix is a plain channel mean (swresample's mono matrix adds +3 dB).
        key = (frame.format.name, frame.layout.name, frame.sample_rate)
        if key != self._key:
            self.flush()
            self._resampler = av.AudioResampler(format="fltp", rate=self.rate)
            self._key = key
        for out in self._resampler.resample(frame):
            self._append(out.to_ndarray().mean(axis=0, dtype=np.float32))

    def flush(self):
        if self._resampler is not None:
            for out in self._resampler.resample(None):
                self._append(out.to_ndarray().mean(axis=0, dtype=np.float32))
            self._resampler = self._key = None

    @property
    def samples(self) -> int:
        return self._n

    def _append(self, x):
        if self.sink is not None:
            self.sink(x, self.rate)
        else:
            self._chunks.append(x)
        self._n += len(x)

    def pcm16(self, sample_rate: int) -> np.ndarray:
        """The track as int16 [samples] at `sample_rate` (soxr, high quality, no delay)."""
        if not self._chunks:
            return np.zeros(0, np.int16)
        x = np.concatenate(self._chunks)
        if self.rate != sample_rate:
            x = soxr.resample(x, self.rate, sample_rate, quality="HQ")
        return np.clip(np.rint(x * 32767.0), -32768, 32767).astype(np.int16)


class _FrameSampler:
    """Keeps the frame on screen at each sample time k / fps, JPEG-encoded, with its own time.

    A frame on screen at several sample times (source slower than fps) is kept once, so times
    are strictly increasing; they are the frames' presentation times, not the sample grid.
    With a `sink`, each kept frame goes to sink(jpeg, time) instead of being kept.
    """

    def __init__(self, data_config, limit: float, stream, sink=None):
        self.sink = sink
        self.step = 1.0 / data_config.fps
        self.limit = limit
        self.short_side = data_config.frame_short_side
        self.quality = data_config.jpeg_quality
        sar = stream.sample_aspect_ratio
        self.pixel_aspect = float(sar) if sar else 1.0
        rate = stream.average_rate or stream.guessed_rate
        self.frame_period = 1.0 / float(rate) if rate else self.step
        self.origin = None
        self.times: List[float] = []
        self.jpegs: List[bytes] = []
        self.last_time = 0.0  # stream clock, for error messages
        self._clock = _FrameClock()
        self._pending = []  # (frame, time) decoded before the audio origin is known
        self._k = 0
        self._prev = None  # (frame, time on the audio axis, already kept?)
        self._end = 0.0

    @property
    def done(self) -> bool:
        return self._k * self.step >= self.limit

    @property
    def end_time(self) -> float:
        """When the last decoded frame leaves the screen, on the audio axis."""
        return self._end

    def start(self, origin: float):
        self.origin = origin
        for frame, t in self._pending:
            self._show(frame, t - origin)
        self._pending = []

    def push(self, frame):
        t = self._clock.time(frame, self.frame_period)
        self.last_time = t
        if self.origin is None:
            # Bounded: frames this far ahead of the first audio packet are before t = 0 anyway.
            self._pending = self._pending[-63:] + [(frame, t)]
        else:
            self._show(frame, t - self.origin)

    def _show(self, frame, t: float):
        if self._prev is not None and t <= self._prev[1]:
            return  # broken timestamps; the decoder outputs frames in display order
        self._advance(t)
        self._prev = (frame, t, False)
        duration = frame.duration * frame.time_base if frame.duration and frame.time_base else 0
        self._end = t + (float(duration) or self.frame_period)

    def _advance(self, until: float):
        """Resolves every sample time before `until` with the frame now on screen."""
        while not self.done and self._k * self.step < until:
            prev = self._prev
            if prev is not None and prev[1] <= self._k * self.step and not prev[2]:
                t = max(prev[1], 0.0)
                self.times.append(t)
                if self.sink is not None:
                    self.sink(self._jpeg(prev[0]), t)
                else:
                    self.jpegs.append(self._jpeg(prev[0]))
                self._prev = (prev[0], prev[1], True)
            self._k += 1

    def finish(self):
        self._advance(self._end)

    def _jpeg(self, frame) -> bytes:
        width = frame.width * self.pixel_aspect
        scale = self.short_side / min(width, frame.height)
        size = max(1, round(width * scale)), max(1, round(frame.height * scale))
        # AREA averages the pixels each output pixel covers: no aliasing when shrinking 1080p.
        image = frame.to_image(width=size[0], height=size[1], interpolation="AREA")
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=self.quality)
        return buf.getvalue()


class _FrameClock:
    """Frame times in seconds, choosing pts or dts like FFmpeg's best_effort_timestamp.

    AVI files with packed B-frames label frames with out-of-order pts but monotonic dts; FFmpeg
    counts the non-monotonic values of each and trusts the one with fewer faults.
    """

    def __init__(self):
        self._last = {"pts": None, "dts": None}
        self._faults = {"pts": 0, "dts": 0}
        self._prev_time = None

    def time(self, frame, period: float) -> float:
        for name in ("pts", "dts"):
            value = getattr(frame, name)
            if value is not None:
                last = self._last[name]
                self._faults[name] += last is not None and value <= last
                self._last[name] = value
        pts_better = self._faults["pts"] <= self._faults["dts"] or frame.dts is None
        ts = frame.pts if frame.pts is not None and pts_better else frame.dts
        if ts is None or frame.time_base is None:
            t = 0.0 if self._prev_time is None else self._prev_time + period
        else:
            t = float(ts * frame.time_base)
        self._prev_time = t
        return t
