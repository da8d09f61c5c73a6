"""Where the sound comes from: Grad-CAM of the correspondence score on the vision tower.

For a frame and the 1 s of audio centred on the moment it is shown, the heatmap is Grad-CAM
(Selvaraju et al. 2017) of P(correspond) (the AVC model's softmax column 1) on the last conv map of
the vision tower (`vision_block4_relu2`, "conv4" in the paper): each channel is weighted by the
spatial mean of the gradient of the score, the weighted sum is rectified and scaled to [0, 1]. It
marks the places whose activity makes the model say "this sound belongs to this picture" (the
paper's Sec. 5 shows unit activations instead; Grad-CAM ties the map to the given audio).

The frame is resized to the model's image size as a whole (no crop, aspect not kept), so the
heatmap covers the full frame. Audio windows come from `embed.frame_audio` (centre-padded, so
the window for time t spans [t - 0.5, t + 0.5] s).
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from l3_keras import embed, models
from l3_keras.config import DataConfig, ModelConfig

QUADRANTS = ("top-left", "top-right", "bottom-left", "bottom-right")  # synthetic.py's numbering
DISPLAY_SHORT_SIDE = 256  # frames are decoded at this size for the overlays


def _cam_model(l3, cfg: ModelConfig) -> keras.Model:
    conv = l3.get_layer(models.last_conv_name(cfg, "vision")).output
    return keras.Model(l3.input, [conv, l3.output], name="gradcam")


def gradcam(l3, cfg: ModelConfig, images, audio, batch_size: int = 32) -> np.ndarray:
    """Grad-CAM heatmaps of P(correspond) for frame/audio pairs.

    Args:
        l3: the AVC model.
        cfg: its ModelConfig.
        images: float32 [N, H, W, 3] in [0, 1] at cfg.image_size.
        audio: float32 [N, samples] at cfg.sample_rate (1 s windows).

    Returns:
        float32 [N, H, W] in [0, 1] (bilinear upsampling of the conv4 map; all zero when no
        location raises the score).
    """
    cam_model = _cam_model(l3, cfg)
    out = []
    for start in range(0, len(images), batch_size):
        x = {"image": tf.convert_to_tensor(images[start:start + batch_size], tf.float32),
             "audio": tf.convert_to_tensor(audio[start:start + batch_size], tf.float32)}
        with tf.GradientTape() as tape:
            fmap, probs = cam_model(x, training=False)
            score = probs[:, 1]
        # Pairs are independent, so the gradient of the sum is each pair's own gradient.
        grads = tape.gradient(score, fmap)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * fmap, axis=-1))
        cam = cam / (tf.reduce_max(cam, axis=(1, 2), keepdims=True) + 1e-8)
        cam = tf.image.resize(cam[..., None], cfg.image_size, method="bilinear")[..., 0]
        out.append(cam.numpy())
    return np.concatenate(out).astype(np.float32)


def peak_quadrant(heatmap: np.ndarray) -> int:
    """Quadrant (0 TL, 1 TR, 2 BL, 3 BR) holding the heatmap's maximum."""
    h, w = heatmap.shape
    y, x = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return int(2 * (y >= h / 2) + (x >= w / 2))


def _decode(path, cfg: ModelConfig, fps: float):
    from l3_keras.data.video import decode_video

    data_config = DataConfig.for_model(cfg, fps=fps, max_seconds=None,
                                       frame_short_side=DISPLAY_SHORT_SIDE)
    return decode_video(path, data_config)


def _frames_at(video, times):
    """uint8 frames [N, h, w, 3] shown closest to each time."""
    index = [int(np.argmin(np.abs(video.frame_times - t))) for t in times]
    return np.stack([tf.io.decode_jpeg(video.frames[i], channels=3).numpy() for i in index])


