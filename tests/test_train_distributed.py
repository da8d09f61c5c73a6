"""Training under tf.distribute: MirroredStrategy on 2 logical CPUs (fit), and two workers of
MultiWorkerMirroredStrategy on 127.0.0.1 (the custom loop). Each runs in fresh processes, since
logical devices and TF_CONFIG must be set before TensorFlow starts.
"""
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from l3_keras.train import rundir
from tests.train_helpers import REPO, make_shards, run_python, worker_env


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(str(tmp_path_factory.mktemp("collection")), clips=8, videos_per_shard=2)


MIRRORED = textwrap.dedent("""
    import json, sys
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from l3_keras import train
    from l3_keras.errors import L3Error
    from tests.train_helpers import FAST, TINY
    shards, run_dir = sys.argv[1:3]
    tc = FAST.replace(strategy="mirrored", batch_per_replica=4)
    inputs = train.find_inputs(shards, TINY, tc.replace(val_fraction=0.25), None)
    try:
        train.train(run_dir + "-bad", TINY, tc.replace(global_batch=9), inputs)
    except L3Error as e:
        bad = str(e)
    model, results = train.train(run_dir, TINY, tc, inputs)
    spread = {v.path: float(np.max(np.abs(v.value.values[0].numpy() - v.value.values[1].numpy())))
              for v in model.weights}
    print("RESULT", json.dumps({"replicas": len(model.weights[0].value.values), "spread": spread,
                                "steps": results["steps"], "bad": bad}))
""")


@pytest.mark.slow
def test_mirrored_two_cpu_replicas_stay_identical(tmp_path, shards):
    out = run_python(MIRRORED, shards, str(tmp_path / "run"), timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.split("RESULT", 1)[1])
    assert result["replicas"] == 2 and result["steps"] == 6
    assert max(result["spread"].values()) == 0.0, {k: v for k, v in result["spread"].items() if v}
    assert "not divisible by the 2 replicas" in result["bad"]


WORKER = textwrap.dedent("""
    import json, logging, os, sys
    logging.basicConfig(level=logging.INFO)
    import numpy as np, keras, tensorflow as tf
    from l3_keras import models, train
    from l3_keras.data import pairs
    from l3_keras.train.checkpoint import Checkpointer
    from tests.train_helpers import FAST, TINY
    shards, run_dir, out, schedule = sys.argv[1:5]
    if len(sys.argv) > 5:  # record the state each save writes and each restore brings back
        dumps, worker = sys.argv[5], json.loads(os.environ["TF_CONFIG"])["task"]["index"]
        def dump(checkpointer, event, step):
            ck = checkpointer.checkpoint
            numpy = keras.ops.convert_to_numpy
            arrays = {f"weight{i}": numpy(v) for i, v in enumerate(ck.model.weights)}
            arrays.update({f"optimizer{i}": numpy(v) for i, v in enumerate(ck.optimizer.variables)})
            arrays.update(steps=step, iterations=numpy(ck.optimizer.iterations),
                          learning_rate=numpy(ck.optimizer.learning_rate))
            path = os.path.join(dumps, f"w{worker}-{event}-{step}.npz")
            np.savez(path + ".tmp.npz", **arrays)
            os.replace(path + ".tmp.npz", path)  # complete before the save it describes begins
        save, restore = Checkpointer.save, Checkpointer.restore
        def saving(self, step):
            dump(self, "saved", step)
            save(self, step)
        def restoring(self):
            step = restore(self)
            dump(self, "restored", step)
            return step
        Checkpointer.save, Checkpointer.restore = saving, restoring
    tc = FAST.replace(strategy="multiworker", batch_per_replica=8, epochs=2, steps_per_epoch=4,
                      checkpoint_every=2, lr_schedule=schedule,
                      negatives=os.environ.get("TEST_NEGATIVES", "sampled"))  # 8 steps
    inputs = train.find_inputs(shards, TINY, tc.replace(val_fraction=0.25), None)
    model, results = train.train(run_dir, TINY, tc, inputs)  # the strategy comes first
    np.savez(out, *[w for w in model.get_weights()])
    batch = next(iter(pairs.make_pair_dataset(inputs.train, TINY, training=False, batch_size=32)))
    def loss_of(model):
        probs = model(batch[0], training=False)
        return float(keras.losses.sparse_categorical_crossentropy(batch[1], probs).numpy().mean())
    keras.utils.set_random_seed(tc.seed)  # the same initial weights as the run's
    start = loss_of(models.build_l3(TINY))
    print("RESULT", json.dumps({"start": start, "end": loss_of(model), "steps": results["steps"]}))
""")
TOTAL_STEPS = 8


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _start_workers(shards, tmp_path, schedule="constant", dumps=None, negatives="sampled"):
    """Two WORKER processes of one MultiWorkerMirroredStrategy cluster on fresh 127.0.0.1 ports;
    with `dumps`, each writes there the state it saves and restores (w{worker}-{event}-{step}.npz)
    """
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    for i in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}
        procs.append(subprocess.Popen(
            [sys.executable, "-c", WORKER, shards, str(tmp_path / "run"),
             str(tmp_path / f"w{i}.npz"), schedule, *([str(dumps)] if dumps else [])],
            cwd=REPO, env=worker_env(TF_CONFIG=json.dumps(tf_config), TEST_NEGATIVES=negatives),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    return procs


def _latest_step(run_dir):
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))
    return int(latest.rsplit("-", 1)[1]) if latest else 0


