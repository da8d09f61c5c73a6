"""Linear probes: collections (folder, regex, CSV), CV, reports, and transfer on real sounds."""
import csv
import json
import os
import pathlib
import runpy
import time

import keras
import numpy as np
import pytest

from l3_keras import cli, models
from l3_keras.config import get_preset
from l3_keras.data import synthetic
from l3_keras.errors import L3Error
from l3_keras.evaluate import linear_probe as lp
from tests.trained_tiny import trained_tiny

TINY = get_preset("tiny")
REPO = pathlib.Path(__file__).resolve().parents[1]


def _dcase(real_media):
    return real_media / "audio-labeled" / "dcase2016_task2"


def _random_l3(seed=7):
    keras.utils.set_random_seed(seed)
    return models.build_l3(TINY)


def test_labels_from_regex_on_fsdd_and_dcase_names(real_media):
    fsdd = lp.list_labelled(real_media / "audio-labeled" / "fsdd", "pattern", lp.FSDD_PATTERN)
    assert len(fsdd) == 2000 and {i.label for i in fsdd} == set("0123456789")
    assert dict(fsdd[0].fields)["speaker"] and fsdd[0].fold is None
    dcase = lp.list_labelled(_dcase(real_media), "pattern", lp.DCASE_PATTERN)
    labels = {i.label for i in dcase}
    assert len(dcase) == 220 and len(labels) == 11 and {"keysDrop", "clearthroat"} <= labels
    assert [len(s) for s in [lp.subset(dcase, 3, seed=1)]] == [33]


