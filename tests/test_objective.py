"""Training objectives: in-batch negatives (every frame against every audio window of a batch)."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from l3_keras import models
from l3_keras.config import TrainConfig
from l3_keras.errors import L3Error
from l3_keras.train import loop, objective, strategy
from tests.train_helpers import TINY


def _reference(keys, probs):
    """Loss and accuracy per frame, written out pair by pair."""
    b = len(keys)
    losses, accuracies = [], []
    for i in range(b):
        pos_loss = -np.log(probs[i, i, 1])
        pos_hit = float(probs[i, i, 1] > probs[i, i, 0])
        neg = [j for j in range(b) if j != i and keys[j] != keys[i]]
        neg_loss = np.mean([-np.log(probs[i, j, 0]) for j in neg])
        neg_hit = np.mean([float(probs[i, j, 0] > probs[i, j, 1]) for j in neg])
        losses.append(0.5 * pos_loss + 0.5 * neg_loss)
        accuracies.append(0.5 * pos_hit + 0.5 * neg_hit)
    return np.array(losses), np.array(accuracies)


def test_all_pairs_loss_and_accuracy_match_a_pair_by_pair_reference():
    rng = np.random.default_rng(0)
    keys = np.array([5, 9, 5, 2, 7, 9], np.int32)  # frames 0 and 2, 1 and 5 share a video
    p = rng.uniform(0.05, 0.95, (6, 6)).astype(np.float32)
    probs = np.stack([1 - p, p], axis=-1)
    want_loss, want_acc = _reference(keys, probs)
    np.testing.assert_allclose(objective.all_pairs_loss(keys, probs), want_loss, rtol=1e-5)
    np.testing.assert_allclose(objective.all_pairs_accuracy(keys, probs), want_acc, rtol=1e-6)
    # Keras hands the loss labels of shape [b, 1].
    np.testing.assert_allclose(objective.all_pairs_loss(keys[:, None], probs), want_loss, rtol=1e-5)


def test_pairs_of_one_video_are_not_negatives():
    # Frame 0's only wrong verdict is on audio 1, which is of its own video: skipped.
    probs = np.zeros((3, 3, 2), np.float32)
    probs[..., 0], probs[0, 1] = 0.9, [0.1, 0.9]
    for i in range(3):
        probs[i, i] = [0.1, 0.9]
    accuracy = objective.all_pairs_accuracy(np.array([4, 4, 8]), probs)
    np.testing.assert_allclose(accuracy, [1.0, 1.0, 1.0])
    accuracy = objective.all_pairs_accuracy(np.array([4, 5, 8]), probs)
    np.testing.assert_allclose(accuracy, [0.75, 1.0, 1.0])


@pytest.fixture(scope="module")
def tiny_l3():
    keras.utils.set_random_seed(3)
    return models.build_l3(TINY)


def _batch(b, seed=0):
    rng = np.random.default_rng(seed)
    return {"image": rng.uniform(0, 1, (b, *TINY.image_size, 3)).astype(np.float32),
            "audio": rng.uniform(-0.3, 0.3, (b, TINY.audio_input_samples)).astype(np.float32)}


def test_all_pairs_model_scores_every_frame_with_every_audio_and_shares_weights(tiny_l3):
    trainer = objective.make_objective(tiny_l3, TINY, "batch").model
    assert {id(v) for v in trainer.trainable_variables} == {id(v) for v in tiny_l3.trainable_variables}
    x = _batch(4)
    grid = keras.ops.convert_to_numpy(trainer(x, training=False))
    assert grid.shape == (4, 4, 2)
    for i in range(4):
        one = {"image": np.repeat(x["image"][i:i + 1], 4, axis=0), "audio": x["audio"]}
        np.testing.assert_allclose(grid[i], tiny_l3.predict(one, verbose=0), atol=1e-5)


def test_sampled_objective_is_the_avc_model_itself(tiny_l3):
    sampled = objective.make_objective(tiny_l3, TINY, "sampled")
    assert sampled.model is tiny_l3
    with pytest.raises(L3Error, match="negatives"):
        objective.make_objective(tiny_l3, TINY, "other")
    with pytest.raises(L3Error, match="negatives"):
        TrainConfig(negatives="others")


def test_custom_loop_step_minimises_the_objective(tiny_l3):
    """The multi-worker loop's step (here under the default strategy) takes the objective's loss."""
    keras.utils.set_random_seed(5)
    l3 = models.build_l3(TINY)
    obj = objective.make_objective(l3, TINY, "batch")
    x, keys = _batch(6, seed=1), np.array([1, 2, 3, 3, 5, 6], np.int32)
    before = float(np.mean(obj.loss(keys, obj.model(x, training=True))))
    kernel = l3.get_layer("vision_block1_conv1").kernel.numpy().copy()
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(l3.trainable_variables)
    step = loop.train_step(obj, optimizer, tf.distribute.get_strategy(), global_batch=6)
    loss, correct = step(iter([(x, keys)]))
    # The BatchNorms saw the same batch statistics, so the loss is the one computed before.
    np.testing.assert_allclose(float(loss), before, rtol=1e-4)
    assert 0 <= float(correct) <= 6
    assert np.abs(l3.get_layer("vision_block1_conv1").kernel.numpy() - kernel).max() > 0


def test_all_pairs_probabilities_stay_float32_under_mixed_precision():
    with strategy.precision("bf16"):
        l3 = models.build_l3(TINY)
        grid = objective.make_objective(l3, TINY, "batch").model
    assert l3.output.dtype == grid.output.dtype == "float32"
    assert grid.get_layer("cross_pairs").compute_dtype == "bfloat16"
