"""Synthetic audio-visual clips: real mp4 files (H.264 + AAC) where what is seen and heard co-occur.

A clip is a sequence of events. During an event one object of a "kind" is drawn in one quadrant
of the frame and the kind's sound plays; between events the frame is empty and the audio is quiet
noise. Each kind pairs a distinct visual (shape x colour) with a distinct sound (its own centre
frequency and timbre), so a model that learns audio-visual correspondence (paper Sec. 3) must link
them. An optional silent distractor (another kind, in another quadrant) makes "which object sounds"
matter for sound localisation.

Every clip has a JSON sidecar (same stem, `.json`) with the ground truth:

    {"size": [H, W], "fps": 10.0, "sample_rate": 16000, "seconds": 10.0,
     "events": [{"kind": 3, "name": "yellow_cross", "start": 0.42, "end": 2.1,
                 "quadrant": 1, "box": [x0, y0, x1, y1], "distractor": null | {kind, quadrant, box}}]}

Quadrants: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right. Boxes are pixels, x1/y1
exclusive. Times are seconds from the first audio sample; frame i is shown at i / fps.

`make_schedule_clip` writes an alignment clip instead: frame brightness and tone frequency both
follow the same piecewise-constant schedule of time, so a frame and an audio window can each be
mapped back to the time they came from.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import multiprocessing
import os
from fractions import Fraction
from typing import Callable, List, Optional, Sequence, Tuple

import av
import numpy as np

from l3_keras import files
from l3_keras.errors import L3Error

SHAPES = ("circle", "square", "triangle", "cross", "ring")
SOUNDS = ("tone", "harmonic", "am", "noise")
DEFAULT_SIZE = (128, 128)
DEFAULT_FPS = 10.0
DEFAULT_SAMPLE_RATE = 16000
EVENT_LEVEL = 0.2  # peak amplitude of an event sound, before harmonics
NOISE_LEVEL = 0.003  # background noise std (about -50 dBFS): quiet but never digital silence
FADE_SECONDS = 0.01  # onset/offset ramps so that events do not click


@dataclasses.dataclass(frozen=True)
class Kind:
    """One object kind: how it looks and how it sounds.

    Attributes:
        name: "<colour>_<shape>".
        shape: one of SHAPES.
        colour: RGB uint8 triple.
        sound: one of SOUNDS ("tone", "harmonic" stack, amplitude-modulated "am" tone, band "noise").
        freq: centre frequency in Hz; the sound's energy is concentrated around it.
    """

    name: str
    shape: str
    colour: Tuple[int, int, int]
    sound: str
    freq: float


_COLOURS = (
    ("red", (230, 40, 40)),
    ("green", (40, 200, 60)),
    ("blue", (50, 90, 235)),
    ("yellow", (240, 220, 40)),
    ("magenta", (225, 50, 225)),
    ("cyan", (40, 215, 225)),
    ("orange", (245, 140, 30)),
    ("white", (240, 240, 240)),
    ("purple", (130, 50, 190)),
    ("pink", (250, 160, 190)),
)
# Centre frequencies spaced by a factor of ~1.37 (several mel bands apart at 16 kHz) from 300 Hz to
# 5 kHz, so every kind stays below the 8 kHz Nyquist limit of the tiny preset.
_FREQS = np.geomspace(300.0, 5000.0, len(_COLOURS))

KINDS: Tuple[Kind, ...] = tuple(
    Kind(f"{colour}_{SHAPES[k % len(SHAPES)]}", SHAPES[k % len(SHAPES)], rgb, SOUNDS[k % len(SOUNDS)],
         float(round(_FREQS[k], 1)))
    for k, (colour, rgb) in enumerate(_COLOURS)
)


# ----------------------------------------------------------------------------------------------
# Pictures


def shape_mask(shape: str, height: int, width: int) -> np.ndarray:
    """Pixels covered by `shape` drawn to fill a height x width box.

    Returns:
        bool [height, width].
    """
    v, u = np.meshgrid(np.linspace(-1, 1, height), np.linspace(-1, 1, width), indexing="ij")
    r = np.hypot(u, v)
    masks = {
        "circle": r <= 1.0,
        "square": (np.abs(u) <= 0.85) & (np.abs(v) <= 0.85),
        "triangle": np.abs(u) <= (v + 1.0) / 2.0,  # apex at the top, base at the bottom
        "cross": (np.abs(u) <= 0.3) | (np.abs(v) <= 0.3),
        "ring": (r <= 1.0) & (r >= 0.55),
    }
    return masks[shape]


def _background(size: Tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A dim, gently textured background: a random grey, a vertical gradient and faint grain."""
    h, w = size
    grey = rng.uniform(30, 70)
    gradient = np.linspace(-10, 10, h)[:, None, None]
    grain = rng.normal(0, 3, (h, w, 1))
    return np.clip(grey + gradient + grain, 0, 255).repeat(3, axis=2).astype(np.uint8)


