"""Linear probes: how well a frozen tower's features separate labelled sounds or images.

The ESC-50 / DCASE protocol of the paper (Sec. 4.2): embed every clip in 1 s windows, take the
conv4 map max-pooled to a 4x3 grid (6144-D for the paper model; `ModelConfig.audio_transfer_grid`) or the
embedding, standardise, fit a linear classifier on the WINDOWS, predict a clip by averaging its
windows' scores, and cross-validate over folds (given ones, e.g. ESC-50's, or stratified k-fold).
The paper used a linear SVM; logistic regression is the default here (calibrated scores, no
convergence warnings on small sets).

Every probe is also run on the same architecture with random weights (`random_baseline`): a
random conv net is already a decent feature extractor, and the gap is what training bought.

Collections come from `data.labelled` (`list_labelled`: class from the parent folder, a regex on
the file name, or a CSV); its names are importable from here too, as the probe's callers use them.
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence

import numpy as np

from l3_keras import media
from l3_keras.config import ModelConfig
from l3_keras.data.labelled import (  # noqa: F401 (the probe's collection API)
    DCASE_PATTERN, FSDD_PATTERN, MEDIA_TYPES, Item, list_labelled, subset)
from l3_keras.errors import L3Error, check_choice

FEATURES = ("conv4", "embedding")
CLASSIFIERS = ("logreg", "svm")


# ----------------------------------------------------------------------------------------------
# Features


def _towers(l3, cfg: ModelConfig, feature: str):
    """`embed.EmbeddingModels` of `l3` that return `feature` ("conv4" grid or "embedding")."""
    from l3_keras import embed

    check_choice("feature", feature, FEATURES)
    return embed.EmbeddingModels.from_l3(l3, cfg, transfer_features=feature == "conv4")


def audio_features(l3, cfg: ModelConfig, items: Sequence[Item], feature: str = "conv4",
                   hop_size: float = 0.5, batch_size: int = 64, mode: str = "exact") -> List[np.ndarray]:
    """Window features of every audio file: one float32 [T_i, D] array a file (T_i >= 1).

    Files are read with `media.read_audio`; down-mixing, resampling and 1 s windowing (`hop_size` apart,
    centred padding) are `embed.get_audio_embedding`'s, as is `mode` ("exact" or "shared").
    """
    from l3_keras import embed

    towers = _towers(l3, cfg, feature)
    clips, rates = [], []
    for item in items:
        audio, sr = media.read_audio(item.path)
        clips.append(audio)
        rates.append(sr)
    features, _ = embed.get_audio_embedding(clips, rates, model=towers, hop_size=hop_size,
                                            center=True, batch_size=batch_size,
                                            transfer_features=towers.transfer_features, mode=mode)
    return features


def image_features(l3, cfg: ModelConfig, items: Sequence[Item], feature: str = "conv4",
                   batch_size: int = 64) -> List[np.ndarray]:
    """Features of every image: one float32 [1, D] array an image (resized to cover, centre crop)."""
    from l3_keras import embed

    towers = _towers(l3, cfg, feature)
    images = [media.read_image(item.path) for item in items]
    rows = embed.get_image_embedding(images, model=towers, batch_size=batch_size,
                                     transfer_features=towers.transfer_features)
    return [row[None] for row in rows]


# ----------------------------------------------------------------------------------------------
# Classifier and cross-validation


def make_classifier(classifier: str = "logreg", C: float = 0.1, seed: int = 0):
    """Standardise, then a linear classifier (sklearn Pipeline)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    check_choice("classifier", classifier, CLASSIFIERS)
    if classifier == "svm":
        head = LinearSVC(C=C, max_iter=5000, random_state=seed)
    else:
        head = LogisticRegression(C=C, max_iter=2000, random_state=seed)
    return make_pipeline(StandardScaler(), head)


def fold_ids(labels: Sequence[str], folds: Optional[Sequence[Optional[int]]] = None, k: int = 5,
             seed: int = 0) -> np.ndarray:
    """int [N]: each clip's test fold; the given folds if all set, else stratified k-fold."""
    from sklearn.model_selection import StratifiedKFold

    if folds is not None and all(f is not None for f in folds):
        return np.asarray(folds, int)
    labels = np.asarray(labels)
    smallest = min(np.unique(labels, return_counts=True)[1])
    if smallest < k:
        raise L3Error(f"Stratified {k}-fold needs >= {k} clips per class; the smallest has "
                      f"{smallest}. Use fewer folds or more clips.")
    ids = np.zeros(len(labels), int)
    splitter = StratifiedKFold(k, shuffle=True, random_state=seed)
    for fold, (_, test) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        ids[test] = fold
    return ids


def cross_validate(features: Sequence[np.ndarray], labels: Sequence[str], folds: np.ndarray,
                   classifier: str = "logreg", C: float = 0.1, seed: int = 0) -> dict:
    """Window-level training, clip-level prediction (mean of window scores), per fold.

    Args:
        features: one float [T_i, D] array per clip.
        labels: class name per clip.
        folds: test fold per clip (from `fold_ids`).

    Returns:
        dict: classes, fold_accuracy {fold: acc}, mean, std (over folds), confusion [C, C]
        (rows true, summed over folds), per_class_accuracy, predictions (class per clip).
    """
    from threadpoolctl import threadpool_limits

    # One BLAS thread: once TensorFlow has run in this process, multi-threaded OpenBLAS contends
    # with its thread pools and a fit takes many times longer.
    with threadpool_limits(1):
        return _cross_validate(features, labels, folds, classifier, C, seed)


