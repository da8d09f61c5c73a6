"""Report folders shared by every evaluation: one JSON of the numbers plus small PNG figures.

Figures are drawn with matplotlib's Agg backend (no display needed) and closed right away, so an
evaluation loop does not accumulate open figures.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend choice)
import numpy as np  # noqa: E402

from l3_keras import files  # noqa: E402

REPORT_JSON = "report.json"


def write_json(out_dir, report: dict, name: str = REPORT_JSON) -> str:
    """Writes `report` (plain JSON types or numpy scalars/arrays) to out_dir/name atomically.

    Returns:
        the path written.
    """
    os.makedirs(out_dir, exist_ok=True)
    return files.write_json(os.path.join(out_dir, name), report, indent=1)


def save_figure(fig, path: str, dpi: int = 100) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_confusion(matrix, classes: Sequence[str], path: str, title: str = "") -> str:
    """Row-normalised confusion matrix (rows: true class, columns: predicted), counts in cells."""
    matrix = np.asarray(matrix)
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * n, 0.8 + 0.45 * n))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title=title)
    ax.set_xticklabels(classes, rotation=90, fontsize=8)
    ax.set_yticklabels(classes, fontsize=8)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black")
    return save_figure(fig, path)


def plot_bars(named: dict, classes: Sequence[str], path: str, ylabel: str = "accuracy",
              title: str = "", chance: Optional[float] = None) -> str:
    """Grouped bars: one group per class, one bar per entry of `named` (e.g. trained, random)."""
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(classes) + 1.5), 3.0))
    width = 0.8 / max(len(named), 1)
    x = np.arange(len(classes))
    for k, (label, values) in enumerate(named.items()):
        ax.bar(x + k * width - 0.4 + width / 2, values, width, label=label)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set(xticks=x, ylim=(0, 1), ylabel=ylabel, title=title)
    ax.set_xticklabels(classes, rotation=90, fontsize=8)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
