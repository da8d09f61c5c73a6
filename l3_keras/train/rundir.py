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
import os

import numpy as np

from l3_keras import files
from l3_keras.errors import L3Error

CONFIG, HISTORY, CURVES, RESULTS, MODEL, LOGS = (
    "config.json", "history.csv", "curves.png", "results.json", "model.keras", "logs")


def write_config(run_dir, model_config, data_config, train_config, inputs: dict) -> dict:
    """Writes config.json; refuses a run directory that holds a run of another model.

    The train config may change between resumes (e.g. more epochs); the file keeps the latest.
    `data_config` is what the shards were prepared with (their manifest; None when they have none).

    Raises:
        L3Error: run_dir has a config.json with another model config.
    """
    path = os.path.join(run_dir, CONFIG)
    config = {"model": model_config.to_dict(),
              "data": data_config.to_dict() if data_config is not None else None,
              "train": train_config.to_dict(), "inputs": inputs, **files.stamp()}
    if os.path.exists(path):
        old = files.read_json(path)
        # Through from_dict, so a run written before a field with a default existed still matches.
        if type(model_config).from_dict(old.get("model", {})) != model_config:
            raise L3Error(f"{run_dir} holds a run of another model ({old['model'].get('name')}); "
                          "resume it with the same preset or choose a new --model-dir.")
    files.write_json(path, config)
    return config


def save_model(model, run_dir) -> str:
    """model.keras: the architecture and weights, written atomically (`files.atomic_write`).

    Saved uncompiled: the optimizer's state lives in checkpoints/ (what a resume reads), and a
    compiled file with a LossScaleOptimizer (fp16) does not load its own optimizer variables back.
    """
    import keras

    plain = keras.Model.from_config(model.get_config())  # clone_model would compile it too
    plain.set_weights(model.get_weights())
    path = os.path.join(run_dir, MODEL)
    with files.atomic_write(path, suffix=".keras") as tmp:
        plain.save(tmp)
    return path


def read_history(run_dir) -> list:
    path = os.path.join(run_dir, HISTORY)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        # k is None for cells beyond the header (a column added by a later version of the package).
        return [{k: float(v) for k, v in row.items() if k is not None and v not in ("", None)}
                for row in csv.DictReader(f)]


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
    with files.atomic_write(os.path.join(run_dir, CURVES), suffix=".png") as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)


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
