"""`l3 import-openl3`: OpenL3's published weights -> an export like `l3 export` writes.

OpenL3 (Cramer et al. 2019) trained L3 towers on AudioSet videos: audio networks for the `linear`,
`mel128` and `mel256` front ends, each with an image network, for `music` and `env` content. Its
files load into our `openl3-<repr>` presets (same topology, `config.py`); the file layout is in
`openl3_weights.py`.

OpenL3 publishes no audio-visual correspondence head, so the export serves the embedding
signatures only (serving_default = audio_embedding), and without --image no image ones either.
l3.keras still holds the whole AVC model (the transfer features are cut from it); export.json lists
its parts without OpenL3 weights under "untrained".
"""
from __future__ import annotations

import hashlib
import pathlib
from typing import Optional

from l3_keras import export, models, openl3_weights
from l3_keras.config import get_preset
from l3_keras.errors import L3Error, check_choice


def load_tower_weights(l3, cfg, prefix: str, path):
    """Sets the `prefix` ("audio" / "vision") tower of `l3` from an OpenL3 weight file.

    All layers are checked before any is set, so a bad file leaves the model as it was.

    Raises:
        L3Error: unreadable file, wrong layer count, weight names or shapes (see
            `openl3_weights.check_layers`).
    """
    plan = openl3_weights.openl3_plan(cfg, prefix)
    values = openl3_weights.check_layers(openl3_weights.read_layers(path), plan, path, prefix)
    for layer, arrays in zip(plan, values):
        l3.get_layer(layer.name).set_weights(arrays)


def build_openl3(audio_weights, image_weights=None, input_repr: Optional[str] = None):
    """The `openl3-<repr>` AVC model with OpenL3's audio (and image) weights loaded.

    Args:
        audio_weights: OpenL3 audio weight file (.h5 or .h5.gz).
        image_weights: OpenL3 image weight file, or None (the vision tower stays random).
        input_repr: "linear", "mel128" or "mel256"; default: from the audio file's name.

    Returns:
        (l3 keras.Model, ModelConfig).
    """
    if input_repr is None:
        kind, input_repr, _ = openl3_weights.parse_file_name(audio_weights)
        if kind != "audio":
            raise L3Error(f"{audio_weights} is named as an image weight file; pass the audio one first.")
    check_choice("input representation", input_repr, openl3_weights.INPUT_REPRS)
    cfg = get_preset(f"openl3-{input_repr}")
    l3 = models.build_l3(cfg)
    load_tower_weights(l3, cfg, "audio", audio_weights)
    if image_weights is not None:
        load_tower_weights(l3, cfg, "vision", image_weights)
    return l3, cfg


def sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def import_openl3(audio_weights, name, image_weights=None, input_repr=None, content_type=None,
                  root="saved_models", version=None, overwrite=False, hop_size=0.1, tflite=False):
    """Writes `root/name` from OpenL3 weight files, laid out as `export.export` does.

    Args:
        audio_weights: OpenL3 audio weights, e.g. openl3_audio_mel256_music.h5 (or .h5.gz).
        name: export name.
        image_weights: the matching image weights (openl3_image_mel256_music.h5), or None.
        input_repr, content_type: override what the file name says.
        root, version, overwrite, hop_size, tflite: as for `export.export`.

    Returns:
        pathlib.Path of the export folder.
    """
    named = _names(audio_weights)
    input_repr = input_repr or named[0]
    content_type = content_type or named[1]
    if content_type is not None:
        check_choice("content type", content_type, openl3_weights.CONTENT_TYPES)
    image_named = _names(image_weights) if image_weights is not None else (None, None)
    if None not in named and None not in image_named and image_named != named:
        raise L3Error(
            f"{image_weights} and {audio_weights} come from different OpenL3 models "
            f"({image_named} vs {named}); OpenL3 trained each image network with its "
            "audio one: pass the matching pair."
        )
    l3, cfg = build_openl3(audio_weights, image_weights, input_repr)
    sources = {
        "openl3": {
            "input_repr": input_repr,
            "content_type": content_type,
            "files": {
                kind: {"path": str(pathlib.Path(p).resolve()), "sha256": sha256(p)}
                for kind, p in (("audio", audio_weights), ("image", image_weights)) if p is not None
            },
        },
        "untrained": ["fusion"] + ([] if image_weights is not None else ["vision"]),
    }
    parts = ("audio", "image") if image_weights is not None else ("audio",)
    return export.write_export(l3, cfg, name, source=str(audio_weights), info=sources, root=root,
                               version=version, overwrite=overwrite, parts=parts,
                               hop_size=hop_size, tflite=tflite)


def _names(path):
    """(input_repr, content_type) from an OpenL3 file name, (None, None) if it does not say."""
    try:
        return openl3_weights.parse_file_name(path)[1:]
    except L3Error:
        return None, None
