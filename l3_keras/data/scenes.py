"""Audio-visual scenes from a labelled audio folder: real recordings time-aligned with their class.

The tone generator (`synthetic`) pairs made-up sounds with shapes. Here the sounds are real
recordings (spoken digits, ESC-50 clips, your own folder: `labelled.list_labelled`) and each class
gets a visual identity, so a model that learns audio-visual correspondence must learn to recognise
real sound:

- "glyph": the class name drawn as text (for digits, the digit) in a font, size, colour and place
  drawn per event, from fonts that ship with matplotlib (DejaVu, STIX, Computer Modern), on a
  textured background of random colour.
- "emblem": a star polygon whose corners, spikiness, rotation and hue are fixed by the class name
  (seeded by its CRC32), drawn at a size and place drawn per event. "auto" uses glyphs when every
  class name has at most 3 characters, emblems otherwise.

A clip is a sequence of events. During an event the class's identity is on screen while recordings
of that class play back to back (random recordings of the split, trimmed of leading and trailing
silence, RMS-normalised, with a random gain of +-gain_db and short pauses) until the event's drawn
length is filled; between events the screen shows the bare background. Background noise of a
random level plays throughout. Events of one recording (event_seconds=(0, 0)) put many 1 s windows
across two classes; longer events of repeated recordings make most windows hold one class.

Every clip's JSON sidecar (same stem) holds the ground truth, with times in seconds:

    {"size": [H, W], "fps", "sample_rate", "seconds", "seed", "classes": [...], "params": {...},
     "events": [{"label": "7", "class": 7, "start", "end", "box": [x0, y0, x1, y1],
                 "colour": [r, g, b], "font": "DejaVuSerif-Bold.ttf" | null,
                 "recordings": [{"path", "start", "end", "gain_db"}]}]}

A recording (resampled and trimmed by `load_recording`) plays from `start` to `end` in the clip.
Writing is `synthetic.write_mp4`'s (H.264 + AAC, atomic, resumable).
"""
from __future__ import annotations

import colorsys
import dataclasses
import functools
import hashlib
import json
import os
import zlib
from typing import List, Sequence, Tuple

import numpy as np

from l3_keras import media
from l3_keras.data import synthetic
from l3_keras.data.labelled import Item
from l3_keras.errors import L3Error, check_choice

IDENTITIES = ("auto", "glyph", "emblem")
# Font files in matplotlib's mpl-data/fonts/ttf, so every machine with the package has them.
FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSerif.ttf",
         "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSansMono.ttf",
         "DejaVuSansMono-Bold.ttf", "STIXGeneral.ttf", "STIXGeneralBol.ttf", "cmr10.ttf",
         "cmss10.ttf")
SPEECH_RMS = 0.05  # every recording is scaled to this RMS (about -26 dBFS) before its gain
TRIM_DB = 35.0  # silence = 10 ms frames more than this below the loudest frame
LEAD_SECONDS = 0.1  # the picture appears this long before the first recording and stays after
MARGIN = 0.08  # share of each side kept free, so random training crops keep the whole picture


