"""Training: configs, held-out split, errors before training, and one short run's directory."""
import json
import os

import keras
import numpy as np
import pytest

from l3_keras import models, train
from l3_keras.config import TrainConfig, get_preset
from l3_keras.errors import L3Error
from l3_keras.data import shards as shards_lib
from l3_keras.data import synthetic
from l3_keras.data import pairs
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


@pytest.mark.parametrize("negatives", ["sampled", "batch"])
def test_short_run_fills_the_run_directory_and_resumes_finished(tmp_path, shards, negatives):
    tc = FAST.replace(negatives=negatives)
    inputs = train.find_inputs(shards, TINY, tc.replace(val_fraction=0.34), None)
    run_dir = tmp_path / "run"
    keras.utils.set_random_seed(tc.seed)
    initial = models.build_l3(TINY).get_weights()
    model, results = train.train(run_dir, TINY, tc, inputs)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"] == json.loads(TINY.to_json())
    assert TrainConfig.from_dict(config["train"]) == tc
    assert {"git_commit", "versions", "data", "inputs"} <= set(config)
    assert config["inputs"]["val"] == inputs.val
    history = rundir.read_history(run_dir)
    assert [r["epoch"] for r in history] == [0, 1]
    assert {"loss", "avc_accuracy", "val_loss", "val_avc_accuracy", "learning_rate"} <= set(history[0])
    assert (run_dir / "curves.png").stat().st_size > 1000
    assert os.listdir(run_dir / "logs" / "train") and os.listdir(run_dir / "logs" / "validation")
    assert results["steps"] == FAST.total_steps and 0 <= results["avc_accuracy"] <= 1
    # Validation is the AVC model's on the fixed sampled held-out pairs, whatever the objective.
    assert history[-1]["val_avc_accuracy"] == pytest.approx(results["avc_accuracy"], abs=1e-6)
    reloaded = keras.models.load_model(run_dir / "model.keras")
    assert [layer.name for layer in reloaded.layers] == [layer.name for layer in model.layers]
    for a, b in zip(reloaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    moved = [np.abs(w - w0).max() > 0 for w, w0 in zip(model.get_weights(), initial)]
    assert all(moved[:2]) and moved[-1], "the AVC model's own weights were trained"
    # The same command again: the run is complete, so it only restores and evaluates.
    _, again = train.train(run_dir, TINY, tc, inputs)
    assert again["steps"] == FAST.total_steps
    assert len(rundir.read_history(run_dir)) == 2
    with pytest.raises(L3Error, match="another model"):
        train.train(run_dir, TINY.replace(name="other", fusion_units=32), tc, inputs)


def _dense_model(seed, optimizer=None):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2),
                              keras.layers.Activation("linear", dtype="float32")])
    model.compile(optimizer or train.make_optimizer(FAST, False), loss="mse")
    return model


def test_checkpoint_restores_what_was_saved(tmp_path):
    model = _dense_model(0)
    model.fit(np.ones((8, 3)), np.ones((8, 2)), batch_size=4, epochs=1, verbose=0)
    checkpoint.Checkpointer(tmp_path, model, model.optimizer).save(2)
    saved = [(v.path, v.numpy()) for v in [*model.weights, *model.optimizer.variables]]
    assert int(model.optimizer.iterations.numpy()) == 2
    assert any("momentum" in path and np.abs(value).sum() > 0 for path, value in saved)
    fresh = _dense_model(1)  # other initial weights, an unbuilt optimizer
    step = checkpoint.Checkpointer(tmp_path, fresh, fresh.optimizer).restore()
    assert step == 2
    restored = [v.numpy() for v in [*fresh.weights, *fresh.optimizer.variables]]
    assert len(restored) == len(saved)
    for (path, value), got in zip(saved, restored):  # same order; names differ by a suffix
        np.testing.assert_array_equal(got, value, err_msg=path)


def test_fp16_checkpoints_count_steps_taken_not_applied_updates(tmp_path):
    """Loss scaling skips every update here (an initial scale of 2**40 overflows float16
    gradients), yet the checkpoint written after 6 steps says 6 and a restore resumes there."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        opt = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-3), initial_scale=2.0 ** 40)
        model = _dense_model(0, opt)
        saver = checkpoint.Checkpointer(tmp_path, model, model.optimizer)
        model.fit(np.ones((48, 3)), np.ones((48, 2)), batch_size=8, epochs=1, verbose=0,
                  callbacks=[checkpoint.CheckpointCallback(saver, every=4, start_step=0)])
        assert int(model.optimizer.iterations.numpy()) == 0  # no update was applied
        assert saver.step == 6
        assert os.path.basename(saver.manager.latest_checkpoint) == "ckpt-6"
        fresh = _dense_model(1, keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-3)))
        assert checkpoint.Checkpointer(tmp_path, fresh, fresh.optimizer).restore() == 6
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.slow  # two training runs / two exports
def test_resume_reseeds_the_pair_stream_with_seed_plus_step(tmp_path, shards, monkeypatch):
    """A run stopped after its first epoch (3 steps) and run again for two: the resumed run draws
    its pairs with seed + 3, not the seed the first run started with (which would replay them)."""
    seeds = []
    real = pairs.distributed_pair_dataset

    def recording(*args, **kwargs):
        seeds.append(kwargs["seed"])
        return real(*args, **kwargs)

    monkeypatch.setattr(pairs, "distributed_pair_dataset", recording)
    tc = FAST.replace(val_fraction=0.34, seed=5)
    inputs = train.find_inputs(shards, TINY, tc, None)
    train.train(tmp_path / "run", TINY, tc.replace(epochs=1), inputs)
    _, results = train.train(tmp_path / "run", TINY, tc, inputs)
    assert results["steps"] == tc.total_steps == 6
    assert seeds == [5, 5 + 3]


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
