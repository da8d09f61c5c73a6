"""`l3 embed`: files and folders in, one `.npz` of embeddings per input file out.

Output keys: audio and image -> `embedding`, `timestamps` (images: timestamps = [0.]); video ->
`audio_embedding`, `audio_timestamps`, `image_embedding`, `image_timestamps` (times in seconds on
the axis of `embed`'s module docstring). A file given inside a folder keeps its relative path
under OUT (`OUT/sub/clip.npz`); a file given directly goes to `OUT/clip.npz`. Each `.npz` is
written to a temporary name and renamed, so an interrupted run leaves no truncated outputs.
Unreadable files are skipped with a one-line reason.
"""
from __future__ import annotations

import pathlib

import numpy as np

from l3_keras import embed, files, media
from l3_keras.errors import L3Error, check_choice

def list_inputs(media_type: str, inputs) -> list:
    """[(input file, output name relative to OUT)] for files and folders (recursive, sorted)."""
    check_choice("media type", media_type, media.MEDIA_TYPES)
    pairs = []
    for src in map(pathlib.Path, inputs):
        if src.is_dir():
            found = map(pathlib.Path, media.find_files(src, media_type))
            pairs += [(p, p.relative_to(src).with_suffix(".npz")) for p in found]
        else:
            # A missing file is listed too, so it is reported as skipped rather than vanishing.
            pairs.append((src, pathlib.Path(src.name).with_suffix(".npz")))
    if not pairs:
        raise L3Error(f"No {media_type} files found in {', '.join(map(str, inputs))}.")
    return pairs


def embed_one(media_type, path, models, hop_size, batch_size) -> dict:
    """The arrays of one output file."""
    if media_type == media.AUDIO:
        audio, sr = media.read_audio(path)
        emb, ts = embed.get_audio_embedding(audio, sr, models, hop_size, batch_size=batch_size)
        return {"embedding": emb, "timestamps": ts}
    if media_type == media.IMAGE:
        return {
            "embedding": embed.get_image_embedding(media.read_image(path), models),
            "timestamps": np.zeros(1),
        }
    return embed.process_video_file(path, models, hop_size, batch_size=batch_size)


def save_npz(path, arrays):
    """np.savez written atomically (`files.atomic_write`)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with files.atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def embed_files(media_type, inputs, out, model, hop_size=0.1, batch_size=32, progress=True) -> int:
    """Embeds every input file into `out` (layout in the module docstring).

    Args:
        media_type: "audio", "image" or "video".
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

    pairs = list_inputs(media_type, inputs)
    models = embed.resolve_models(model)
    done, skipped, seen = 0, 0, set()
    bar = tqdm(pairs, desc=f"embed {media_type}", unit="file", disable=not progress)
    for src, rel in bar:
        try:
            if rel in seen:
                raise L3Error(f"output {rel} already written for another input of the same name")
            seen.add(rel)
            save_npz(pathlib.Path(out) / rel, embed_one(media_type, src, models, hop_size, batch_size))
            done += 1
        except Exception as e:  # noqa: BLE001 - one bad file must not stop a folder of thousands
            skipped += 1
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            tqdm.write(f"skipped {src}: {reason}")
    print(f"embedded {done} file(s), skipped {skipped}, into {out}")
    return done
