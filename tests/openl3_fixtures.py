"""What the OpenL3 parity fixtures are made of, shared by scripts/make_openl3_fixtures.py and tests.

Weight files: seeded numpy weights (`openl3_weights.random_weights`) written in OpenL3's published
layout, so the tests re-create identical files without OpenL3 or its venv. Inputs: 48 kHz audio
(seeded noise, and with the shared data the 1 s chirp fixture and bento.mp4's sound track) and
224 x 224 uint8 images (seeded noise, and a crop of daisy.jpg), fed to OpenL3's own code at 48 kHz
and 224 x 224 so that its resampler and image scaling do not enter the comparison.
"""
import pathlib

import numpy as np

from l3_keras import openl3_weights
from l3_keras.config import get_preset

SEED = 11
HOP = 0.5  # seconds; with center=True, 1 s of audio gives 2 windows
AUDIO_REPRS = ("linear", "mel128", "mel256")
IMAGE_REPR = "mel256"  # OpenL3 pairs an image network with each audio one; all share a topology,
# and the fixtures' image weights are the same under every input_repr's file name.
FIXTURES = pathlib.Path(__file__).parent / "data" / "openl3_embeddings.npz"
_INPUT_STATS = {"audio": (-40.0, 400.0), "vision": (0.0, 0.3)}  # dB in [-80, 0]; pixels in [-1, 1]


def weight_file(folder, kind, input_repr, content_type="music") -> pathlib.Path:
    """Writes (once) the seeded weights of OpenL3's `kind` ("audio"/"image") network for
    `input_repr` under OpenL3's file name, e.g. folder/openl3_audio_mel128_music.h5."""
    path = pathlib.Path(folder) / f"openl3_{kind}_{input_repr}_{content_type}.h5"
    if not path.exists():
        prefix = "audio" if kind == "audio" else "vision"
        plan = openl3_weights.openl3_plan(get_preset(f"openl3-{input_repr}"), prefix)
        seed = SEED * 100 + (AUDIO_REPRS.index(input_repr) if kind == "audio" else 9)
        values = openl3_weights.random_weights(plan, seed, *_INPUT_STATS[prefix])
        openl3_weights.write_keras2_weights(path, plan, values, prefix)
    return path


def noise_audio():
    rng = np.random.default_rng(SEED)
    return (rng.standard_normal(int(1.2 * 48000)) * 0.1).astype(np.float32)


def noise_image():
    return np.random.default_rng(SEED + 1).integers(0, 256, (224, 224, 3), dtype=np.uint8)


def real_audio(media_root):
    """{"chirp": 1 s, "bento": bento.mp4's 1.1 s (our decoder)}: float32 mono at 48 kHz."""
    from l3_keras.config import DataConfig
    from l3_keras.data.video import decode_streams
    from l3_keras.media import read_audio

    folder = pathlib.Path(media_root) / "fixtures" / "openl3"
    chirp, rate = read_audio(folder / "chirp_1s.wav")
    assert rate == 48000
    bento = decode_streams(folder / "bento.mp4", DataConfig(sample_rate=48000, max_seconds=None))
    return {"chirp": chirp[:, 0], "bento": bento["audio"].astype(np.float32) / 32768}


def real_images(media_root):
    """{"daisy": the central 224 x 224 of every other pixel of daisy.jpg}, uint8 [224, 224, 3]."""
    from l3_keras.media import read_image

    image = read_image(pathlib.Path(media_root) / "fixtures" / "openl3" / "daisy.jpg")[::2, ::2]
    top, left = (image.shape[0] - 224) // 2, (image.shape[1] - 224) // 2
    return {"daisy": np.ascontiguousarray(image[top : top + 224, left : left + 224])}
