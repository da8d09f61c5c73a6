"""The training recipes' one function: data (given, or the cached synthetic collection) -> run -> export.

`recipes/train_flickr.py`, `recipes/train_kinetics_sounds.py` and `l3 train` all parse the same
flags (`cli.add_train_arguments`) and call `run_recipe`.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Optional

from l3_keras.config import DataConfig, ModelConfig, TrainConfig, get_preset
from l3_keras.data import synthetic
from l3_keras.train import run
from l3_keras.train.data import find_inputs

# The synthetic collection: all 10 kinds, events of 3-6 s with gaps of at most 0.25 s (short events
# and long gaps put more 1 s windows across boundaries, which no model can score right; the README
# gives the ceilings). Size and sample rate follow the preset (`make_synthetic`).
SYNTHETIC = synthetic.ClipSpec(seconds=10.0, kinds=10, event_seconds=(3.0, 6.0), max_gap=0.25)
SYNTHETIC_CLIPS = 240
SYNTHETIC_VIDEOS_PER_SHARD = 8
# The tiny preset on 2 CPU cores: Adam 3e-4 with a cosine decay to 0 over 900 steps of 32 pairs,
# 4 pairs per parsed video, no weight decay (the README has what it reaches and how fast).
TINY_SYNTHETIC = TrainConfig(learning_rate=3e-4, lr_schedule="cosine", weight_decay=0.0,
                             batch_per_replica=32, steps_per_epoch=100, epochs=9,
                             validation_pairs=1024, pairs_per_video=4,
                             checkpoint_every=100, log_every=25)


def make_synthetic(cache_dir, model_config: ModelConfig, workers: int = 2) -> str:
    """The synthetic collection for `model_config` in cache_dir (made once, then reused).

    Clips are 128 x 128 (the tiny preset's frames are smaller) or the preset's stored frame size
    when larger (paper: 256 x 256), at the preset's sample rate.
    """
    side = max(synthetic.DEFAULT_SIZE[0], DataConfig.for_model(model_config).frame_short_side)
    side += side % 2  # H.264 wants even sizes
    rate = model_config.sample_rate
    folder = os.path.join(cache_dir, f"synthetic-{rate}hz-{side}px")
    spec = SYNTHETIC.replace(sample_rate=rate, size=(side, side))
    synthetic.make_collection(folder, SYNTHETIC_CLIPS, spec, workers=workers)
    return folder


def run_recipe(data=None, *, preset="tiny", model_dir=None, val_data=None, prepared_dir=None,
               cache_dir=None, label_from=None, per_class=False, export: Optional[str] = None,
               export_root=None, workers=2, videos_per_shard=None, audio_context=None,
               **train_changes) -> dict:
    """Trains `preset` on `data` (None: the synthetic collection) and exports it.

    Args:
        data: folder of videos, prepared shards (folder or glob), or None for synthetic data.
        model_dir: run directory; default runs/PRESET-DATANAME under the working directory.
        prepared_dir: where videos are prepared; default MODEL_DIR/prepared (synthetic: cached).
        export: name under export_root; default "l3-PRESET-synthetic" for synthetic data and
            no export otherwise; "" = none.
        export_root: default saved_models/ under the working directory.
        cache_dir: synthetic clips and their shards; default .cache/ under the working directory.
        videos_per_shard: when preparing videos (held-out = whole shards); default from the
            DataConfig's shard size, 8 for synthetic data.
        audio_context: seconds of audio context for an edge-free model
            (ModelConfig.audio_context_seconds); None: the preset's.
        **train_changes: TrainConfig fields (None = the default: the paper's settings for real
            data, TINY_SYNTHETIC for synthetic data).

    Returns:
        the held-out results (`run.train`), plus "run_dir", "ceiling" (synthetic), "export",
        "wall_seconds".
    """
    t0 = time.perf_counter()
    model_config = get_preset(preset)
    if audio_context is not None:
        model_config = model_config.replace(audio_context_seconds=audio_context)
    cache_dir = os.path.abspath(cache_dir or ".cache")
    is_synthetic = data is None
    if is_synthetic:
        data = make_synthetic(cache_dir, model_config, workers)
    name = "synthetic" if is_synthetic else os.path.basename(os.path.normpath(str(data))) or "data"
    run_dir = os.path.abspath(model_dir or os.path.join("runs", f"{model_config.name}-{name}"))
    base = TINY_SYNTHETIC if is_synthetic else TrainConfig()
    tc = base.replace(**{k: v for k, v in train_changes.items() if v is not None})
    if is_synthetic:
        prepared_dir = prepared_dir or os.path.join(cache_dir, f"prepared-{model_config.name}")
    inputs = find_inputs(
        data, model_config, tc, prepared_dir or os.path.join(run_dir, "prepared"),
        val_data=val_data, label_from=label_from, workers=workers,
        videos_per_shard=videos_per_shard or (SYNTHETIC_VIDEOS_PER_SHARD if is_synthetic else None))
    _, results = run.train(run_dir, model_config, tc, inputs,
                           per_class=per_class or bool(label_from))
    results["run_dir"] = run_dir
    export = f"l3-{model_config.name}-synthetic" if export is None and is_synthetic else export
    if export:
        from l3_keras.export import export as export_model

        target = export_model(run_dir, export, version=1, overwrite=True,
                              root=os.path.abspath(export_root or "saved_models"))
        results["export"] = str(target)
    if is_synthetic:
        from l3_keras.data.ceiling import avc_ceiling

        results["ceiling"] = avc_ceiling(SYNTHETIC)
    results["wall_seconds"] = round(time.perf_counter() - t0, 1)
    logging.getLogger("l3_keras.train").info(
        "held-out AVC accuracy %.3f%s in %.0f s (%s)", results["avc_accuracy"],
        f" (ceiling {results['ceiling']:.3f})" if is_synthetic else "", results["wall_seconds"], run_dir)
    return results
