"""Shared by tests/test_train*.py: a small prepared synthetic collection and a fast schedule."""
import os
import subprocess
import sys

from l3_keras.config import DataConfig, TrainConfig, get_preset
from l3_keras.data import synthetic
from l3_keras.data.synthetic import ClipSpec
from l3_keras.data.prepare import prepare

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = get_preset("tiny")
# A few optimiser steps: enough to check plumbing, not to learn.
FAST = TrainConfig(learning_rate=1e-3, weight_decay=1e-5, batch_per_replica=8, steps_per_epoch=3,
                   epochs=2, validation_pairs=16, checkpoint_every=2, log_every=1)


def make_shards(folder, clips=6, seconds=3.0, videos_per_shard=2, labelled=False):
    """Short synthetic clips (in 2 class folders when `labelled`) prepared into folder/shards."""
    videos = os.path.join(folder, "videos")
    if labelled:
        for i, name in enumerate(("drums", "violin")):
            synthetic.make_collection(os.path.join(videos, name), clips // 2,
                                      ClipSpec(seconds=seconds, kinds=4, seed=i, size=(80, 80)))
    else:
        synthetic.make_collection(videos, clips, ClipSpec(seconds=seconds, kinds=4, size=(80, 80)))
    out = os.path.join(folder, "shards")
    prepare(videos, out, DataConfig.for_model(TINY), videos_per_shard=videos_per_shard,
            label_from="folder" if labelled else None, progress=False)
    return out


def worker_env(**extra):
    """The environment of a test subprocess: the repo importable, TensorFlow quiet."""
    return {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


def run_python(code, *args, timeout=300):
    """Runs `code` with sys.argv[1:] = args in a fresh Python in the repo; the CompletedProcess."""
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=REPO, env=worker_env(),
                          timeout=timeout, capture_output=True, text=True)
