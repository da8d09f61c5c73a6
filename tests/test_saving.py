"""`.keras` round trip: saved models load with tf.keras.models.load_model in a fresh Python that
never imports l3_keras, and give the same outputs (allclose 1e-6)."""
import numpy as np
import pytest

from l3_keras import models
from l3_keras.config import get_preset
from tests.helpers import as_list, predict_in_fresh_process, random_inputs


@pytest.mark.parametrize("preset", ["paper"])  # the mel front end: tiny, in test_export.py
def test_keras_files_reload_in_fresh_process(preset, tmp_path):
    cfg = get_preset(preset)
    l3 = models.build_l3(cfg)
    x = random_inputs(cfg, batch=2, seed=1)
    cases = {
        "l3.keras": (l3, x),
        "audio_embedding.keras": (models.audio_embedding_model(l3, cfg, transfer_features=True), x["audio"]),
        "image_embedding.keras": (models.image_embedding_model(l3, cfg), x["image"]),
    }
    for name, (model, inputs) in cases.items():
        model.save(tmp_path / name)
        expected = as_list(model.predict(inputs, verbose=0))
        got = predict_in_fresh_process(tmp_path / name, inputs, tmp_path)
        assert len(got) == len(expected), name
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-6, err_msg=name)
