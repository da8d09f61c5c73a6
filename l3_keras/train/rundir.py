"""What a run directory holds, and the files written into it.

    RUN_DIR/
      config.json        {"model": ModelConfig, "data": DataConfig, "train": TrainConfig,
                          "inputs": {"train": [...], "val": [...]}, "git_commit", "versions"}
      checkpoints/       tf.train.CheckpointManager files (model + optimizer + steps taken)
      logs/train, logs/validation   TensorBoard: loss, AVC accuracy, learning rate
      history.csv        one row per epoch (appended across resumes)
      curves.png         loss and AVC accuracy, train and validation
      results.json       held-out AVC accuracy at the end (per class when labelled)
      model.keras        the final AVC model (written atomically); what `export` reads
"""
from __future__ import annotations

import csv
import json
import os
import platform
import subprocess

import keras
import numpy as np
import tensorflow as tf

import l3_keras
from l3_keras.errors import L3Error

CONFIG, HISTORY, CURVES, RESULTS, MODEL, LOGS = (
    "config.json", "history.csv", "curves.png", "results.json", "model.keras", "logs")


def git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=os.path.dirname(__file__)).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def versions() -> dict:
    return {"l3_keras": l3_keras.__version__, "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def write_config(run_dir, model_config, data_config, train_config, inputs: dict) -> dict:
    """Writes config.json; refuses a run directory that holds a run of another model.

    The train config may change between resumes (e.g. more epochs); the file keeps the latest.

    Raises:
        L3Error: run_dir has a config.json with another model config.
    """
    path = os.path.join(run_dir, CONFIG)
    config = {"model": model_config.to_dict(), "data": data_config.to_dict(),
              "train": train_config.to_dict(), "inputs": inputs, "git_commit": git_commit(),
              "versions": versions()}
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        if json.loads(json.dumps(config["model"])) != old.get("model"):
            raise L3Error(f"{run_dir} holds a run of another model ({old['model'].get('name')}); "
                          "resume it with the same preset or choose a new --model-dir.")
    write_json(path, config)
    return config


def write_json(path, obj) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def save_model(model, run_dir) -> str:
    """model.keras, written to a temp name and renamed, so a reader never sees half a file."""
    path = os.path.join(run_dir, MODEL)
    tmp = os.path.join(run_dir, f".model.tmp-{os.getpid()}.keras")
    model.save(tmp)
    os.replace(tmp, path)
    return path


def read_history(run_dir) -> list:
    path = os.path.join(run_dir, HISTORY)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def plot_curves(run_dir) -> None:
    """curves.png from history.csv: loss and AVC accuracy per epoch, train and validation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_history(run_dir)
    if not rows:
        return
    epochs = [r["epoch"] + 1 for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "avc_accuracy")):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = [r.get(prefix + metric, np.nan) for r in rows]
            ax.plot(epochs, values, style, marker="o", label=(prefix or "train_") + metric)
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = os.path.join(run_dir, f".curves.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, os.path.join(run_dir, CURVES))


def append_history(run_dir, epoch: int, logs: dict) -> None:
    """One history.csv row in keras.callbacks.CSVLogger's layout ("epoch" then sorted keys)."""
    path = os.path.join(run_dir, HISTORY)
    keys = ["epoch", *sorted(logs)]
    if os.path.exists(path):
        with open(path) as f:
            keys = next(csv.reader(f), keys)
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow({"epoch": epoch, **logs})
