"""L3-Net builders: the shapes and parameter counts the paper fixes, presets, and input errors."""
import keras
import numpy as np
import pytest

from l3_keras import models
from l3_keras.config import PRESETS, ModelConfig, get_preset
from l3_keras.errors import L3Error
from tests.helpers import random_inputs

PAPER = get_preset("paper")


def expected_tower_params(in_channels, filters, convs):
    """Conv3x3 without bias (9 * c_in * c_out) + BatchNorm (4 * c_out: gamma, beta, mean, var)."""
    total, c_in = 0, in_channels
    for f in filters:
        for _ in range(convs):
            total += 9 * c_in * f + 4 * f
            c_in = f
    return total


@pytest.fixture(scope="module")
def paper_l3():
    return models.build_l3(PAPER)


def output_shape(model, layer):
    return tuple(model.get_layer(layer).output.shape)


def test_paper_shapes(paper_l3):
    assert output_shape(paper_l3, "audio_spectrogram_4d") == (None, 257, 199, 1)
    assert output_shape(paper_l3, "vision_block4_relu2") == (None, 28, 28, 512)
    assert output_shape(paper_l3, "audio_block4_relu2") == (None, 32, 24, 512)
    assert output_shape(paper_l3, "vision_pool4") == (None, 512)
    assert output_shape(paper_l3, "audio_pool4") == (None, 512)
    assert output_shape(paper_l3, "fusion_concat") == (None, 1024)
    assert output_shape(paper_l3, "fusion_fc1") == (None, 128)
    assert tuple(paper_l3.output.shape) == (None, 2)


def test_paper_parameter_counts():
    vision = models.build_vision_tower(PAPER)
    audio = models.build_audio_tower(PAPER)
    fusion = models.build_fusion(PAPER)
    assert vision.count_params() == expected_tower_params(3, PAPER.filters, 2) == 4_691_136
    # + the input BatchNorm on the spectrogram (4) + the fixed DFT kernels (2 x 480 x 257)
    assert audio.count_params() == expected_tower_params(1, PAPER.filters, 2) + 4 + 2 * 480 * 257
    assert sum(np.prod(w.shape) for w in audio.trainable_weights) == 4_686_146  # convs 4,682,304 + BN gamma/beta 3,840 + input BN 2
    assert fusion.count_params() == 1024 * 128 + 128 + 128 * 2 + 2
    total = vision.count_params() + audio.count_params() + fusion.count_params()
    assert models.build_l3(PAPER).count_params() == total


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_build_and_predict(preset):
    cfg = get_preset(preset)
    l3 = models.build_l3(cfg)
    x = random_inputs(cfg, batch=2)
    probs = l3.predict(x, verbose=0)
    assert probs.shape == (2, 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    audio = models.audio_embedding_model(l3, cfg)
    image = models.image_embedding_model(l3, cfg)
    assert audio.predict(x["audio"], verbose=0).shape == (2, cfg.embedding_dim)
    assert image.predict(x["image"], verbose=0).shape == (2, cfg.embedding_dim)


def test_transfer_features_are_6144d(paper_l3):
    audio = models.audio_embedding_model(paper_l3, PAPER, transfer_features=True)
    image = models.image_embedding_model(paper_l3, PAPER, transfer_features=True)
    assert [tuple(o.shape) for o in audio.outputs] == [(None, 512), (None, 6144)]
    assert [tuple(o.shape) for o in image.outputs] == [(None, 512), (None, 6144)]


def test_embedding_models_share_weights_with_l3():
    cfg = get_preset("tiny")
    l3 = models.build_l3(cfg)
    audio = models.audio_embedding_model(l3, cfg)
    assert audio.get_layer("audio_block1_conv1") is l3.get_layer("audio_block1_conv1")


def test_layer_names_follow_the_paper(paper_l3):
    names = {layer.name for layer in paper_l3.layers}
    for name in ("vision_block2_conv1", "audio_bn_input", "audio_pool4", "fusion_fc1", "vision_pool3"):
        assert name in names


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_config_json_round_trip(preset):
    cfg = get_preset(preset)
    assert ModelConfig.from_json(cfg.to_json()) == cfg


def test_unknown_preset_names_the_choices():
    with pytest.raises(L3Error, match="expected one of: .*paper.*tiny"):
        get_preset("resnet")


def test_wrong_input_shape_names_the_expected_shape():
    with pytest.raises(L3Error, match=r"\(batch, 224, 224, 3\)"):
        models.build_vision_tower(PAPER, inputs=keras.Input((128, 128, 3)))
    with pytest.raises(L3Error, match=r"\(batch, 48000\)"):
        models.build_audio_tower(PAPER, inputs=keras.Input((16000,)))


def test_bad_config_values_raise():
    with pytest.raises(L3Error, match="frontend"):
        PAPER.replace(frontend="cqt")
    with pytest.raises(L3Error, match="n_mels"):
        PAPER.replace(frontend="mel", n_mels=None)