@dataclasses.dataclass(frozen=True)
class SceneSpec:
    """How scene clips look and sound (the options object of `make_scene_collection`).

    Attributes:
        seconds: clip length.
        size: (height, width) of the frames, both even.
        fps: video frame rate.
        sample_rate: audio rate of the clips (the model's: 16000 for the tiny preset).
        event_seconds: (min, max) drawn length of an event, filled with recordings of its class;
            at least one recording an event however short.
        max_gap: longest pause between events (background only).
        pause: (min, max) pause between two recordings inside an event.
        gain_db: recordings get a random gain in +-gain_db.
        noise_db: (min, max) background noise RMS in dBFS, drawn per clip.
        identity: "glyph", "emblem" or "auto" (see the module docstring).
        glyph_size: (min, max) glyph or emblem height as a share of the frame's short side.
        class_colours: glyphs take their class's own hue instead of a random one: an easy visual
            cue beside the shape (emblems always have their class's hue).
    """

    seconds: float = 10.0
    size: Tuple[int, int] = (128, 128)
    fps: float = synthetic.DEFAULT_FPS
    sample_rate: int = synthetic.DEFAULT_SAMPLE_RATE
    event_seconds: Tuple[float, float] = (2.0, 4.0)
    max_gap: float = 0.25
    pause: Tuple[float, float] = (0.05, 0.25)
    gain_db: float = 6.0
    noise_db: Tuple[float, float] = (-55.0, -40.0)
    identity: str = "auto"
    glyph_size: Tuple[float, float] = (0.45, 0.8)
    class_colours: bool = False

    def __post_init__(self):
        check_choice("identity", self.identity, IDENTITIES)
        if self.size[0] % 2 or self.size[1] % 2:
            raise L3Error(f"Frame size {self.size} must be even in both sides (yuv420p needs it).")

    def replace(self, **changes) -> "SceneSpec":
        return dataclasses.replace(self, **changes)

    def to_json_dict(self) -> dict:
        """The spec as its sidecar stores it (JSON types: tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


# ----------------------------------------------------------------------------------------------
# Pictures


@functools.lru_cache(maxsize=None)
def font_path(name: str) -> str:
    """Path of a font file bundled with matplotlib (mpl-data/fonts/ttf)."""
    import matplotlib

    path = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", name)
    if not os.path.exists(path):
        raise L3Error(f"Font {name} is not in matplotlib's fonts ({os.path.dirname(path)}); "
                      f"choose one of {FONTS}.")
    return path


def resolve_identity(identity: str, classes: Sequence[str]) -> str:
    """"glyph" or "emblem" for `identity` ("auto": glyphs when all names have <= 3 characters)."""
    check_choice("identity", identity, IDENTITIES)
    if identity == "auto":
        return "glyph" if all(len(c) <= 3 for c in classes) else "emblem"
    return identity


def textured_background(size: Tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """uint8 [H, W, 3]: a dim random colour with smooth blotches (a 4x4 grid upsampled) and grain."""
    h, w = size
    base = rng.uniform(20, 90, 3)
    grid = rng.normal(0, 18, (4, 4, 3))
    ys, xs = np.linspace(0, 3, h), np.linspace(0, 3, w)
    y0, x0 = np.minimum(ys.astype(int), 2), np.minimum(xs.astype(int), 2)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    blotch = ((1 - fy) * (1 - fx) * grid[y0][:, x0] + (1 - fy) * fx * grid[y0][:, x0 + 1]
              + fy * (1 - fx) * grid[y0 + 1][:, x0] + fy * fx * grid[y0 + 1][:, x0 + 1])
    grain = rng.normal(0, 4, (h, w, 1))
    return np.clip(base + blotch + grain, 0, 255).astype(np.uint8)


def _bright_colour(hue: float, rng: np.random.Generator) -> Tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, rng.uniform(0.35, 1.0), rng.uniform(0.8, 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def _place(extent: Tuple[int, int], size: Tuple[int, int], rng) -> Tuple[int, int]:
    """Top-left corner that keeps a (h, w) extent inside the frame's margins."""
    (eh, ew), (h, w) = extent, size
    my, mx = int(MARGIN * h), int(MARGIN * w)
    y = int(rng.integers(my, max(my, h - my - eh) + 1))
    x = int(rng.integers(mx, max(mx, w - mx - ew) + 1))
    return y, x


def draw_glyph(frame: np.ndarray, text: str, rng: np.random.Generator, glyph_size,
               hue=None) -> dict:
    """Draws `text` in a random font, size, colour (of `hue` when given) and place; returns
    {box, colour, font}."""
    from PIL import Image, ImageDraw, ImageFont

    h, w = frame.shape[:2]
    font_name = FONTS[int(rng.integers(len(FONTS)))]
    px = int(rng.uniform(*glyph_size) * min(h, w))
    room = (1 - 2 * MARGIN) * min(h, w)
    for _ in range(8):  # shrink until the text fits inside the margins
        font = ImageFont.truetype(font_path(font_name), max(px, 6))
        x0, y0, x1, y1 = font.getbbox(text)
        if max(x1 - x0, y1 - y0) <= room or px <= 6:
            break
        px = int(px * room / max(x1 - x0, y1 - y0))
    top, left = _place((y1 - y0, x1 - x0), (h, w), rng)
    colour = _bright_colour(rng.uniform() if hue is None else hue, rng)
    image = Image.fromarray(frame)
    ImageDraw.Draw(image).text((left - x0, top - y0), text, font=font, fill=colour)
    frame[...] = np.asarray(image)
    box = [left, top, min(w, left + x1 - x0), min(h, top + y1 - y0)]
    return {"box": box, "colour": list(colour), "font": font_name}


