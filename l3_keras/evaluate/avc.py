"""Audio-visual correspondence (AVC) accuracy on held-out shards (paper Sec. 3.4, Table 1).

The pairs come from the evaluation stream of `pairs.make_pair_dataset` (training=False: centre
crops, no jitter, stateless sampling), so the same shards, count and seed give the same pairs. The
first `num_pairs / 2` positives and `num_pairs / 2` negatives are scored: a balanced set, whatever
the blocking of the stream. The interval is Wilson's score interval, which stays inside [0, 1] and
behaves for the small counts of a quick check, unlike the normal approximation.
"""
from __future__ import annotations

import math
import os
import numpy as np

from l3_keras.config import ModelConfig
from l3_keras.errors import L3Error

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(correct: int, total: int, z: float = Z95):
    """Wilson score interval (low, high) for a binomial proportion correct / total."""
    if total <= 0:
        return 0.0, 1.0
    p = correct / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def balanced_pairs(files, model_config: ModelConfig, num_pairs: int, seed: int = 0):
    """The first num_pairs // 2 positives and negatives of the evaluation stream, as arrays.

    The stream is repeated (still deterministic: every element's randomness is keyed by its index),
    so a small held-out set yields as many pairs as asked.

    Returns:
        ({"image": float32 [N, H, W, 3], "audio": float32 [N, samples]}, labels int32 [N]),
        positives first; N = 2 * (num_pairs // 2).
    """
    from l3_keras.data.pairs import make_pair_dataset

    if num_pairs < 2:
        raise L3Error(f"num_pairs must be at least 2 (one positive, one negative); got {num_pairs}.")
    half = num_pairs // 2
    ds = make_pair_dataset(files, model_config, training=False, seed=seed, repeat=True,
                           batch_size=None)
    kept = {0: [], 1: []}
    for inputs, label in ds.as_numpy_iterator():
        if len(kept[int(label)]) < half:
            kept[int(label)].append(inputs)
        if len(kept[0]) == half and len(kept[1]) == half:
            break
    chosen = kept[1] + kept[0]
    x = {key: np.stack([e[key] for e in chosen]) for key in ("image", "audio")}
    return x, np.repeat(np.array([1, 0], np.int32), half)


def evaluate_avc(model, files, model_config: ModelConfig, num_pairs: int = 1024, seed: int = 0,
                 batch_size: int = 64) -> dict:
    """AVC accuracy of `model` on a fixed, balanced set of held-out pairs.

    Args:
        model: the AVC model (`models.build_l3` layout: {"image", "audio"} -> [b, 2] softmax).
        files: held-out shards (paths, glob, or a prepared folder).
        model_config: the model's config (window length, image size).
        num_pairs: pairs scored (half positive, half negative); rounded down to even.
        seed: picks the pairs; same files + seed + num_pairs, same pairs.
        batch_size: inference batch.

    Returns:
        dict: accuracy, ci95 [low, high], positive_accuracy, negative_accuracy, num_pairs,
        mean_p_correspond_positive / _negative, seed.
    """
    x, y = balanced_pairs(files, model_config, num_pairs, seed)
    p = np.asarray(model.predict(x, batch_size=batch_size, verbose=0))[:, 1]
    pred = (p > 0.5).astype(np.int32)
    correct = pred == y
    n, k = len(y), int(correct.sum())
    low, high = wilson_interval(k, n)
    return {
        "accuracy": k / n,
        "ci95": [low, high],
        "positive_accuracy": float(correct[y == 1].mean()),
        "negative_accuracy": float(correct[y == 0].mean()),
        "num_pairs": n,
        "mean_p_correspond_positive": float(p[y == 1].mean()),
        "mean_p_correspond_negative": float(p[y == 0].mean()),
        "seed": seed,
    }


def write_avc_report(result: dict, out_dir) -> str:
    """JSON of `result` plus a bar chart of overall / positive / negative accuracy with the CI."""
    from l3_keras.evaluate import report

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3.5, 3.0))
    values = [result["accuracy"], result["positive_accuracy"], result["negative_accuracy"]]
    ax.bar(["all", "positive", "negative"], values, color=["C0", "C2", "C3"])
    low, high = result["ci95"]
    ax.errorbar([0], [result["accuracy"]], yerr=[[result["accuracy"] - low],
                                                 [high - result["accuracy"]]], color="k", capsize=4)
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set(ylim=(0, 1), ylabel="AVC accuracy", title=f"{result['num_pairs']} held-out pairs")
    report.save_figure(fig, os.path.join(out_dir, "avc_accuracy.png"))
    return report.write_json(out_dir, {"avc": result})