def test_bad_collections_raise_one_clear_error(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.wav").write_bytes(b"")
    with pytest.raises(L3Error, match="does not match"):
        lp.list_labelled(tmp_path, "pattern", lp.FSDD_PATTERN)
    with pytest.raises(L3Error, match="label_from"):
        lp.list_labelled(tmp_path, "filename")
    with pytest.raises(L3Error, match="No image files"):
        lp.list_labelled(tmp_path, media_type="image")
    with pytest.raises(L3Error, match="at least 2 classes"):
        lp.probe(None, TINY, lp.list_labelled(tmp_path))


def test_cross_validate_separates_classes_and_draws_stratified_folds():
    rng = np.random.default_rng(0)
    labels = ["a", "b", "c"] * 10
    # Class means along different axes, so every class is linearly separable from the rest.
    means = {y: 3.0 * np.eye(8)[k] for k, y in enumerate("abc")}
    feats = [rng.normal(means[y], 1.0, (int(rng.integers(1, 4)), 8)) for y in labels]
    folds = lp.fold_ids(labels, k=5, seed=0)
    assert sorted(np.bincount(folds)) == [6] * 5
    for classifier in lp.CLASSIFIERS:
        r = lp.cross_validate(feats, labels, folds, classifier)
        assert r["mean"] > 0.9 and np.sum(r["confusion"]) == 30 and len(r["fold_accuracy"]) == 5
    with pytest.raises(L3Error, match="Stratified 5-fold"):
        lp.fold_ids(["a"] * 4 + ["b"] * 4)


@pytest.mark.parametrize("classifier", lp.CLASSIFIERS)
@pytest.mark.parametrize("classes", [("neg", "pos"), ("neg", "pos", "other")])
def test_a_clip_is_scored_by_the_mean_of_its_window_scores(classifier, classes):
    """Fold 0 holds "pos" clips with three windows that lean "pos" and one that is strongly "neg":
    the mean of the window scores says "pos", the max (or the strongest window) says "neg".
    Two classes run the binary branch (one decision column, sign-flipped for the first class)."""
    centre = {"neg": [-1.0, 0.0], "pos": [1.0, 0.0], "other": [0.0, 4.0]}
    rng = np.random.default_rng(1)
    feats, labels, folds = [], [], []
    for i in range(12):  # fold 1: clean training clips, 3 windows each
        label = classes[i % len(classes)]
        feats.append(rng.normal(centre[label], 0.1, (3, 2)))
        labels.append(label)
        folds.append(1)
    for _ in range(3):  # fold 0: the mixed "pos" clips
        feats.append(np.array([[0.6, 0.0], [0.6, 0.0], [0.6, 0.0], [-1.2, 0.0]]))
        labels.append("pos")
        folds.append(0)
    for label in classes:  # fold 0 needs every class once for the classifier of fold 1
        feats.append(rng.normal(centre[label], 0.1, (3, 2)))
        labels.append(label)
        folds.append(0)
    r = lp.cross_validate(feats, labels, np.array(folds), classifier, C=10.0)
    assert r["predictions"][12:15] == ["pos"] * 3, r["predictions"]
    assert r["fold_accuracy"][0] == 1.0, r


def test_csv_collection_with_folds_probe_and_recipe(real_media, tmp_path):
    """ESC-50-style CSV (filename, fold, category) over 4 DCASE classes x 5 files."""
    items = lp.subset(lp.list_labelled(_dcase(real_media), "pattern", lp.DCASE_PATTERN), 5, 0)
    items = [i for i in items if i.label in ("cough", "doorslam", "keyboard", "phone")]
    meta = tmp_path / "meta.csv"
    with open(meta, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filename", "fold", "category"])
        for k, item in enumerate(items):
            w.writerow([os.path.basename(item.path), k % 5 + 1, item.label])
    listed = lp.list_labelled(_dcase(real_media), "csv", csv_path=meta, label_column="category")
    assert [i.fold for i in listed] == [k % 5 + 1 for k in range(20)]
    model_file = tmp_path / "l3.keras"
    _random_l3().save(model_file)
    result = runpy.run_path(str(REPO / "recipes" / "eval_esc50.py"), run_name="eval")["main"](
        ["--csv", str(meta), "--root", str(_dcase(real_media)), "--label-column", "category",
         "--model", str(model_file), "--preset", "tiny", "--out", str(tmp_path / "report")])
    assert result["folds"] == 5 and result["clips"] == 20
    assert set(result) >= {"trained", "random", "gap"}
    report = json.loads((tmp_path / "report" / "report.json").read_text())["probe"]
    assert report["trained"]["feature_dim"] == 4 * 3 * 128
    for png in ("confusion_trained.png", "confusion_random.png", "per_class_accuracy.png"):
        assert (tmp_path / "report" / png).stat().st_size > 0


def _render_kind_images(root, per_class=8, seed=0):
    """PNG frames of 4 synthetic kinds (one object in a random quadrant), one folder per kind."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    for kind in range(4):
        folder = root / synthetic.KINDS[kind].name
        folder.mkdir(parents=True)
        for i in range(per_class):
            frame = np.full((96, 96, 3), int(rng.integers(30, 70)), np.uint8)
            x0, y0, x1, y1 = synthetic.random_box(int(rng.integers(4)), (96, 96), rng)
            mask = synthetic.shape_mask(synthetic.KINDS[kind].shape, y1 - y0, x1 - x0)
            frame[y0:y1, x0:x1][mask] = synthetic.KINDS[kind].colour
            tf.io.write_file(str(folder / f"{i:02d}.png"), tf.io.encode_png(frame))


def test_image_probe_on_rendered_frames_and_cli(tmp_path, capsys):
    _render_kind_images(tmp_path / "images")
    items = lp.list_labelled(tmp_path / "images", media_type="image")
    assert len(items) == 32
    result = lp.probe(_random_l3(), TINY, items, media_type="image", feature="embedding", k=4,
                      compare_random=False)
    assert result["trained"]["feature_dim"] == 128 and "random" not in result
    assert result["trained"]["mean"] >= 0.75  # colours are easy even for random features
    model_file = tmp_path / "l3.keras"
    _random_l3().save(model_file)
    code = cli.main(["evaluate", "probe", str(model_file), str(tmp_path / "images"), "--kind",
                     "image", "--folds", "4", "--preset", "tiny", "--out", str(tmp_path / "r")])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(summary) == {"trained", "random"}


def _write_sound_classes(folder, per_class=10, seed=0):
    """FSDD-named WAVs ("{label}_synth_{i}.wav") of two classes a random net separates easily:
    "0" a tone of 300-700 Hz, "1" white noise; 1.2-2 s long, half at 44.1 kHz stereo."""
    import soundfile

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(per_class):
        for label in "01":
            sr, channels = (44100, 2) if i % 2 else (16000, 1)
            t = np.arange(int(rng.uniform(1.2, 2.0) * sr)) / sr
            if label == "0":
                x = 0.3 * np.sin(2 * np.pi * rng.uniform(300, 700) * t)
            else:
                x = 0.1 * rng.standard_normal(t.size)
            x = np.stack([x] * channels, axis=1) + 0.003 * rng.standard_normal((t.size, channels))
            soundfile.write(folder / f"{label}_synth_{i}.wav", x.astype(np.float32), sr)
    return folder


def _blinded_l3(seed=7):
    """An L3 model whose audio conv4 map is all zeros (last BatchNorm: gamma = beta = 0), so its
    conv4 features carry nothing: a probe of it must score chance, its random twin must not."""
    l3 = _random_l3(seed)
    bn = l3.get_layer("audio_block4_bn2")
    bn.gamma.assign(np.zeros(bn.gamma.shape, np.float32))
    bn.beta.assign(np.zeros(bn.beta.shape, np.float32))
    return l3


def test_random_baseline_has_fresh_weights_and_features(tmp_path):
    items = lp.list_labelled(_write_sound_classes(tmp_path / "sounds", per_class=2), "pattern",
                             lp.FSDD_PATTERN)
    given = _random_l3(seed=7)
    baseline = lp.random_baseline(TINY, seed=0)
    for a, b in zip(given.get_weights(), baseline.get_weights()):
        if a.std() > 0:  # kernels (BatchNorm starts at gamma 1, beta 0 in both)
            assert not np.allclose(a, b)
    assert [w.shape for w in given.get_weights()] == [w.shape for w in baseline.get_weights()]
    f_given = lp.audio_features(given, TINY, items)
    f_baseline = lp.audio_features(baseline, TINY, items)
    for x, y in zip(f_given, f_baseline):
        assert x.shape == y.shape and not np.allclose(x, y, atol=1e-3)


def test_cli_probe_fsdd_pattern_knows_the_answer(tmp_path, capsys):
    """`l3 evaluate probe --label-from pattern --pattern fsdd` on synthetic tone vs noise clips, with a
    model that cannot hear (conv4 = 0): the known answer is chance for it and near 1 for its random
    twin, so a baseline built from the given weights, or swapped results, fail here."""
    sounds = _write_sound_classes(tmp_path / "fsdd")
    model_file = tmp_path / "blind.keras"
    _blinded_l3().save(model_file)
    code = cli.main(["evaluate", "probe", str(model_file), str(sounds), "--label-from", "pattern",
                     "--pattern", "fsdd", "--folds", "5", "--preset", "tiny", "--out",
                     str(tmp_path / "report")])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    report = json.loads((tmp_path / "report" / "report.json").read_text())["probe"]
    assert report["clips"] == 20 and report["folds"] == 5 and report["trained"]["classes"] == ["0", "1"]
    assert summary["trained"][0] <= 0.6, summary  # chance: 0.5
    assert summary["random"][0] >= 0.9, summary
    assert report["gap"] == pytest.approx(summary["trained"][0] - summary["random"][0])
    assert report["gap"] <= -0.3


def _probe_trained_vs_random(items, out_dir, **kwargs):
    trained = trained_tiny()
    t0 = time.perf_counter()
    result = lp.probe(trained.model, trained.config, items, out_dir=out_dir, **kwargs)
    line = {k: (round(result[k]["mean"], 3), round(result[k]["std"], 3))
            for k in ("trained", "random")}
    print(f"{len(items)} clips, {kwargs}: {line}, gap {result['gap']:.3f}, "
          f"{time.perf_counter() - t0:.0f} s")
    return result


@pytest.mark.slow
def test_dcase_5_fold_probe_is_far_above_chance(real_media, tmp_path):
    # Both probes must be far above chance (1/11), and they must be two different models. The gap
    # to random weights is printed, not asserted: it depends on the synthetic data the main job's
    # model learns from (full main job: 0.832 trained vs 0.850 random; after training on 2-4 s
    # events with silent gaps: 0.873 and 0.877 vs 0.845). What the gap measures is checked where
    # the answer is known: test_cli_probe_fsdd_pattern_knows_the_answer.
    items = lp.list_labelled(_dcase(real_media), "pattern", lp.DCASE_PATTERN)
    result = _probe_trained_vs_random(items, tmp_path, k=5)
    assert result["folds"] == 5
    classes = len({item.label for item in items})
    assert classes == 11
    assert result["trained"]["mean"] >= 0.6 and result["random"]["mean"] >= 0.6, result
    assert result["trained"]["predictions"] != result["random"]["predictions"]


@pytest.mark.slow
def test_fsdd_subset_probe_is_far_above_chance(real_media, tmp_path):
    # Spoken digits (20 per digit, chance 0.1). Full main job: 0.630 trained vs 0.655 random
    # (+-0.11 over folds); the gap is not asserted (the model learned from synthetic sounds, not
    # speech), only that both probes are far above chance and differ.
    items = lp.list_labelled(real_media / "audio-labeled" / "fsdd", "pattern", lp.FSDD_PATTERN)
    items = lp.subset(items, 20, seed=0)
    result = _probe_trained_vs_random(items, tmp_path, k=5)
    assert result["folds"] == 5 and len(result["trained"]["fold_accuracy"]) == 5, result
    assert result["trained"]["mean"] >= 0.4 and result["random"]["mean"] >= 0.4, result
    assert result["trained"]["predictions"] != result["random"]["predictions"]
    assert (tmp_path / "report.json").exists()
