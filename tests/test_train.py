"""Training: configs, held-out split, errors before training, and one short run's directory."""
import json
import os

import keras
import numpy as np
import pytest

from l3_keras import train
from l3_keras.config import TrainConfig, get_preset
from l3_keras.errors import L3Error
from l3_keras.data import shards as shards_lib
from l3_keras.data import synthetic
from l3_keras.train import checkpoint, data, rundir, strategy
from tests.train_helpers import FAST, TINY, make_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(str(tmp_path_factory.mktemp("collection")))


def test_train_config_round_trip():
    tc = TrainConfig(mixed_precision="bf16", global_batch=64, val_fraction=0.2)
    assert TrainConfig.from_json(tc.to_json()) == tc
    assert tc.total_steps == tc.epochs * tc.steps_per_epoch


def test_split_holds_out_whole_shards_deterministically():
    files = [f"s{i:02d}.tfrecord" for i in range(20)]
    tr, val = shards_lib.split(list(reversed(files)), 0.1)
    assert val == ["s05.tfrecord", "s15.tfrecord"] and not set(tr) & set(val)
    assert sorted(tr + val) == files
    with pytest.raises(L3Error, match="at least 2 shards"):
        shards_lib.split(files[:1], 0.1)


def test_default_shard_size_leaves_videos_held_out(tmp_path):
    # `l3 train --data FOLDER` with no --videos-per-shard: a small collection must not end up in
    # one shard (nothing could be held out); the default cuts it into enough whole-video shards.
    videos = tmp_path / "videos"
    synthetic.make_collection(str(videos), 24, synthetic.ClipSpec(seconds=1.5, kinds=2,
                                                                  size=(80, 80)))
    inputs = train.find_inputs(str(videos), TINY, FAST, str(tmp_path / "prepared"))
    held_out = shards_lib.labels_by_video(inputs.val)
    trained = shards_lib.labels_by_video(inputs.train)
    assert len(held_out) >= 2 and len(trained) >= 20 and not set(held_out) & set(trained)


def test_global_batch_must_split_over_replicas():
    class TwoReplicas:
        num_replicas_in_sync = 2

    strategy.check_global_batch(TwoReplicas(), 32)
    with pytest.raises(L3Error, match="not divisible by the 2 replicas"):
        strategy.check_global_batch(TwoReplicas(), 33)


def test_clear_errors_before_training(tmp_path, shards):
    inputs = train.Inputs(*shards_lib.split(data.resolve(shards, TINY, None), 0.5))
    empty = tmp_path / "novideos"
    empty.mkdir()
    with pytest.raises(L3Error, match="No videos"):
        train.find_inputs(str(empty), TINY, FAST, str(tmp_path / "prepared"))
    broken = tmp_path / "broken.tfrecord"
    broken.write_bytes(b"not a record at all" * 10)
    with pytest.raises(L3Error, match="Cannot read"):
        train.train(tmp_path / "run", TINY, FAST, train.Inputs([str(broken)], inputs.val))
    hollow = tmp_path / "empty.tfrecord"
    hollow.write_bytes(b"")
    with pytest.raises(L3Error, match="empty"):
        train.train(tmp_path / "run", TINY, FAST, train.Inputs([str(hollow)], inputs.val))
    with pytest.raises(L3Error, match="16000 Hz but preset 'paper'"):
        train.train(tmp_path / "run", get_preset("paper"), FAST, inputs)
    small = TINY.replace(name="big-frames", image_size=(128, 128))
    with pytest.raises(L3Error, match="smaller than preset"):
        train.train(tmp_path / "run", small, FAST, inputs)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_short_run_fills_the_run_directory_and_resumes_finished(tmp_path, shards):
    inputs = train.find_inputs(shards, TINY, FAST.replace(val_fraction=0.34), None)
    run_dir = tmp_path / "run"
    model, results = train.train(run_dir, TINY, FAST, inputs)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"] == json.loads(TINY.to_json())
    assert TrainConfig.from_dict(config["train"]) == FAST
    assert {"git_commit", "versions", "data", "inputs"} <= set(config)
    assert config["inputs"]["val"] == inputs.val
    history = rundir.read_history(run_dir)
    assert [r["epoch"] for r in history] == [0, 1]
    assert {"loss", "avc_accuracy", "val_loss", "val_avc_accuracy", "learning_rate"} <= set(history[0])
    assert (run_dir / "curves.png").stat().st_size > 1000
    assert os.listdir(run_dir / "logs" / "train") and os.listdir(run_dir / "logs" / "validation")
    assert results["steps"] == FAST.total_steps and 0 <= results["avc_accuracy"] <= 1
    reloaded = keras.models.load_model(run_dir / "model.keras")
    for a, b in zip(reloaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    # The same command again: the run is complete, so it only restores and evaluates.
    _, again = train.train(run_dir, TINY, FAST, inputs)
    assert again["steps"] == FAST.total_steps
    assert len(rundir.read_history(run_dir)) == 2
    with pytest.raises(L3Error, match="another model"):
        train.train(run_dir, TINY.replace(name="other", fusion_units=32), FAST, inputs)


def test_checkpoint_restores_optimizer_state(tmp_path):
    def build():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        model.compile(train.make_optimizer(FAST, False), loss="mse")
        return model

    model = build()
    model.fit(np.ones((8, 3)), np.ones((8, 2)), batch_size=4, epochs=1, verbose=0)
    checkpoint.Checkpointer(tmp_path, model, model.optimizer).save(2)
    fresh = build()
    step = checkpoint.Checkpointer(tmp_path, fresh, fresh.optimizer).restore()
    assert step == 2
    moments = [v for v in fresh.optimizer.variables if "momentum" in v.path]
    assert moments and all(np.abs(v.numpy()).sum() > 0 for v in moments)


@pytest.mark.parametrize("precision,compute", [("bf16", "bfloat16"), ("fp16", "float16")])
def test_mixed_precision_run_keeps_front_end_and_weights_float32(tmp_path, shards, precision,
                                                                 compute):
    inputs = train.find_inputs(shards, TINY, FAST.replace(val_fraction=0.34), None)
    tc = FAST.replace(mixed_precision=precision, epochs=1)
    model, results = train.train(tmp_path / "run", TINY, tc, inputs)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the run
    assert model.get_layer("vision_block2_conv1").compute_dtype == compute
    for name in ("audio_spectrogram", "audio_bn_input", "fusion_softmax"):
        assert model.get_layer(name).compute_dtype == "float32", name
    assert {w.dtype for w in model.weights} == {"float32"}
    assert np.isfinite(results["loss"]) and results["steps"] == tc.total_steps
    history = rundir.read_history(tmp_path / "run")
    assert all(np.isfinite(r["loss"]) for r in history)
    reloaded = keras.models.load_model(tmp_path / "run" / "model.keras")
    assert reloaded.get_layer("vision_block2_conv1").compute_dtype == compute
    batch = next(iter(data.held_out_pairs(inputs.val, TINY, 8, 8, 0, 4)))[0]
    probs = reloaded.predict(batch, verbose=0)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs, model.predict(batch, verbose=0), atol=1e-6)