def _finish(procs, seconds=400):
    """Waits for the worker processes (killing any still running after `seconds`); asserts they
    all exited 0 and returns their (stdout, stderr)."""
    try:
        deadline = time.monotonic() + seconds
        outs = [p.communicate(timeout=max(1, deadline - time.monotonic())) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, stderr) in zip(procs, outs):
        assert p.returncode == 0, stderr[-3000:]
    return outs


@pytest.mark.slow
def test_multiworker_custom_loop_two_processes(tmp_path, shards):
    outs = _finish(_start_workers(shards, tmp_path))
    results = [json.loads(stdout.split("RESULT", 1)[1]) for stdout, _ in outs]
    w0, w1 = (np.load(tmp_path / f"w{i}.npz") for i in range(2))
    for key in w0.files:
        np.testing.assert_array_equal(w0[key], w1[key])
    for r in results:
        assert r["steps"] == TOTAL_STEPS and r["end"] < r["start"], r
    run_dir = tmp_path / "run"
    assert (run_dir / "model.keras").exists() and (run_dir / "history.csv").exists()
    assert not list(run_dir.glob(".worker-*"))


@pytest.mark.slow
def test_multiworker_custom_loop_with_in_batch_negatives(tmp_path, shards):
    """The custom loop trains the in-batch objective: each worker scores its own 8 x 8 grid, the
    all-reduced gradients keep both workers' weights identical, and the AVC model is saved."""
    outs = _finish(_start_workers(shards, tmp_path, negatives="batch"))
    results = [json.loads(stdout.split("RESULT", 1)[1]) for stdout, _ in outs]
    w0, w1 = (np.load(tmp_path / f"w{i}.npz") for i in range(2))
    for key in w0.files:
        np.testing.assert_array_equal(w0[key], w1[key])
    for r in results:
        assert r["steps"] == TOTAL_STEPS and r["end"] != r["start"], r
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train"]["negatives"] == "batch"
    history = rundir.read_history(tmp_path / "run")
    assert [row["epoch"] for row in history] == [0, 1]
    assert all(0 <= row["avc_accuracy"] <= 1 and 0 <= row["val_avc_accuracy"] <= 1 for row in history)


def _assert_same_state(expected, actual, what):
    assert sorted(expected.files) == sorted(actual.files), what
    differ = [k for k in expected.files if not np.array_equal(expected[k], actual[k])]
    assert not differ, f"{what}: {len(differ)} arrays differ: {differ[:6]}"


def _assert_resumed_from_saved_state(dumps, killed_at):
    """Both resumed workers hold exactly what the chief saved at `killed_at`; the optimizer goes on.

    The pair stream is reseeded at the resume, so later steps differ from an uninterrupted run's;
    the state they start from must not."""
    saved = np.load(dumps / f"w0-saved-{killed_at}.npz")
    assert int(saved["steps"]) == int(saved["iterations"]) == killed_at
    assert float(saved["learning_rate"]) < 1e-3  # cosine: decayed from FAST's 1e-3 by the step
    moments = [saved[k] for k in saved.files if k.startswith("optimizer") and saved[k].ndim]
    assert any(np.any(m) for m in moments), "Adam's moments were saved as zeros"
    for worker in range(2):
        restored = np.load(dumps / f"w{worker}-restored-{killed_at}.npz")
        _assert_same_state(saved, restored, f"worker {worker} restored at step {killed_at}")
        after = np.load(dumps / f"w{worker}-saved-{killed_at + 2}.npz")  # checkpoint_every 2
        assert int(after["iterations"]) == killed_at + 2
        assert float(after["learning_rate"]) < float(saved["learning_rate"])


@pytest.mark.slow
def test_multiworker_custom_loop_killed_and_resumed(tmp_path, shards):
    """Two workers train with the custom loop; both are SIGKILLed after the first checkpoint, then
    the same commands continue from it to the same final step, with identical weights. Each
    resumed worker starts from exactly the state the chief saved (weights and BatchNorm
    statistics, Adam's moments, iterations, the cosine schedule's learning rate)."""
    run_dir, dumps = tmp_path / "run", tmp_path / "dumps"
    dumps.mkdir()
    procs = _start_workers(shards, tmp_path, "cosine", dumps)
    try:
        deadline = time.monotonic() + 400
        while (_latest_step(run_dir) == 0 and all(p.poll() is None for p in procs)
               and time.monotonic() < deadline):
            time.sleep(0.05)
        alive = all(p.poll() is None for p in procs)
        for p in procs:
            p.kill()
            p.communicate(timeout=30)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    killed_at = _latest_step(run_dir)
    assert alive and 0 < killed_at < TOTAL_STEPS, killed_at
    procs = _start_workers(shards, tmp_path, "cosine", dumps)
    outs = _finish(procs)
    for stdout, stderr in outs:
        assert f"resuming at step {killed_at}/{TOTAL_STEPS}" in stderr, stderr[-3000:]
        steps = [int(n) for n in re.findall(rf"step (\d+)/{TOTAL_STEPS}  loss", stderr)]
        assert steps == list(range(killed_at + 1, TOTAL_STEPS + 1)), steps  # log_every 1
    results = [json.loads(stdout.split("RESULT", 1)[1]) for stdout, _ in outs]
    w0, w1 = (np.load(tmp_path / f"w{i}.npz") for i in range(2))
    for key in w0.files:
        np.testing.assert_array_equal(w0[key], w1[key])
    assert [r["steps"] for r in results] == [TOTAL_STEPS] * 2  # as an uninterrupted run
    _assert_resumed_from_saved_state(dumps, killed_at)
    assert (run_dir / "model.keras").exists() and (run_dir / "history.csv").exists()
    assert [int(r["epoch"]) for r in rundir.read_history(run_dir)] == [0, 1]
    assert not list(run_dir.glob(".worker-*"))