def emblem_shape(label: str) -> dict:
    """The class's emblem, fixed by its name: corners, inner radius, rotation, hue."""
    rng = np.random.default_rng(zlib.crc32(label.encode()))
    return {"corners": int(rng.integers(3, 9)), "inner": float(rng.uniform(0.35, 1.0)),
            "rotation": float(rng.uniform(0, 2 * np.pi)), "hue": float(rng.uniform())}


def draw_emblem(frame: np.ndarray, label: str, rng: np.random.Generator, glyph_size) -> dict:
    """Draws the class's emblem at a random size and place; returns {box, colour, font: None}."""
    from PIL import Image, ImageDraw

    h, w = frame.shape[:2]
    shape = emblem_shape(label)
    side = int(rng.uniform(*glyph_size) * min(h, w) * (1 - 2 * MARGIN))
    top, left = _place((side, side), (h, w), rng)
    n = shape["corners"]
    angles = shape["rotation"] + np.pi * np.arange(2 * n) / n
    radii = np.where(np.arange(2 * n) % 2 == 0, 1.0, shape["inner"]) * side / 2
    points = [(left + side / 2 + r * np.cos(a), top + side / 2 + r * np.sin(a))
              for r, a in zip(radii, angles)]
    colour = _bright_colour(shape["hue"] + rng.normal(0, 0.02), rng)
    image = Image.fromarray(frame)
    ImageDraw.Draw(image).polygon(points, fill=colour)
    frame[...] = np.asarray(image)
    return {"box": [left, top, left + side, top + side], "colour": list(colour), "font": None}


# ----------------------------------------------------------------------------------------------
# Sounds


