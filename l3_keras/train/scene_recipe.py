"""Correspondence on real sound: labelled recordings -> scene clips -> train -> held-out AVC -> probes.

`recipes/train_avdigits.py` (spoken digits, FSDD) calls `run_scene_recipe`; any labelled folder
works (`data.labelled`). The held-out groups (speakers) never play in a training clip:

    items --split_by_group--> training / held-out recordings
      --data.scenes--> training clips, held-out clips (cached in cache_dir, keyed by their settings)
      --train.recipe.run_recipe--> prepared shards, run directory (curves.png), held-out AVC, export
      --linear probes--> the audio tower's conv4 features of 1 s windows, logistic regression,
         trained vs the same network with random weights: on the collection with one fold per group
         (leave-one-speaker-out, so the classifier is tested on speakers it was not fitted on;
         the held-out speaker's fold is reported apart), and on an extra labelled set (DCASE)

results.json in the run directory gets the probe figures beside the held-out AVC accuracy; every
probe writes its report (JSON, confusion matrices, per-class bars) under RUN_DIR/probe-NAME/.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from typing import Optional, Sequence

from l3_keras import files
from l3_keras.config import DataConfig, get_preset
from l3_keras.data import labelled, scenes
from l3_keras.train import recipe, rundir

# The tiny preset on scene clips: in-batch negatives (`train.objective`; with the paper's sampled
# negatives it stays at chance on spoken digits), Adam 1e-3 with a cosine decay to 0 over 3000
# steps of 32 pairs (about 6 min on 2 CPU cores), 4 pairs per parsed video, no weight decay. The
# README's AV-digits section has what it reaches and what else was tried.
TINY_SCENES = recipe.TINY_SYNTHETIC.replace(negatives="batch", learning_rate=1e-3, epochs=30)
TRAIN_CLIPS, HELD_OUT_CLIPS = 720, 40
VIDEOS_PER_SHARD = 8
PROBE_PER_CLASS = 20  # recordings per class and group in the probes (FSDD: 4 x 10 x 20 = 800)

log = logging.getLogger("l3_keras.train")


def make_scene_splits(cache_dir, items: Sequence[labelled.Item], spec: scenes.SceneSpec, *,
                      group_field="speaker", holdout=None, train_clips=TRAIN_CLIPS,
                      held_out_clips=HELD_OUT_CLIPS, cued_clips=0, seed=0, workers=2):
    """Clips made once under cache_dir, then reused: (training list, held-out list, held-out items).

    The lists are text files of clip paths: the first `train_clips` of the training folder (plus,
    with `cued_clips`, that many more whose glyphs have their class's colour,
    `SceneSpec.class_colours`) and the first `held_out_clips` of the held-out folder. A folder may
    hold more clips from an earlier, larger run; the lists name exactly the ones asked for.
    """
    train_items, held_items = labelled.split_by_group(items, group_field, holdout, seed=seed)
    classes = sorted({item.label for item in items})
    key = json.dumps([spec.to_json_dict(), sorted(i.path for i in held_items), classes, seed])
    root = os.path.join(cache_dir, f"scenes-{hashlib.sha1(key.encode()).hexdigest()[:10]}")
    videos = scenes.make_scene_collection(os.path.join(root, "train"), train_items, train_clips,
                                          spec=spec, classes=classes, seed=seed, workers=workers)
    held = scenes.make_scene_collection(os.path.join(root, "heldout"), held_items, held_out_clips,
                                        spec=spec, classes=classes, seed=seed + 1, workers=workers)
    if cued_clips:
        videos += scenes.make_scene_collection(
            os.path.join(root, "cued"), train_items, cued_clips,
            spec=spec.replace(class_colours=True), classes=classes, seed=seed + 2,
            workers=workers)[:cued_clips]
    return (_listing(os.path.join(root, f"train-{train_clips}-cued-{cued_clips}.txt"), videos),
            _listing(os.path.join(root, f"heldout-{held_out_clips}.txt"), held), held_items)


def _listing(path, videos) -> str:
    with files.atomic_write(path) as tmp, open(tmp, "w") as f:
        f.write("".join(f"{video}\n" for video in videos))
    return path


def held_out_ceiling(held_list, spec: scenes.SceneSpec) -> float:
    """The best AVC accuracy reachable on the listed held-out clips (`ceiling.collection_ceiling`)."""
    from l3_keras.data import ceiling, synthetic

    with open(held_list) as f:
        clips = [scenes.seen_and_heard(synthetic.read_sidecar(line.strip())) for line in f
                 if line.strip()]
    return round(ceiling.collection_ceiling(clips, spec.seconds), 4)


def group_probe(l3, cfg, items, held_items, group_field="speaker", per_class=PROBE_PER_CLASS,
                seed=0, out_dir=None) -> dict:
    """Linear probe with one fold per group, trained vs random weights; the held-out groups' folds.

    Without groups (held-out recordings instead) the probe runs on the held-out recordings with
    stratified 5-fold cross-validation.
    """
    from l3_keras.evaluate import linear_probe as lp

    groups = sorted({labelled.group_of(i, group_field) for i in items} - {None})
    if not groups:
        return _summary(lp.probe(l3, cfg, lp.subset(held_items, per_class, seed), seed=seed,
                                 out_dir=out_dir), [])
    chosen = []
    for g, group in enumerate(groups):
        members = [i for i in items if labelled.group_of(i, group_field) == group]
        chosen += [dataclasses.replace(i, fold=g) for i in lp.subset(members, per_class, seed)]
    held = sorted({groups.index(labelled.group_of(i, group_field)) for i in held_items})
    result = lp.probe(l3, cfg, chosen, seed=seed, out_dir=out_dir)
    summary = _summary(result, held)
    summary["fold_accuracy"] = {groups[int(f)]: round(acc, 4)
                        for f, acc in result["trained"]["fold_accuracy"].items()}
    summary["held_out_groups"] = [groups[g] for g in held]
    return summary


def _summary(result: dict, held_folds) -> dict:
    """Mean, fold spread and the held-out folds' accuracy, trained and random, and the gaps."""
    out = {"clips": result["clips"], "folds": result["folds"]}
    for name in ("trained", "random"):
        r = result[name]
        out[name] = {"mean": round(r["mean"], 4), "std": round(r["std"], 4)}
        if held_folds:
            out[name]["held_out"] = round(
                sum(r["fold_accuracy"][f] for f in held_folds) / len(held_folds), 4)
    out["gap"] = round(out["trained"]["mean"] - out["random"]["mean"], 4)
    if held_folds:
        out["held_out_gap"] = round(out["trained"]["held_out"] - out["random"]["held_out"], 4)
    return out


