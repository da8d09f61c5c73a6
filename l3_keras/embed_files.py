"""`l3 embed`: files and folders in, one `.npz` of embeddings per input file out.

Output keys: audio and image -> `embedding`, `timestamps` (images: timestamps = [0.]); video ->
`audio_embedding`, `audio_timestamps`, `image_embedding`, `image_timestamps` (times in seconds on
the axis of `embed`'s module docstring). A file given inside a folder keeps its relative path
under OUT (`OUT/sub/clip.npz`); a file given directly goes to `OUT/clip.npz`. Each `.npz` is
written to a temporary name and renamed, so an interrupted run leaves no truncated outputs.
Unreadable files are skipped with a one-line reason.
"""
from __future__ import annotations

import os
import pathlib
import tempfile

import numpy as np

from l3_keras import embed
from l3_keras.errors import L3Error, check_choice

EXTENSIONS = {
    "audio": (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"),
    "image": (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"),
    "video": (".mp4", ".webm", ".mkv", ".avi", ".mov", ".mpg"),
}


def list_inputs(kind: str, inputs) -> list:
    """[(input file, output name relative to OUT)] for files and folders (recursive, sorted)."""
    check_choice("kind", kind, tuple(EXTENSIONS))
    pairs = []
    for src in map(pathlib.Path, inputs):
        if src.is_dir():
            files = sorted(p for p in src.rglob("*") if p.suffix.lower() in EXTENSIONS[kind])
            pairs += [(p, p.relative_to(src).with_suffix(".npz")) for p in files]
        else:
            # A missing file is listed too, so it is reported as skipped rather than vanishing.
            pairs.append((src, pathlib.Path(src.name).with_suffix(".npz")))
    if not pairs:
        raise L3Error(f"No {kind} files found in {', '.join(map(str, inputs))}.")
    return pairs


def read_audio(path):
    """(float32 [samples, channels], sample rate) with soundfile."""
    import soundfile

    audio, sr = soundfile.read(str(path), dtype="float32", always_2d=True)
    return audio, sr


def read_image(path) -> np.ndarray:
    """uint8 [h, w, c] with c in 1, 3, 4 (palette and 16-bit images converted by PIL)."""
    from PIL import Image

    with Image.open(path) as image:
        if image.mode not in ("L", "RGB", "RGBA"):
            image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
        return np.asarray(image)


def embed_one(kind, path, models, hop_size, batch_size) -> dict:
    """The arrays of one output file."""
    if kind == "audio":
        audio, sr = read_audio(path)
        emb, ts = embed.get_audio_embedding(audio, sr, models, hop_size, batch_size=batch_size)
        return {"embedding": emb, "timestamps": ts}
    if kind == "image":
        return {
            "embedding": embed.get_image_embedding(read_image(path), models),
            "timestamps": np.zeros(1),
        }
    return embed.process_video_file(path, models, hop_size, batch_size=batch_size)


def save_npz(path, arrays):
    """np.savez to a temporary file in the same folder, then renamed into place."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".npz.tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def embed_files(kind, inputs, out, model, hop_size=0.1, batch_size=32, progress=True) -> int:
    """Embeds every input file into `out` (layout in the module docstring).

    Args:
        kind: "audio", "image" or "video".
        inputs: files and folders.
        out: output folder.
        model: export folder (or anything `embed.resolve_models` takes).
        hop_size: seconds between audio windows (and video frames).
        batch_size: windows per forward pass.
        progress: show a tqdm bar.

    Returns:
        the number of files embedded (skipped files are printed with their reason).

    Raises:
        L3Error: no inputs found, or the model cannot be loaded.
    """
    from tqdm import tqdm

    pairs = list_inputs(kind, inputs)
    models = embed.resolve_models(model)
    done, skipped, seen = 0, 0, set()
    bar = tqdm(pairs, desc=f"embed {kind}", unit="file", disable=not progress)
    for src, rel in bar:
        try:
            if rel in seen:
                raise L3Error(f"output {rel} already written for another input of the same name")
            seen.add(rel)
            save_npz(pathlib.Path(out) / rel, embed_one(kind, src, models, hop_size, batch_size))
            done += 1
        except Exception as e:  # noqa: BLE001 - one bad file must not stop a folder of thousands
            skipped += 1
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            tqdm.write(f"skipped {src}: {reason}")
    print(f"embedded {done} file(s), skipped {skipped}, into {out}")
    return done
