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


def test_cross_validate_averages_window_scores_per_clip():
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
    # The gap to random weights is printed, not asserted: it depends on the synthetic data the main
    # job's model learns from. Measured (tiny, 20 ms hop): +0.03 (0.873 and 0.877 vs 0.845) after
    # training on events of 2-4 s with silent gaps up to 0.5 s; -0.005 (0.841 vs 0.845) on the
    # main job's current 3-6 s events with gaps up to 0.25 s, chosen for a higher AVC ceiling.
    items = lp.list_labelled(_dcase(real_media), "pattern", lp.DCASE_PATTERN)
    result = _probe_trained_vs_random(items, tmp_path, k=5)
    assert result["folds"] == 5
    classes = len({item.label for item in items})
    assert classes == 11 and result["trained"]["mean"] > 5 / classes, result  # chance: 1 / 11


@pytest.mark.slow
def test_fsdd_subset_runs_end_to_end(real_media, tmp_path):
    # Spoken digits run end to end, but the gap is NOT asserted: the main job's model learned from
    # synthetic tones, noise bands and AM sounds, and on 8 kHz speech its conv4 features have come
    # out both above and below random weights (+0.045 on an earlier constant-lr model, -0.09 on
    # a 6-epoch cosine model).
    items = lp.list_labelled(real_media / "audio-labeled" / "fsdd", "pattern", lp.FSDD_PATTERN)
    items = lp.subset(items, 20, seed=0)
    result = _probe_trained_vs_random(items, tmp_path, k=5)
    assert result["folds"] == 5 and len(result["trained"]["fold_accuracy"]) == 5, result
    assert 0.1 < result["trained"]["mean"] <= 1.0 and 0.1 < result["random"]["mean"] <= 1.0, result
    assert (tmp_path / "report.json").exists()