def _cross_validate(features, labels, folds, classifier, C, seed) -> dict:
    classes = sorted(set(labels))
    y = np.array([classes.index(label) for label in labels])
    predictions = np.full(len(y), -1)
    fold_accuracy = {}
    for fold in sorted(set(folds.tolist())):
        test = folds == fold
        train = ~test
        x_train = np.concatenate([features[i] for i in np.flatnonzero(train)])
        y_train = np.concatenate([np.full(len(features[i]), y[i]) for i in np.flatnonzero(train)])
        model = make_classifier(classifier, C, seed).fit(x_train, y_train)
        for i in np.flatnonzero(test):
            scores = model.decision_function(features[i])
            if scores.ndim == 1:  # binary: one column, positive = model.classes_[1]
                scores = np.stack([-scores, scores], axis=1)
            predictions[i] = model.classes_[int(np.argmax(scores.mean(axis=0)))]
        fold_accuracy[int(fold)] = float(np.mean(predictions[test] == y[test]))
    confusion = np.zeros((len(classes), len(classes)), int)
    np.add.at(confusion, (y, predictions), 1)
    accuracies = np.array(list(fold_accuracy.values()))
    return {
        "classes": classes,
        "fold_accuracy": fold_accuracy,
        "mean": float(accuracies.mean()),
        "std": float(accuracies.std()),
        "confusion": confusion.tolist(),
        "per_class_accuracy": (np.diag(confusion) / np.maximum(confusion.sum(1), 1)).tolist(),
        "predictions": [classes[p] for p in predictions],
    }


def random_baseline(cfg: ModelConfig, seed: int = 0):
    """The same architecture as `cfg` with random (untrained) weights, seeded."""
    import keras

    from l3_keras import models

    keras.utils.set_random_seed(seed)
    return models.build_l3(cfg)


def probe(l3, cfg: ModelConfig, items: Sequence[Item], media_type: str = "audio",
          feature: str = "conv4", classifier: str = "logreg", C: float = 0.1, k: int = 5,
          seed: int = 0, hop_size: float = 0.5, compare_random: bool = True,
          out_dir=None) -> dict:
    """Cross-validated linear probe of `l3`'s audio or vision tower, beside random weights.

    Args:
        l3: the trained AVC model (`models.build_l3` layout).
        cfg: its ModelConfig.
        items: from `list_labelled` (given folds are used when every item has one).
        media_type: "audio" (1 s windows, `hop_size` apart) or "image" (one feature per image).
        feature: "conv4" (4x3 max-pooled grid of the last conv map) or "embedding".
        classifier: "logreg" or "svm"; C its inverse regularisation.
        k: folds when items carry none (stratified, shuffled with `seed`).
        compare_random: also probe `random_baseline(cfg, seed)`.
        out_dir: if set, writes report.json, confusion_{trained,random}.png, per_class_accuracy.png.

    Returns:
        dict: settings, "trained" (see `cross_validate`), "random" (if compared), "gap"
        (trained mean - random mean).
    """
    check_choice("media_type", media_type, MEDIA_TYPES)
    if len(items) < 2 or len({item.label for item in items}) < 2:
        raise L3Error("A probe needs at least 2 classes; check the labels of the collection.")
    labels = [item.label for item in items]
    folds = fold_ids(labels, [item.fold for item in items], k, seed)
    models_to_probe = {"trained": l3}
    if compare_random:
        models_to_probe["random"] = random_baseline(cfg, seed)
    result = {"media_type": media_type, "feature": feature, "classifier": classifier, "C": C,
              "clips": len(items), "folds": len(set(folds.tolist())), "model": cfg.name}
    for name, model in models_to_probe.items():
        if media_type == media.AUDIO:
            feats = audio_features(model, cfg, items, feature, hop_size)
        else:
            feats = image_features(model, cfg, items, feature)
        result[name] = cross_validate(feats, labels, folds, classifier, C, seed)
        result[name]["feature_dim"] = int(feats[0].shape[1])
    if compare_random:
        result["gap"] = result["trained"]["mean"] - result["random"]["mean"]
    if out_dir is not None:
        write_probe_report(result, out_dir)
    return result


def write_probe_report(result: dict, out_dir) -> str:
    """report.json plus confusion matrices and per-class accuracy (trained beside random)."""
    from l3_keras.evaluate import report

    runs = [name for name in ("trained", "random") if name in result]
    classes = result["trained"]["classes"]
    for name in runs:
        r = result[name]
        report.plot_confusion(r["confusion"], classes, os.path.join(out_dir, f"confusion_{name}.png"),
                              title=f"{name}: {r['mean']:.3f} +/- {r['std']:.3f}")
    report.plot_bars({name: result[name]["per_class_accuracy"] for name in runs}, classes,
                     os.path.join(out_dir, "per_class_accuracy.png"),
                     title=f"{result['media_type']} probe ({result['feature']})",
                     chance=1.0 / len(classes))
    return report.write_json(out_dir, {"probe": result})
