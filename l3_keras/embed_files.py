"""`l3 embed`: files and folders in, one `.npz` of embeddings per input file out.

Output keys: audio and image -> `embedding`, `timestamps` (images: timestamps = [0.]); video ->
`audio_embedding`, `audio_timestamps`, `image_embedding`, `image_timestamps` (times in seconds on
the axis of `embed`'s module docstring). A file given inside a folder keeps its relative path
under OUT (`OUT/sub/clip.npz`); a file given directly goes to `OUT/clip.npz`. Each `.npz` is
written to a temporary name and renamed, so an interrupted run leaves no truncated outputs.
Unreadable files are skipped with a one-line reason.

Audio is decoded with PyAV (`embed_stream`): a long file streams through in chunks (memory does
not grow with its length); small files (under SMALL_FILE_BYTES) are decoded whole and embedded
in groups, so their windows fill batches across files.
"""
from __future__ import annotations

import pathlib

import numpy as np

from l3_keras import embed, files, media
from l3_keras.errors import L3Error, check_choice

SMALL_FILE_BYTES = 4 << 20


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


def embed_one(media_type, path, models, hop_size, batch_size, mode="exact") -> dict:
    """The arrays of one output file."""
    if media_type == media.AUDIO:
        emb, ts = embed.get_audio_embedding(path, None, models, hop_size, batch_size=batch_size,
                                            mode=mode)
        return {"embedding": emb, "timestamps": ts}
    if media_type == media.IMAGE:
        return {
            "embedding": embed.get_image_embedding(media.read_image(path), models),
            "timestamps": np.zeros(1),
        }
    return embed.process_video_file(path, models, hop_size, batch_size=batch_size, mode=mode)


def embed_small_audio(paths, models, hop_size, batch_size, mode) -> list:
    """[(path, arrays or the exception)] for small audio files, windows batched across them."""
    from l3_keras.embed_stream import decode_audio

    decoded = []
    for path in paths:
        try:
            decoded.append((path, decode_audio(path, models.config.sample_rate)))
        except Exception as e:  # noqa: BLE001 - reported per file by the caller
            decoded.append((path, e))
    good = [(p, a) for p, a in decoded if not isinstance(a, Exception)]
    rate = models.config.sample_rate
    embs, stamps = embed.get_audio_embedding([a for _, a in good], [rate] * len(good), models,
                                             hop_size, batch_size=batch_size, mode=mode) if good else ([], [])
    arrays = {p: {"embedding": e, "timestamps": t} for (p, _), e, t in zip(good, embs, stamps)}
    return [(p, arrays.get(p, a)) for p, a in decoded]


def save_npz(path, arrays):
    """np.savez written atomically (`files.atomic_write`)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with files.atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def embed_files(media_type, inputs, out, model, hop_size=0.1, batch_size=32, progress=True,
                mode="exact", precision=None) -> int:
    """Embeds every input file into `out` (layout in the module docstring).

    Args:
        media_type: "audio", "image" or "video".
        inputs: files and folders.
        out: output folder.
        model: export folder (or anything `embed.resolve_models` takes).
        hop_size: seconds between audio windows (and video frames).
        batch_size: windows per forward pass; also the most small audio files grouped together.
        progress: show a tqdm bar over files.
        mode: audio mode, "exact" or "shared" (`embed.get_audio_embedding`).
        precision: None (float32), "bf16" or "fp16" mixed precision.

    Returns:
        the number of files embedded (skipped files are printed with their reason).

    Raises:
        L3Error: no inputs found, or the model cannot be loaded.
    """
    from tqdm import tqdm

    pairs = list_inputs(media_type, inputs)
    models = embed.resolve_models(model, precision=precision)
    done, skipped, seen = 0, 0, set()
    bar = tqdm(total=len(pairs), desc=f"embed {media_type}", unit="file", disable=not progress)

    def report(src, rel, result):
        nonlocal done, skipped
        try:
            if isinstance(result, Exception):
                raise result
            save_npz(pathlib.Path(out) / rel, result)
            done += 1
        except Exception as e:  # noqa: BLE001 - one bad file must not stop a folder of thousands
            skipped += 1
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            tqdm.write(f"skipped {src}: {reason}")
        bar.update(1)

    group = []  # small audio files waiting to be embedded together

    def flush():
        for (src, rel), (_, result) in zip(group, embed_small_audio(
                [s for s, _ in group], models, hop_size, batch_size, mode)):
            report(src, rel, result)
        group.clear()

    for src, rel in pairs:
        if rel in seen:
            report(src, rel, L3Error(f"output {rel} already written for another input of the same name"))
            continue
        seen.add(rel)
        if media_type == media.AUDIO and src.is_file() and src.stat().st_size < SMALL_FILE_BYTES:
            group.append((src, rel))
            if len(group) >= batch_size:
                flush()
            continue
        try:
            result = embed_one(media_type, src, models, hop_size, batch_size, mode)
        except Exception as e:  # noqa: BLE001 - reported by report()
            result = e
        report(src, rel, result)
    flush()
    bar.close()
    print(f"embedded {done} file(s), skipped {skipped}, into {out}")
    return done
