"""Hyperparameter search for the tiny preset with keras-tuner: learning rate, weight decay, fusion width.

Each trial builds `models.build_l3` with the trial's fusion width, trains it for --steps-per-trial
steps of the AVC pair stream (Adam with decoupled weight decay, as `train` uses) and is scored
by its accuracy on a fixed, balanced set of held-out pairs (`evaluate.avc.balanced_pairs`):
the objective is `val_avc_accuracy`. The best values are printed and saved as best.json in the
tuner folder, which defaults to a fresh folder under the system temp dir (never the repo).

    python recipes/tune.py --train SHARDS --val SHARDS --max-trials 20 --steps-per-trial 300
    python recipes/tune.py   # a small synthetic collection in the tuner folder, 4 quick trials
"""
import argparse
import json
import os
import tempfile

from l3_keras import files

OBJECTIVE = "val_avc_accuracy"


def build_model(hp, preset="tiny"):
    """A compiled AVC model for one trial's hyperparameters."""
    import keras

    from l3_keras import models
    from l3_keras.config import get_preset

    cfg = get_preset(preset).replace(fusion_units=hp.Choice("fusion_units", [32, 64, 128]))
    model = models.build_l3(cfg)
    optimizer = keras.optimizers.Adam(
        hp.Float("learning_rate", 1e-4, 3e-3, sampling="log"),
        weight_decay=hp.Choice("weight_decay", [0.0, 1e-5, 1e-4]))
    model.compile(optimizer, loss="sparse_categorical_crossentropy",
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="avc_accuracy")])
    return model


def synthetic_shards(folder, clips=12, seed=0):
    """(train shards, val shards) from a small synthetic collection made in `folder`."""
    from l3_keras.config import DataConfig, get_preset
    from l3_keras.data import synthetic
    from l3_keras.data.prepare import prepare

    data_config = DataConfig.for_model(get_preset("tiny"))
    shards = []
    for split, count, offset in (("train", clips, 0), ("val", max(4, clips // 3), 1)):
        spec = synthetic.ClipSpec(seconds=6.0, kinds=4, seed=seed + offset)
        synthetic.make_collection(os.path.join(folder, split), count, spec)
        prepare(os.path.join(folder, split), os.path.join(folder, f"shards-{split}"),
                data_config, videos_per_shard=4, progress=False)
        shards.append(os.path.join(folder, f"shards-{split}"))
    return shards


def search(train, val, directory, max_trials=4, steps_per_trial=50, batch=32, val_pairs=256,
           seed=0, overwrite=False):
    """Runs the search; returns {"best": hyperparameters, OBJECTIVE: score, "trials": [...]}."""
    import keras_tuner as kt

    from l3_keras.config import get_preset
    from l3_keras.data.pairs import PairOptions, make_pair_dataset
    from l3_keras.evaluate.avc import balanced_pairs

    cfg = get_preset("tiny")
    train_ds = make_pair_dataset(train, cfg, training=True, seed=seed, batch_size=batch,
                                 options=PairOptions(pairs_per_video=4))
    val_x, val_y = balanced_pairs(val, cfg, val_pairs, seed)
    tuner = kt.RandomSearch(build_model, kt.Objective(OBJECTIVE, "max"), max_trials=max_trials,
                            seed=seed, directory=directory, project_name="l3_tiny",
                            overwrite=overwrite)
    tuner.search(train_ds, steps_per_epoch=steps_per_trial, epochs=1,
                 validation_data=(val_x, val_y), batch_size=batch, verbose=0)
    trials = [{"hyperparameters": t.hyperparameters.values, OBJECTIVE: t.score}
              for t in tuner.oracle.get_best_trials(max_trials)]
    best = {"best": trials[0]["hyperparameters"], OBJECTIVE: trials[0][OBJECTIVE],
            "trials": trials, "steps_per_trial": steps_per_trial, "val_pairs": len(val_y)}
    files.write_json(os.path.join(directory, "best.json"), best, indent=1)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", help="training shards (folder or glob); default: synthetic")
    parser.add_argument("--val", help="held-out shards; required with --train")
    parser.add_argument("--dir", help="tuner folder (default: a new folder in the temp dir)")
    parser.add_argument("--max-trials", type=int, default=4)
    parser.add_argument("--steps-per-trial", type=int, default=50)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--val-pairs", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="start over in --dir")
    args = parser.parse_args(argv)
    if bool(args.train) != bool(args.val):
        parser.error("give both --train and --val, or neither (synthetic data)")
    directory = args.dir or tempfile.mkdtemp(prefix="l3-tune-")
    os.makedirs(directory, exist_ok=True)
    train, val = (args.train, args.val) if args.train else synthetic_shards(
        os.path.join(directory, "data"), seed=args.seed)
    best = search(train, val, directory, args.max_trials, args.steps_per_trial, args.batch,
                  args.val_pairs, args.seed, args.overwrite)
    print(json.dumps({"best": best["best"], OBJECTIVE: best[OBJECTIVE],
                      "saved": os.path.join(directory, "best.json")}, indent=1))
    return best


if __name__ == "__main__":
    main()
