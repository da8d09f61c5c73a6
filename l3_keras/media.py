"""Media files: which extensions count as audio, image or video, and reading audio and image files.

The one owner of file-type lists (`prepare`, `l3 embed` and the linear probes all list files with
`find_files`) and of the readers: audio through soundfile (WAV, FLAC, OGG, MP3, AIFF), images
through Pillow (palette, 16-bit and CMYK images converted). Videos are decoded by `data.video`.

Nothing here imports TensorFlow; soundfile and Pillow are imported by the readers only.
"""
from __future__ import annotations

import os
from typing import List, Tuple

import numpy as np

from l3_keras.errors import L3Error, check_choice

AUDIO, IMAGE, VIDEO = "audio", "image", "video"
EXTENSIONS = {
    AUDIO: (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"),
    IMAGE: (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"),
    VIDEO: (".mp4", ".webm", ".mkv", ".avi", ".mov", ".mpg"),
}
MEDIA_TYPES = tuple(EXTENSIONS)


def is_media(path, media_type: str) -> bool:
    """Whether `path` ends in one of `media_type`'s extensions (any case)."""
    return os.fspath(path).lower().endswith(EXTENSIONS[media_type])


def find_files(root, media_type: str) -> List[str]:
    """The `media_type` files under folder `root` (recursive), sorted.

    Raises:
        L3Error: unknown media type.
    """
    check_choice("media type", media_type, MEDIA_TYPES)
    return sorted(os.path.join(folder, name) for folder, _, names in os.walk(os.fspath(root))
                  for name in names if is_media(name, media_type))


def read_audio(path) -> Tuple[np.ndarray, int]:
    """(float32 [samples, channels] in [-1, 1], sample rate in Hz) of an audio file.

    Raises:
        L3Error: the file is missing or not audio soundfile can read.
    """
    import soundfile

    try:
        audio, sr = soundfile.read(os.fspath(path), dtype="float32", always_2d=True)
    except (RuntimeError, OSError) as err:  # soundfile.LibsndfileError is a RuntimeError
        raise L3Error(f"Cannot read {path}: {err}") from err
    return audio, sr


def read_image(path) -> np.ndarray:
    """uint8 [height, width, channels] with channels 1 (grey), 3 (RGB) or 4 (RGBA).

    Palette, 16-bit, CMYK and other modes are converted to RGB (RGBA when they carry alpha); an
    animation gives its first frame.

    Raises:
        L3Error: the file is missing or not an image Pillow can read.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.mode not in ("L", "RGB", "RGBA"):
                image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
            return np.asarray(image)
    except (OSError, UnidentifiedImageError) as err:
        raise L3Error(f"Cannot read {path}: {err}") from err
