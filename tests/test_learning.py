"""Learning is a test: the tiny model overfits 32 fixed synthetic pairs.

Each pair shows one of 4 colours and plays one of 4 tones; the label says whether the colour's
kind and the tone's kind agree, so the pairs carry a real audio-visual correspondence.
"""
import keras
import numpy as np

from l3_keras import models
from l3_keras.config import get_preset

TINY = get_preset("tiny")
COLOURS = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], np.float32)
TONES_HZ = [300.0, 700.0, 1500.0, 3100.0]


def fixed_pairs(n=32, seed=0):
    rng = np.random.default_rng(seed)
    h, w = TINY.image_size
    t = np.arange(TINY.audio_samples) / TINY.sample_rate
    labels = np.arange(n) % 2
    images = 0.1 * rng.random((n, h, w, 3), dtype=np.float32)
    audio = 0.01 * rng.standard_normal((n, TINY.audio_samples)).astype(np.float32)
    for i in range(n):
        seen = rng.integers(4)
        heard = seen if labels[i] else (seen + rng.integers(1, 4)) % 4
        images[i, 16:48, 16:48] += COLOURS[seen] * 0.8
        audio[i] += 0.5 * np.sin(2 * np.pi * TONES_HZ[heard] * t).astype(np.float32)
    return {"image": images, "audio": audio}, labels.astype(np.int32)


def test_tiny_model_overfits_32_pairs():
    keras.utils.set_random_seed(0)
    l3 = models.build_l3(TINY)
    l3.compile(keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = fixed_pairs()
    accuracy = []
    for _ in range(8):  # at most 200 full-batch steps
        accuracy += l3.fit(x, y, batch_size=32, epochs=25, verbose=0).history["accuracy"]
        if accuracy[-1] >= 0.95:
            break
    assert accuracy[-1] >= 0.95, f"training accuracy after {len(accuracy)} steps: {accuracy[-5:]}"