def _paint(frame: np.ndarray, kind: int, box: Sequence[int]) -> None:
    x0, y0, x1, y1 = box
    mask = shape_mask(KINDS[kind].shape, y1 - y0, x1 - x0)
    frame[y0:y1, x0:x1][mask] = KINDS[kind].colour


def random_box(quadrant: int, size: Tuple[int, int], rng: np.random.Generator) -> List[int]:
    """A square box inside `quadrant`, 60-90% of the quadrant's short side, at a random place."""
    h, w = size
    qh, qw = h // 2, w // 2
    side = int(rng.uniform(0.6, 0.9) * min(qh, qw))
    y0 = (quadrant // 2) * qh + int(rng.integers(0, qh - side + 1))
    x0 = (quadrant % 2) * qw + int(rng.integers(0, qw - side + 1))
    return [x0, y0, x0 + side, y0 + side]


# ----------------------------------------------------------------------------------------------
# Sounds


def kind_sound(kind: int, seconds: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """The sound of one kind, with short fades at both ends.

    Returns:
        waveform: float32 [round(seconds * sample_rate)], peak below 0.5.
    """
    spec = KINDS[kind]
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    f = spec.freq
    if spec.sound == "tone":
        y = np.sin(2 * np.pi * f * t)
    elif spec.sound == "harmonic":
        # Partials above 0.45 * sample_rate are dropped: they would alias.
        y = sum(a * np.sin(2 * np.pi * m * f * t) for m, a in ((1, 1.0), (2, 0.5), (3, 0.25))
                if m * f < 0.45 * sample_rate)
    elif spec.sound == "am":
        rate = 4.0 + 2.0 * (kind % 3)  # 4, 6 or 8 Hz tremolo
        y = np.sin(2 * np.pi * f * t) * (0.55 + 0.45 * np.sin(2 * np.pi * rate * t))
    else:  # "noise": white noise band-limited to f / 1.12 .. f * 1.12 (about a third of an octave)
        spectrum = np.fft.rfft(rng.normal(size=n))
        freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
        spectrum[(freqs < f / 1.12) | (freqs > f * 1.12)] = 0
        y = np.fft.irfft(spectrum, n)
        y *= np.sqrt(0.5) / max(np.std(y), 1e-9)  # same RMS as a unit sine
    fade = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / (FADE_SECONDS * sample_rate))
    return (EVENT_LEVEL * y * fade).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Events


def _pick_distractor(kind: int, quadrant: int, kinds: int, size, rng) -> dict:
    other_kind = int(rng.choice([k for k in range(kinds) if k != kind]))
    other_quadrant = int(rng.choice([q for q in range(4) if q != quadrant]))
    return {"kind": other_kind, "quadrant": other_quadrant,
            "box": random_box(other_quadrant, size, rng)}


def random_events(
    duration: float,
    kinds: int,
    rng: np.random.Generator,
    *,
    size: Tuple[int, int] = DEFAULT_SIZE,
    distractor: bool = False,
    min_seconds: float = 1.0,
    max_seconds: float = 3.0,
    max_gap: float = 1.0,
) -> List[dict]:
    """A random event sequence filling `duration` seconds.

    Events last `min_seconds`..`max_seconds`, are separated by gaps of 0..`max_gap` seconds, have a
    uniformly random kind among the first `kinds` and a random box in a random quadrant.

    Returns:
        events as described in the module docstring, sorted by start, all ending by `duration`.
    """
    if not 2 <= kinds <= len(KINDS):
        raise L3Error(f"kinds must be between 2 and {len(KINDS)}, got {kinds}.")
    events, t = [], float(rng.uniform(0, max_gap))
    while t + min_seconds <= duration:
        end = min(duration, t + float(rng.uniform(min_seconds, max_seconds)))
        kind, quadrant = int(rng.integers(kinds)), int(rng.integers(4))
        events.append({
            "kind": kind, "name": KINDS[kind].name, "start": round(t, 3), "end": round(end, 3),
            "quadrant": quadrant, "box": random_box(quadrant, size, rng),
            "distractor": _pick_distractor(kind, quadrant, kinds, size, rng) if distractor else None,
        })
        t = end + float(rng.uniform(0, max_gap))
    return events


# ----------------------------------------------------------------------------------------------
# Writing


def write_mp4(path: str, frame_at: Callable[[float], np.ndarray], audio: np.ndarray,
              size: Tuple[int, int], fps: float, sample_rate: int, meta: dict) -> str:
    """Encodes frames (frame_at(t) -> uint8 [H, W, 3]) and mono audio into an H.264 + AAC mp4.

    Args:
        path: output .mp4 path; the sidecar `meta` (needs "seconds") goes beside it as .json.
        frame_at: the frame on screen at t seconds, for t = i / fps.
        audio: float32 [samples] in [-1, 1] at `sample_rate`.

    The mp4 and then the JSON sidecar are written atomically, so a sidecar on disk means its clip
    is complete (`make_collection` and `data.scenes` rely on that to resume).
    """
    h, w = size
    if h % 2 or w % 2:
        raise L3Error(f"Frame size {size} must be even in both sides (yuv420p needs it).")
    rate = Fraction(fps).limit_denominator(1000)
    with files.atomic_write(path) as tmp:
        with av.open(tmp, mode="w", format="mp4") as container:
            video = container.add_stream("libx264", rate=rate)
            video.width, video.height, video.pix_fmt = w, h, "yuv420p"
            # One thread per clip: make_collection parallelises across clips instead.
            video.options = {"preset": "veryfast", "crf": "18", "threads": "1"}
            sound = container.add_stream("aac", rate=sample_rate, layout="mono")
            sound.bit_rate = 96000
            num_frames = int(np.floor(meta["seconds"] * float(rate) + 1e-9))
            for i in range(num_frames):
                frame = av.VideoFrame.from_ndarray(frame_at(i / float(rate)), format="rgb24")
                frame.pts = i
                container.mux(video.encode(frame))
            container.mux(video.encode())
            chunk = 1024 * 16
            for start in range(0, len(audio), chunk):
                part = av.AudioFrame.from_ndarray(audio[None, start:start + chunk], format="fltp",
                                                  layout="mono")
                part.sample_rate, part.pts = sample_rate, start
                container.mux(sound.encode(part))
            container.mux(sound.encode())
    files.write_json(os.path.splitext(path)[0] + ".json", meta, indent=1)
    return path


def _base_meta(size, fps, sample_rate, seconds, **extra) -> dict:
    return {"size": list(size), "fps": float(fps), "sample_rate": int(sample_rate),
            "seconds": float(seconds), **extra}


def make_clip(
    path: str,
    events: List[dict],
    *,
    seconds: Optional[float] = None,
    size: Tuple[int, int] = DEFAULT_SIZE,
    fps: float = DEFAULT_FPS,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    seed: int = 0,
    distractor: bool = False,
    extra: Optional[dict] = None,
) -> str:
    """Writes one clip (mp4 + JSON sidecar) that shows and sounds `events`.

    Args:
        path: output .mp4 path.
        events: as from `random_events` (boxes must fit `size`).
        seconds: clip length; default the last event's end rounded up to a whole second.
        size: (height, width) of the frames, both even.
        fps: video frame rate.
        sample_rate: audio rate in Hz (16000 for the tiny preset, 48000 for the paper's).
        seed: seeds the background, noise and any distractors that are added.
        distractor: give every event that has none a silent distractor of another kind.
        extra: more JSON fields for the sidecar.

    Returns:
        `path`.
    """
    rng = np.random.default_rng(seed)
    if seconds is None:
        seconds = float(np.ceil(max((e["end"] for e in events), default=1.0)))
    if distractor:
        events = [e if e.get("distractor") else
                  {**e, "distractor": _pick_distractor(e["kind"], e["quadrant"], len(KINDS), size, rng)}
                  for e in events]
    background = _background(size, rng)
    audio = rng.normal(0, NOISE_LEVEL, int(round(seconds * sample_rate))).astype(np.float32)
    for e in events:
        start = int(round(e["start"] * sample_rate))
        sound = kind_sound(e["kind"], e["end"] - e["start"], sample_rate, rng)[: len(audio) - start]
        audio[start:start + len(sound)] += sound

    def frame_at(t):
        frame = background.copy()
        for e in events:
            if e["start"] <= t < e["end"]:
                if e.get("distractor"):
                    _paint(frame, e["distractor"]["kind"], e["distractor"]["box"])
                _paint(frame, e["kind"], e["box"])
        return frame

    meta = _base_meta(size, fps, sample_rate, seconds, seed=seed, events=events, **(extra or {}))
    return write_mp4(path, frame_at, audio, size, fps, sample_rate, meta)


def make_schedule_clip(
    path: str,
    *,
    seconds: float = 6.0,
    step: float = 0.5,
    size: Tuple[int, int] = (64, 64),
    fps: float = DEFAULT_FPS,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    base_freq: float = 500.0,
    freq_step: float = 250.0,
    seed: int = 0,
) -> str:
    """Writes an alignment clip: brightness and tone frequency both change every `step` seconds.

    Segment i covers [i * step, (i + 1) * step): every frame shown in it is a flat grey of
    brightness 20 + 200 * i / (n - 1) and the audio is a sine of base_freq + i * freq_step Hz
    (phase-continuous, so the only change at a boundary is the frequency). The sidecar lists the
    segments under "schedule": [{"start", "end", "brightness", "freq"}].

    Returns:
        `path`.
    """
    n = int(np.ceil(seconds / step - 1e-9))
    if base_freq + (n - 1) * freq_step >= 0.45 * sample_rate:
        raise L3Error(f"{n} segments of +{freq_step} Hz from {base_freq} Hz exceed the Nyquist "
                      f"limit at {sample_rate} Hz; use fewer seconds or a smaller freq_step.")
    schedule = [{"start": round(i * step, 6), "end": round(min(seconds, (i + 1) * step), 6),
                 "brightness": int(round(20 + 200 * i / max(n - 1, 1))),
                 "freq": base_freq + i * freq_step} for i in range(n)]
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    segment = np.minimum((t / step + 1e-9).astype(int), n - 1)
    inst_freq = base_freq + segment * freq_step
    phase = 2 * np.pi * np.cumsum(inst_freq) / sample_rate
    rng = np.random.default_rng(seed)
    audio = (0.3 * np.sin(phase) + rng.normal(0, NOISE_LEVEL, len(t))).astype(np.float32)

    def frame_at(time):
        level = schedule[min(int(time / step + 1e-9), n - 1)]["brightness"]
        return np.full((*size, 3), level, np.uint8)

    meta = _base_meta(size, fps, sample_rate, seconds, step=step, schedule=schedule)
    return write_mp4(path, frame_at, audio, size, fps, sample_rate, meta)


def read_sidecar(path: str) -> dict:
    """The ground truth of the clip at `path` (its .mp4 or .json path)."""
    return files.read_json(os.path.splitext(path)[0] + ".json")


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """What the clips of a random collection are like (`make_collection`, `ceiling.avc_ceiling`).

    Attributes:
        seconds: clip length.
        kinds: event kinds drawn from (the first `kinds` of KINDS).
        event_seconds: (min, max) event length, seconds (see `random_events`).
        max_gap: longest quiet gap between events, seconds.
        distractor: give every event a silent distractor of another kind.
        size: (height, width) of the frames, both even.
        fps: video frame rate.
        sample_rate: audio rate in Hz.
        seed: clip i of the collection depends only on (seed, i).
    """

    seconds: float = 10.0
    kinds: int = len(KINDS)
    event_seconds: Tuple[float, float] = (1.0, 3.0)
    max_gap: float = 1.0
    distractor: bool = False
    size: Tuple[int, int] = DEFAULT_SIZE
    fps: float = DEFAULT_FPS
    sample_rate: int = DEFAULT_SAMPLE_RATE
    seed: int = 0

    def replace(self, **changes) -> "ClipSpec":
        return dataclasses.replace(self, **changes)

    def to_json_dict(self) -> dict:
        """The spec as its sidecar stores it (JSON types: tuples become lists, numbers floats)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


def is_complete(path: str, params: dict) -> bool:
    """Whether the clip at `path` was fully written with collection parameters `params`."""
    try:
        return os.path.exists(path) and read_sidecar(path).get("params") == params
    except (OSError, ValueError):
        return False


def _make_one(job) -> str:
    path, spec, index = job
    rng = np.random.default_rng([spec.seed, index])
    events = random_events(spec.seconds, spec.kinds, rng, size=tuple(spec.size),
                           distractor=spec.distractor, min_seconds=spec.event_seconds[0],
                           max_seconds=spec.event_seconds[1], max_gap=spec.max_gap)
    # The sidecar records the collection's spec so that a call with another one regenerates.
    return make_clip(path, events, seconds=spec.seconds, size=tuple(spec.size), fps=spec.fps,
                     sample_rate=spec.sample_rate, seed=int(rng.integers(2**31)),
                     extra={"params": spec.to_json_dict()})


def make_collection(out_dir: str, num_clips: int, spec: ClipSpec = ClipSpec(), *,
                    workers: int = 1) -> List[str]:
    """Writes `num_clips` random clips `clip_00000.mp4`... (with sidecars) into `out_dir`.

    Cached: a clip whose sidecar records the same spec is kept, so a second call with the same
    arguments returns at once and an interrupted call resumes. Clip i depends only on
    (spec.seed, i), whatever `workers` is.

    Args:
        spec: what the clips are like.
        workers: processes encoding clips in parallel (each encoder uses one thread).

    Returns:
        the clip paths, sorted.
    """
    os.makedirs(out_dir, exist_ok=True)
    params = spec.to_json_dict()
    paths = [os.path.join(out_dir, f"clip_{i:05d}.mp4") for i in range(num_clips)]
    run_jobs(_make_one, [(p, spec, i) for i, p in enumerate(paths) if not is_complete(p, params)],
             workers)
    return paths


def run_jobs(fn: Callable, jobs: Sequence, workers: int) -> list:
    """[fn(job) for job in jobs], in `workers` spawned processes when more than one (fn picklable)."""
    if workers > 1 and len(jobs) > 1:
        # "spawn": the caller may have started TensorFlow threads, which fork does not copy safely.
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as ex:
            return list(ex.map(fn, jobs))
    return [fn(job) for job in jobs]