def pairs_at(video, cfg: ModelConfig, times: Sequence[float], hop: float = 0.05):
    """(display frames uint8 [N, h, w, 3], model images [N, H, W, 3], audio windows [N, S]) for
    the frame shown at each time and the 1 s of audio centred on it (nearest `hop` grid point)."""
    audio = embed.prepare_audio(video.audio, video.sample_rate, cfg)
    windows, stamps = embed.frame_audio(audio, cfg, hop, center=True)
    pick = [int(np.argmin(np.abs(stamps - t))) for t in times]
    frames = _frames_at(video, times)
    images = tf.image.resize(frames.astype(np.float32) / 255.0, cfg.image_size,
                             method="bilinear", antialias=True).numpy()
    return frames, images, np.stack([windows[i] for i in pick]).astype(np.float32)


def localize_video(l3, cfg: ModelConfig, path, times: Optional[Sequence[float]] = None,
                   every: float = 1.0, out_dir=None, fps: float = 10.0) -> dict:
    """Heatmaps of where the sound comes from in a video.

    Args:
        l3, cfg: the AVC model and its config.
        path: video file.
        times: seconds to localise at; default every `every` seconds from 0.5 s.
        out_dir: if set, writes heatmaps.npz (times, heatmaps [N, H, W], p_correspond [N]) and
            one overlay PNG per time (t{seconds:07.2f}.png).
        fps: frames decoded per second (the frame nearest each time is used).

    Returns:
        dict: times [N], heatmaps float32 [N, H, W], p_correspond [N], peak_quadrant [N], files.
    """
    video = _decode(path, cfg, fps)
    if times is None:
        times = np.arange(0.5, max(video.duration, 0.5) + 1e-6, every)
    times = np.asarray(times, np.float64)
    frames, images, audio = pairs_at(video, cfg, times)
    heatmaps = gradcam(l3, cfg, images, audio)
    probs = np.asarray(l3.predict({"image": images, "audio": audio}, verbose=0))[:, 1]
    result = {"times": times, "heatmaps": heatmaps, "p_correspond": probs,
              "peak_quadrant": [peak_quadrant(h) for h in heatmaps], "files": []}
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        npz = os.path.join(out_dir, "heatmaps.npz")
        np.savez_compressed(npz, times=times, heatmaps=heatmaps, p_correspond=probs)
        result["files"].append(npz)
        for t, frame, heat, p in zip(times, frames, heatmaps, probs):
            png = os.path.join(out_dir, f"t{t:07.2f}.png")
            save_overlay(frame, heat, png, title=f"t = {t:.2f} s, P(corr) = {p:.2f}")
            result["files"].append(png)
    return result


def draw_overlay(ax, frame, heatmap, title: str = "", boxes=(), alpha: float = 0.5):
    """Draws the frame, the heatmap stretched over it, and optional (box, colour, style) outlines."""
    import matplotlib.patches as patches

    h, w = frame.shape[:2]
    ax.imshow(frame)
    ax.imshow(heatmap, cmap="jet", alpha=alpha, extent=(0, w, h, 0), vmin=0, vmax=1)
    for (x0, y0, x1, y1), colour, style in boxes:
        ax.add_patch(patches.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False,
                                       edgecolor=colour, linestyle=style, linewidth=1.5))
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def save_overlay(frame, heatmap, path, title: str = "") -> str:
    from l3_keras.evaluate import report

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 3 * frame.shape[0] / frame.shape[1]))
    draw_overlay(ax, frame, heatmap, title)
    return report.save_figure(fig, path)


# ----------------------------------------------------------------------------------------------
# Evaluation on synthetic clips with known sound sources


def synthetic_cases(clip_paths: Sequence[str], min_seconds: float = 1.0):
    """(path, time, event) for the middle of every event of at least `min_seconds`; each event
    dict also gets the clip's frame "size" [H, W] (its boxes are in those pixels)."""
    from l3_keras.data import synthetic

    cases = []
    for path in clip_paths:
        meta = synthetic.read_sidecar(path)
        for event in meta["events"]:
            if event["end"] - event["start"] >= min_seconds:
                cases.append((path, 0.5 * (event["start"] + event["end"]),
                              {**event, "size": meta["size"]}))
    return cases