@functools.lru_cache(maxsize=4096)
def load_recording(path: str, sample_rate: int) -> np.ndarray:
    """float32 [samples] mono at `sample_rate`, trimmed of leading/trailing silence, RMS SPEECH_RMS.

    Raises:
        L3Error: an unreadable file, or one that is silent throughout.
    """
    import soxr

    audio, rate = media.read_audio(path)
    audio = audio.mean(axis=1)
    if rate != sample_rate:
        audio = soxr.resample(audio, rate, sample_rate, quality="HQ").astype(np.float32)
    hop = max(1, sample_rate // 100)
    frames = len(audio) // hop
    rms = np.sqrt(np.mean(audio[:frames * hop].reshape(frames, hop) ** 2, axis=1) + 1e-12)
    if not frames or rms.max() < 1e-5:  # below -100 dBFS
        raise L3Error(f"{path} is silent; remove it from the collection.")
    loud = np.flatnonzero(20 * np.log10(rms / rms.max()) > -TRIM_DB)
    audio = audio[loud[0] * hop:(loud[-1] + 1) * hop]
    return (audio * SPEECH_RMS / np.sqrt(np.mean(audio ** 2))).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Clips


def random_scene(items: Sequence[Item], classes: Sequence[str], spec: SceneSpec,
                 rng: np.random.Generator) -> List[dict]:
    """Events (without pictures) filling spec.seconds: a class, then recordings of it back to back.

    Every class of `classes` that has recordings in `items` is equally likely.
    """
    pool = {}
    for item in items:
        pool.setdefault(item.label, []).append(item.path)
    present = [c for c in classes if c in pool]
    if len(present) < 2:
        raise L3Error(f"Scenes need recordings of at least 2 classes; got {present}.")
    events, t = [], float(rng.uniform(0, spec.max_gap))
    while True:
        label = present[int(rng.integers(len(present)))]
        target = t + float(rng.uniform(*spec.event_seconds))
        cursor, recordings = t + LEAD_SECONDS, []
        while True:
            path = pool[label][int(rng.integers(len(pool[label])))]
            length = len(load_recording(path, spec.sample_rate)) / spec.sample_rate
            end = cursor + length
            if end + LEAD_SECONDS > spec.seconds or (recordings and end > target):
                break
            recordings.append({"path": path, "start": round(cursor, 4), "end": round(end, 4),
                               "gain_db": round(float(rng.uniform(-spec.gain_db, spec.gain_db)), 2)})
            cursor = end + float(rng.uniform(*spec.pause))
        if not recordings:
            return events
        end = recordings[-1]["end"] + LEAD_SECONDS
        events.append({"label": label, "class": list(classes).index(label), "start": round(t, 4),
                       "end": round(end, 4), "recordings": recordings})
        t = end + float(rng.uniform(0, spec.max_gap))


def make_scene_clip(path: str, events: List[dict], classes: Sequence[str], spec: SceneSpec,
                    seed: int = 0, extra=None) -> str:
    """Writes one clip (mp4 + JSON sidecar) that shows and plays `events` (from `random_scene`).

    The pictures (boxes, colours, fonts) are drawn here with `seed` and added to the sidecar.

    Returns:
        `path`.
    """
    rng = np.random.default_rng(seed)
    identity = resolve_identity(spec.identity, classes)
    background = textured_background(tuple(spec.size), rng)
    sr = spec.sample_rate
    noise_rms = 10 ** (float(rng.uniform(*spec.noise_db)) / 20)
    audio = rng.normal(0, noise_rms, int(round(spec.seconds * sr))).astype(np.float32)
    pictures, drawn = [], []
    for event in events:
        picture = background.copy()
        if identity == "glyph":
            hue = event["class"] / len(classes) if spec.class_colours else None
            drawn.append({**event, **draw_glyph(picture, event["label"], rng, spec.glyph_size, hue)})
        else:
            drawn.append({**event, **draw_emblem(picture, event["label"], rng, spec.glyph_size)})
        pictures.append(picture)
        for rec in event["recordings"]:
            wave = load_recording(rec["path"], sr) * 10 ** (rec["gain_db"] / 20)
            start = int(round(rec["start"] * sr))
            wave = wave[: len(audio) - start]
            audio[start:start + len(wave)] += wave
    np.clip(audio, -1.0, 1.0, out=audio)

    def frame_at(t):
        for event, picture in zip(drawn, pictures):
            if event["start"] <= t < event["end"]:
                return picture
        return background

    meta = {"size": list(spec.size), "fps": float(spec.fps), "sample_rate": int(sr),
            "seconds": float(spec.seconds), "seed": int(seed), "classes": list(classes),
            "identity": identity, "events": drawn, **(extra or {})}
    return synthetic.write_mp4(path, frame_at, audio, tuple(spec.size), spec.fps, sr, meta)


def seen_and_heard(meta: dict):
    """(seen, heard) event lists of a scene sidecar, as `ceiling.collection_ceiling` takes them:
    the class on screen during each event, and the class sounding during each recording."""
    seen = [{"kind": e["class"], "start": e["start"], "end": e["end"]} for e in meta["events"]]
    heard = [{"kind": e["class"], "start": r["start"], "end": r["end"]}
             for e in meta["events"] for r in e["recordings"]]
    return seen, heard


def _make_one(job) -> str:
    path, items, classes, spec, params, index = job
    rng = np.random.default_rng([params["seed"], index])
    events = random_scene(items, classes, spec, rng)
    return make_scene_clip(path, events, classes, spec, seed=int(rng.integers(2**31)),
                           extra={"params": params})


def make_scene_collection(out_dir, items: Sequence[Item], num_clips: int, *,
                          spec: SceneSpec = SceneSpec(), classes=None, seed: int = 0,
                          workers: int = 1) -> List[str]:
    """Writes `num_clips` scene clips `scene_00000.mp4`... (with sidecars) into `out_dir`.

    Cached like `synthetic.make_collection`: a clip whose sidecar records the same parameters
    (spec, seed, classes and the recordings' paths) is kept, so a second call returns at once and
    an interrupted one resumes. Clip i depends only on (seed, i) and the recordings.

    Args:
        items: the labelled recordings this collection may play (one split of `labelled`).
        classes: every class name in a fixed order (the sidecar's "class" indexes it); default the
            sorted labels of `items`. Give the full list when a split lacks some classes.
        workers: processes writing clips in parallel.

    Returns:
        the clip paths, sorted.
    """
    items = sorted(items, key=lambda item: item.path)
    classes = list(classes or sorted({item.label for item in items}))
    recordings = hashlib.sha1("\n".join(f"{i.path}\t{i.label}" for i in items).encode()).hexdigest()
    params = {"spec": spec.to_json_dict(), "seed": int(seed), "classes": classes,
              "recordings": len(items), "recordings_sha1": recordings}
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, f"scene_{i:05d}.mp4") for i in range(num_clips)]
    todo = [(p, items, classes, spec, params, i) for i, p in enumerate(paths)
            if not synthetic.is_complete(p, params)]
    synthetic.run_jobs(_make_one, todo, workers)
    return paths