def run_scene_recipe(items: Sequence[labelled.Item], *, spec: Optional[scenes.SceneSpec] = None,
                     group_field="speaker", holdout=None, train_clips=TRAIN_CLIPS,
                     held_out_clips=HELD_OUT_CLIPS, cued_clips=0, preset="tiny", model_dir=None, cache_dir=None,
                     export: Optional[str] = "", export_root=None, workers=2,
                     probe_per_class=PROBE_PER_CLASS, extra_probes=None, **train_changes) -> dict:
    """Scene clips from `items`, training, held-out AVC, probes, export; returns results.json.

    Args:
        items: labelled recordings (`labelled.list_labelled`).
        spec: the clips' look and sound; its size and sample rate are set from the preset.
        group_field, holdout: what is held out (`labelled.split_by_group`).
        train_clips, held_out_clips: clip counts of the two collections.
        cued_clips: more training clips whose glyphs also have their class's colour (a visual
            cue that is easy to learn, beside the glyph's shape; `make_scene_splits`).
        model_dir: run directory; default runs/PRESET-scenes under the working directory.
        cache_dir: clips and prepared shards; default .cache/ under the working directory.
        export: export name ("" = none), under export_root (default saved_models/).
        probe_per_class: recordings per class and group in the group probe.
        extra_probes: {name: items} probed too (trained vs random, stratified 5-fold), e.g. DCASE.
        **train_changes: TrainConfig fields over TINY_SCENES (None = keep).

    Returns:
        run.train's held-out results plus "probe" {name: summary}, "ceiling" (the held-out
        clips'), "clips", "wall_seconds".
    """
    import keras

    from l3_keras.evaluate import linear_probe as lp

    t0 = time.perf_counter()
    model_config = get_preset(preset)
    cache_dir = os.path.abspath(cache_dir or ".cache")
    spec = spec or scenes.SceneSpec()
    side = max(spec.size[0], DataConfig.for_model(model_config).frame_short_side)
    spec = spec.replace(size=(side + side % 2,) * 2, sample_rate=model_config.sample_rate)
    train_list, held_list, held_items = make_scene_splits(
        cache_dir, items, spec, group_field=group_field, holdout=holdout, train_clips=train_clips,
        held_out_clips=held_out_clips, cued_clips=cued_clips,
        seed=train_changes.get("seed") or 0, workers=workers)
    run_dir = os.path.abspath(model_dir or os.path.join("runs", f"{model_config.name}-scenes"))
    changes = {**TINY_SCENES.to_dict(), **{k: v for k, v in train_changes.items() if v is not None}}
    results = recipe.run_recipe(
        train_list, val_data=held_list, preset=preset, model_dir=run_dir, cache_dir=cache_dir,
        prepared_dir=os.path.join(os.path.dirname(train_list), f"prepared-{model_config.name}-"
                                  f"{train_clips}-cued{cued_clips}-heldout{held_out_clips}"),
        export=export, export_root=export_root, workers=workers,
        videos_per_shard=VIDEOS_PER_SHARD, **changes)
    l3 = keras.models.load_model(os.path.join(run_dir, rundir.MODEL))
    seed = changes["seed"]
    probes = {"groups": group_probe(l3, model_config, items, held_items, group_field,
                                    probe_per_class, seed, os.path.join(run_dir, "probe-groups"))}
    for name, extra in (extra_probes or {}).items():
        probes[name] = _summary(lp.probe(l3, model_config, extra, seed=seed,
                                         out_dir=os.path.join(run_dir, f"probe-{name}")), [])
    results.update(probe=probes, ceiling=held_out_ceiling(held_list, spec),
                   clips={"train": train_list, "held_out": held_list, "spec": spec.to_json_dict()},
                   wall_seconds=round(time.perf_counter() - t0, 1))
    files.write_json(os.path.join(run_dir, rundir.RESULTS), results)
    log.info("held-out AVC %.3f (ceiling %.3f); probe %s", results["avc_accuracy"],
             results["ceiling"], {k: (v["trained"], v["random"]) for k, v in probes.items()})
    return results