def quadrant_hit_rate(l3, cfg: ModelConfig, clip_paths: Sequence[str], out_dir=None,
                      figure_cases: int = 8) -> dict:
    """How often the heatmap peak falls in the sounding object's quadrant (synthetic clips).

    Each event of each clip is one case: the frame at the event's middle and the 1 s of audio
    centred there. Chance is 25%; with a silent distractor in another quadrant, a map that marks
    "any object" scores about 50%.

    Returns:
        dict: cases, hit_rate, ci95, distractor_rate (peak on the silent object's quadrant, if any),
        mean_p_correspond; with out_dir also report.json, heatmaps.npz and localization.png.
    """
    from l3_keras.evaluate.avc import wilson_interval

    cases = synthetic_cases(clip_paths)
    frames, images, audio, events = [], [], [], []
    for path in sorted({c[0] for c in cases}):
        mine = [c for c in cases if c[0] == path]
        f, x, a = pairs_at(_decode(path, cfg, 10.0), cfg, [c[1] for c in mine])
        frames += list(f)
        images.append(x)
        audio.append(a)
        events += [c[2] for c in mine]
    images, audio = np.concatenate(images), np.concatenate(audio)
    heatmaps = gradcam(l3, cfg, images, audio)
    peaks = np.array([peak_quadrant(h) for h in heatmaps])
    truth = np.array([e["quadrant"] for e in events])
    distractor = np.array([(e.get("distractor") or {}).get("quadrant", -1) for e in events])
    probs = np.asarray(l3.predict({"image": images, "audio": audio}, verbose=0))[:, 1]
    hits = int((peaks == truth).sum())
    result = {"cases": len(events), "hit_rate": hits / len(events),
              "ci95": list(wilson_interval(hits, len(events))),
              "distractor_rate": float(np.mean(peaks[distractor >= 0] == distractor[distractor >= 0]))
              if (distractor >= 0).any() else None,
              "mean_p_correspond": float(probs.mean()), "chance": 0.25}
    if out_dir is not None:
        from l3_keras.evaluate import report

        os.makedirs(out_dir, exist_ok=True)
        np.savez_compressed(os.path.join(out_dir, "heatmaps.npz"), heatmaps=heatmaps, peaks=peaks,
                            truth=truth, p_correspond=probs)
        plot_cases(frames[:figure_cases], heatmaps[:figure_cases], events[:figure_cases],
                   os.path.join(out_dir, "localization.png"))
        report.write_json(out_dir, {"localization": result})
    return result


def plot_cases(frames, heatmaps, events, path, columns: int = 4, dpi: int = 80) -> str:
    """A grid of overlays; the sounding object's box in green, the silent distractor's dashed white.

    Boxes are in the clip's pixels (event["size"]); frames may be decoded at another size.
    """
    from l3_keras.evaluate import report

    import matplotlib.pyplot as plt

    rows = -(-len(frames) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.4 * rows), squeeze=False)
    for ax in axes.flat[len(frames):]:
        ax.axis("off")
    for ax, frame, heat, event in zip(axes.flat, frames, heatmaps, events):
        scale = frame.shape[0] / event["size"][0]
        boxes = [(np.multiply(event["box"], scale), "lime", "-")]
        if event.get("distractor"):
            boxes.append((np.multiply(event["distractor"]["box"], scale), "white", "--"))
        hit = peak_quadrant(heat) == event["quadrant"]
        draw_overlay(ax, frame, heat, f"{event['name']} {'hit' if hit else 'miss'}", boxes)
    fig.suptitle("Grad-CAM of P(correspond): green = sounding object, white dashed = silent",
                 fontsize=9)
    return report.save_figure(fig, path, dpi=dpi)
