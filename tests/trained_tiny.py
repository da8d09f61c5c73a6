"""The trained model the slow evaluation tests share: the main job's own default run.

`recipes/train_flickr.py` with no arguments (train.recipe.run_recipe: the cached synthetic
collection of 10 kinds, the tiny preset, its full TINY_SYNTHETIC schedule) is run once per test
session into a temporary folder, so the evaluation tests check what the README's main job produces
and test_evaluate_avc guards its held-out figure. Set $L3_EVAL_CACHE to a folder to keep the clips,
shards and run between sessions (a finished run is reloaded, not retrained).

Localisation needs held-out clips with a silent distractor object in another quadrant, so that
"the sounding object" differs from "any object": those are made separately (same kinds, events
and audio as the training collection, never seen in training).
"""
import dataclasses
import functools
import json
import os
import tempfile

import keras

from l3_keras.config import DataConfig, get_preset
from l3_keras.data import synthetic
from l3_keras.train import recipe

TINY = get_preset("tiny")
LOCALIZE_CLIPS = 16  # about 2.2 events a clip: >= 30 cases


@dataclasses.dataclass
class Trained:
    model: object
    config: object
    data_config: DataConfig
    val_clips: list
    val_shards: list
    results: dict


@functools.lru_cache(maxsize=None)
def trained_tiny(root=None) -> Trained:
    root = root or os.environ.get("L3_EVAL_CACHE") or tempfile.mkdtemp(prefix="l3-eval-")
    run_dir = os.path.join(root, "run")
    results = recipe.run_recipe(cache_dir=os.path.join(root, "cache"), model_dir=run_dir, export="")
    model = keras.models.load_model(os.path.join(run_dir, "model.keras"))
    with open(os.path.join(run_dir, "config.json")) as f:
        val_shards = json.load(f)["inputs"]["val"]
    spec = recipe.SYNTHETIC.replace(seed=12345, distractor=True, sample_rate=TINY.sample_rate)
    val_clips = synthetic.make_collection(os.path.join(root, "localize"), LOCALIZE_CLIPS, spec)
    return Trained(model, TINY, DataConfig.for_model(TINY), val_clips, val_shards, results)
