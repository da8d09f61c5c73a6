"""The recipes end to end on small collections: train, held-out results, run directory, export."""
import json
import os

import pytest

from l3_keras.data import synthetic
from l3_keras.train import recipe
from recipes import train_flickr, train_kinetics_sounds
from tests.train_helpers import make_shards

SMALL = ["--steps-per-epoch", "3", "--epochs", "1", "--batch-per-replica", "8",
         "--validation-pairs", "16", "--val-fraction", "0.34", "--log-every", "1"]


@pytest.mark.slow
def test_kinetics_recipe_reports_per_class_accuracy(tmp_path):
    videos = os.path.dirname(make_shards(str(tmp_path), clips=8, labelled=True))
    results = train_kinetics_sounds.main(["--data", os.path.join(videos, "videos"), "--model-dir",
                                          str(tmp_path / "run"), "--videos-per-shard", "2",
                                          *SMALL])
    assert set(results["per_class"]) <= {"drums", "violin"} and results["per_class"]
    assert sum(c["pairs"] for c in results["per_class"].values()) == results["pairs"] == 16
    assert json.loads((tmp_path / "run" / "results.json").read_text())["per_class"]
    assert os.listdir(tmp_path / "run" / "prepared")


@pytest.mark.slow
def test_flickr_recipe_main_trains_and_exports(tmp_path, capsys):
    shards = make_shards(str(tmp_path))
    root = tmp_path / "saved_models"
    results = train_flickr.main(["--data", shards, "--model-dir", str(tmp_path / "run"),
                                 "--export", "l3-test", *SMALL], export_root=str(root))
    export = root / "l3-test"
    assert results["export"] == str(export) and results["steps"] == 3
    assert 0 <= results["avc_accuracy"] <= 1 and results["pairs"] == 16
    printed = capsys.readouterr().out
    assert json.loads(printed[printed.index("{"):]) == results  # what the recipe prints
    for name in ("l3.keras", "audio_embedding.keras", "image_embedding.keras", "config.json"):
        assert (export / name).exists()
    assert (export / "serving" / "1" / "saved_model.pb").exists()
    assert json.loads((tmp_path / "run" / "results.json").read_text())["steps"] == 3


def test_synthetic_defaults_keep_the_ceiling_above_the_target():
    from l3_keras.data.ceiling import avc_ceiling

    spec = recipe.SYNTHETIC
    assert spec.kinds == len(synthetic.KINDS)
    assert avc_ceiling(spec, pairs=4000, clips=100) > 0.91
    # Long silent gaps make frames between events ambiguous: the old defaults cap lower.
    old = synthetic.ClipSpec(kinds=10, event_seconds=(1.0, 3.0), max_gap=1.0)
    assert avc_ceiling(old, pairs=4000, clips=100) < 0.9
