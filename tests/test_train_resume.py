"""A run killed with SIGKILL mid-epoch and started again with the same command continues from its
last checkpoint: same final step count as an uninterrupted run, optimizer state restored."""
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from l3_keras import models, train
from l3_keras.train import checkpoint, rundir
from tests.train_helpers import FAST, REPO, TINY, make_shards, worker_env

STEPS_PER_EPOCH, EPOCHS = 8, 2


def _command(shards, run_dir):
    return [sys.executable, "-m", "l3_keras.cli", "train", "--data", shards, "--model-dir", run_dir,
            "--preset", "tiny", "--export", "", "--steps-per-epoch", str(STEPS_PER_EPOCH),
            "--epochs", str(EPOCHS), "--checkpoint-every", "2", "--batch-per-replica", "8",
            "--validation-pairs", "16", "--val-fraction", "0.34", "--log-every", "1",
            "--learning-rate", "1e-3"]


def _latest_step(run_dir):
    latest = tf.train.latest_checkpoint(os.path.join(run_dir, checkpoint.CHECKPOINTS))
    return int(latest.rsplit("-", 1)[1]) if latest else 0


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume(tmp_path):
    shards = make_shards(str(tmp_path / "collection"))
    run_dir = str(tmp_path / "run")
    proc = subprocess.Popen(_command(shards, run_dir), cwd=REPO, env=worker_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while _latest_step(run_dir) == 0 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        killed_at = _latest_step(run_dir)
        alive = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert alive, "the run ended before it could be killed"
    assert 0 < killed_at < STEPS_PER_EPOCH * EPOCHS, "no mid-run checkpoint before the kill"
    # Mid-epoch: the checkpoint the run resumes from is not an epoch end (steps 8, 16), so the
    # resumed fit must first finish the interrupted epoch.
    assert killed_at % STEPS_PER_EPOCH != 0, killed_at

    # What the resumed run restores: the optimizer continues (iterations, non-zero Adam moments).
    keras.utils.set_random_seed(0)
    model = models.build_l3(TINY)
    optimizer = train.make_optimizer(FAST, False)
    restored = checkpoint.Checkpointer(run_dir, model, optimizer).restore()
    assert restored == _latest_step(run_dir) >= killed_at
    assert int(optimizer.iterations.numpy()) == restored  # float32: every step is applied
    assert restored % STEPS_PER_EPOCH != 0, restored  # resumes inside an epoch
    moments = [v for v in optimizer.variables if "momentum" in v.path]
    assert all(np.abs(v.numpy()).sum() > 0 for v in moments)

    resumed = subprocess.run(_command(shards, run_dir), cwd=REPO, env=worker_env(), timeout=400,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming at step {restored}/" in resumed.stderr
    results = json.loads(resumed.stdout[resumed.stdout.index("{"):])
    assert results["steps"] == STEPS_PER_EPOCH * EPOCHS  # what an uninterrupted run ends at
    epochs = [int(r["epoch"]) for r in rundir.read_history(run_dir)]
    assert epochs == list(range(EPOCHS))
    assert os.path.exists(os.path.join(run_dir, "model.keras"))
