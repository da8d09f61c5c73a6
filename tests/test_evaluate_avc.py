"""AVC accuracy on held-out shards: Wilson interval, balanced deterministic pairs, report, CLI."""
import json

import keras
import numpy as np
import pytest

from l3_keras import cli, models
from l3_keras.config import DataConfig, get_preset
from l3_keras.data import synthetic
from l3_keras.data.prepare import prepare
from l3_keras.evaluate import avc
from tests.trained_tiny import trained_tiny

TINY = get_preset("tiny")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("avc")
    synthetic.make_collection(str(root / "clips"), 3,
                              synthetic.ClipSpec(seconds=3.0, kinds=3, seed=5))
    prepare(str(root / "clips"), str(root / "shards"), DataConfig.for_model(TINY),
            videos_per_shard=2, progress=False)
    return str(root / "shards")


def test_wilson_interval_matches_known_values():
    # Reference values from statsmodels' proportion_confint(method="wilson").
    np.testing.assert_allclose(avc.wilson_interval(50, 100), (0.40383, 0.59617), atol=1e-5)
    np.testing.assert_allclose(avc.wilson_interval(0, 10), (0.0, 0.27753), atol=1e-5)
    np.testing.assert_allclose(avc.wilson_interval(10, 10), (0.72247, 1.0), atol=1e-5)


def test_evaluate_avc_is_balanced_deterministic_and_reported(shards, tmp_path):
    keras.utils.set_random_seed(0)
    l3 = models.build_l3(TINY)
    x, y = avc.balanced_pairs(shards, TINY, 40, seed=3)
    assert x["image"].shape == (40, 64, 64, 3) and x["audio"].shape == (40, 16000)
    assert (y == 1).sum() == (y == 0).sum() == 20
    first = avc.evaluate_avc(l3, shards, TINY, num_pairs=40, seed=3)
    again = avc.evaluate_avc(l3, shards, TINY, num_pairs=40, seed=3)
    assert first == again
    assert first["num_pairs"] == 40
    # The model's own verdicts on those pairs: a pair is right when the larger softmax column is
    # its label (1 = corresponds).
    right = l3.predict(x, verbose=0).argmax(axis=1) == y
    assert 0 < right.sum() < 40  # random weights: some right, some wrong, so swaps show
    assert first["accuracy"] == right.mean()
    assert first["positive_accuracy"] == right[y == 1].mean()
    assert first["negative_accuracy"] == right[y == 0].mean()
    assert first["ci95"] == pytest.approx(avc.wilson_interval(int(right.sum()), 40))
    avc.write_avc_report(first, tmp_path)
    assert json.loads((tmp_path / "report.json").read_text())["avc"]["accuracy"] == first["accuracy"]
    assert (tmp_path / "avc_accuracy.png").stat().st_size > 0


def test_cli_evaluate_avc(shards, tmp_path, capsys):
    keras.utils.set_random_seed(0)
    models.build_l3(TINY).save(tmp_path / "l3.keras")
    code = cli.main(["evaluate", "avc", str(tmp_path / "l3.keras"), shards, "--preset", "tiny",
                     "--num-pairs", "16", "--out", str(tmp_path / "report")])
    assert code == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["num_pairs"] == 16
    assert (tmp_path / "report" / "report.json").exists()


@pytest.mark.slow
def test_main_job_reaches_its_figure_on_held_out_pairs():
    """The main job's full default run (tests/trained_tiny.py, shared with the other slow evaluation
    tests) on its 1024 fixed held-out pairs: the README states 0.918 and a target of >= 0.90
    (ceiling 0.942), so a regression of the main job fails CI here."""
    trained = trained_tiny()
    result = avc.evaluate_avc(trained.model, trained.val_shards, trained.config, num_pairs=1024)
    print("held-out AVC", result)
    assert trained.results["steps"] == 900
    # The run's own held-out figure (what the recipe prints) and the balanced evaluation set.
    assert trained.results["avc_accuracy"] >= 0.90, trained.results
    assert result["accuracy"] >= 0.90, result
    assert min(result["positive_accuracy"], result["negative_accuracy"]) > 0.8, result
