"""Linear probes: how well a frozen tower's features separate labelled sounds or images.

The ESC-50 / DCASE protocol of the paper (Sec. 4.2): embed every clip in 1 s windows, take the
conv4 map max-pooled to a 4x3 grid (6144-D for the paper model; `ModelConfig.audio_transfer_grid`) or the
embedding, standardise, fit a linear classifier on the WINDOWS, predict a clip by averaging its
windows' scores, and cross-validate over folds (given ones, e.g. ESC-50's, or stratified k-fold).
The paper used a linear SVM; logistic regression is the default here (calibrated scores, no
convergence warnings on small sets).

Every probe is also run on the same architecture with random weights (`random_baseline`): a
random conv net is already a decent feature extractor, and the gap is what training bought.

Collections (`list_labelled`): class from the parent folder ("folder"), from the file name by a
regular expression with a named group `label` ("pattern"; FSDD_PATTERN, DCASE_PATTERN), or from a
CSV with filename / label / fold columns ("csv"; ESC-50's meta/esc50.csv has filename, fold and
category: pass label_column="category").
"""
from __future__ import annotations

import csv
import dataclasses
import os
import re
from typing import List, Optional, Sequence

import numpy as np

from l3_keras import media
from l3_keras.config import ModelConfig
from l3_keras.errors import L3Error, check_choice

LABEL_SOURCES = ("folder", "pattern", "csv")
FEATURES = ("conv4", "embedding")
CLASSIFIERS = ("logreg", "svm")
MEDIA_TYPES = (media.AUDIO, media.IMAGE)
# Free Spoken Digit Dataset: "{digit}_{speaker}_{index}.wav".
FSDD_PATTERN = r"^(?P<label>\d+)_(?P<speaker>[A-Za-z]+)_(?P<index>\d+)\.\w+$"
# DCASE 2016 task 2 isolated sounds: "clearthroat002.wav", "keysDrop016.wav".
DCASE_PATTERN = r"^(?P<label>[A-Za-z]+)(?P<index>\d+)\.\w+$"


@dataclasses.dataclass(frozen=True)
class Item:
    """One labelled file; `fold` is the given CV fold (None: folds are drawn), `fields` the
    other named groups of the pattern or columns of the CSV (e.g. speaker)."""

    path: str
    label: str
    fold: Optional[int] = None
    fields: tuple = ()


# ----------------------------------------------------------------------------------------------
# Collections


def list_labelled(root, label_from: str = "folder", pattern: Optional[str] = None,
                  csv_path=None, filename_column: str = "filename", label_column: str = "label",
                  fold_column: Optional[str] = "fold", media_type: str = "audio") -> List[Item]:
    """Labelled files under `root`, sorted by path.

    Args:
        root: folder of files (searched recursively), or the folder CSV file names are relative to.
        label_from: "folder" (parent folder name), "pattern" (regex on the file name) or "csv".
        pattern: for "pattern": a regex with a named group `label` (else the first group).
        csv_path: for "csv": the CSV file.
        filename_column, label_column, fold_column: CSV column names (fold_column may be absent).
        media_type: "audio" or "image": which file extensions count (`media.EXTENSIONS`).

    Raises:
        L3Error: unknown source, no files, a file the pattern does not match, missing columns.
    """
    check_choice("label_from", label_from, LABEL_SOURCES)
    check_choice("media_type", media_type, MEDIA_TYPES)
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise L3Error(f"{root} is not a folder; give the folder that holds the labelled files.")
    if label_from == "csv":
        return _from_csv(root, csv_path, filename_column, label_column, fold_column)
    paths = media.find_files(root, media_type)
    if not paths:
        raise L3Error(f"No {media_type} files ({', '.join(media.EXTENSIONS[media_type])}) "
                      f"under {root}.")
    if label_from == "folder":
        return [Item(p, os.path.basename(os.path.dirname(p))) for p in paths]
    if not pattern:
        raise L3Error("label_from='pattern' needs a pattern, e.g. linear_probe.DCASE_PATTERN.")
    regex = re.compile(pattern)
    items = []
    for p in paths:
        match = regex.search(os.path.basename(p))
        if not match:
            raise L3Error(f"{os.path.basename(p)} does not match the label pattern {pattern!r}.")
        named = match.groupdict()
        label = named.pop("label", None) or match.group(1)
        items.append(Item(p, label, fields=tuple(sorted(named.items()))))
    return items


def _from_csv(root, csv_path, filename_column, label_column, fold_column) -> List[Item]:
    if not csv_path or not os.path.isfile(csv_path):
        raise L3Error(f"label_from='csv' needs an existing CSV file; got {csv_path!r}.")
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise L3Error(f"{csv_path} has no rows.")
    missing = [c for c in (filename_column, label_column) if c not in rows[0]]
    if missing:
        raise L3Error(f"{csv_path} lacks the column(s) {missing}; it has {sorted(rows[0])}.")
    has_fold = fold_column is not None and fold_column in rows[0]
    items = []
    for row in rows:
        path = os.path.join(root, row[filename_column])
        if not os.path.isfile(path):
            raise L3Error(f"{path} (from {csv_path}) does not exist; is --root the audio folder?")
        extra = tuple(sorted((k, v) for k, v in row.items()
                             if k not in (filename_column, label_column, fold_column)))
        items.append(Item(path, row[label_column], int(row[fold_column]) if has_fold else None,
                          extra))
    return sorted(items, key=lambda item: item.path)


def subset(items: Sequence[Item], per_class: int, seed: int = 0) -> List[Item]:
    """At most `per_class` items of every class, drawn with `seed`; sorted by path."""
    rng = np.random.default_rng(seed)
    chosen = []
    for label in sorted({item.label for item in items}):
        members = [item for item in items if item.label == label]
        keep = rng.permutation(len(members))[:per_class]
        chosen += [members[i] for i in sorted(keep)]
    return sorted(chosen, key=lambda item: item.path)


# ----------------------------------------------------------------------------------------------
# Features


def _towers(l3, cfg: ModelConfig, feature: str):
    """`embed.EmbeddingModels` of `l3` that return `feature` ("conv4" grid or "embedding")."""
    from l3_keras import embed

    check_choice("feature", feature, FEATURES)
    return embed.EmbeddingModels.from_l3(l3, cfg, transfer_features=feature == "conv4")


def audio_features(l3, cfg: ModelConfig, items: Sequence[Item], feature: str = "conv4",
                   hop_size: float = 0.5, batch_size: int = 64) -> List[np.ndarray]:
    """Window features of every audio file: one float32 [T_i, D] array a file (T_i >= 1).

    Files are read with `media.read_audio`; down-mixing, resampling and 1 s windowing (`hop_size` apart,
    centred padding) are `embed.get_audio_embedding`'s.
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
                                            transfer_features=towers.transfer_features)
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
