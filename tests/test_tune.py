"""recipes/tune.py: two short keras-tuner trials on a small synthetic collection, best.json saved."""
import json
import pathlib
import runpy

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_short_trials_save_the_best(tmp_path):
    recipe = runpy.run_path(str(REPO / "recipes" / "tune.py"), run_name="tune")
    train, val = recipe["synthetic_shards"](str(tmp_path / "data"), clips=4)
    best = recipe["search"](train, val, str(tmp_path / "tuner"), max_trials=2, steps_per_trial=5,
                            batch=16, val_pairs=32)
    saved = json.loads((tmp_path / "tuner" / "best.json").read_text())
    assert len(saved["trials"]) == 2
    assert set(saved["best"]) == {"learning_rate", "weight_decay", "fusion_units"}
    assert 0.0 <= saved["val_avc_accuracy"] <= 1.0 and saved == json.loads(json.dumps(best))
    assert (tmp_path / "tuner" / "l3_tiny").is_dir()


def test_default_tuner_dir_is_outside_the_repo(monkeypatch):
    import tempfile

    recipe = runpy.run_path(str(REPO / "recipes" / "tune.py"), run_name="tune")
    calls = {}
    monkeypatch.setitem(recipe["main"].__globals__, "synthetic_shards",
                        lambda folder, seed=0: calls.setdefault("data", folder) and ("t", "v"))
    monkeypatch.setitem(recipe["main"].__globals__, "search",
                        lambda train, val, directory, *a: calls.update(dir=directory) or
                        {"best": {}, "val_avc_accuracy": 0.5})
    recipe["main"]([])
    assert calls["dir"].startswith(tempfile.gettempdir())
    assert not calls["dir"].startswith(str(REPO))
