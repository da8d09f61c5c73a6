"""AV-digits: learn audio-visual correspondence from real speech (spoken digits on screen).

Clips show digit glyphs (varied fonts, sizes, colours, places, textured backgrounds) while real
recordings of that digit play (FSDD: `{digit}_{speaker}_{index}.wav`). The held-out speakers'
recordings make the held-out clips only, so the held-out AVC accuracy is on voices never heard in
training. Then the audio tower is probed on spoken digits (1 s windows, logistic regression, one
fold per speaker) beside the same network with random weights, and on DCASE when given.

    python recipes/train_avdigits.py --fsdd ../shared/data/audio-labeled/fsdd --holdout-speakers nicolas
    python recipes/train_avdigits.py --fsdd DIR --dcase DCASE_DIR --epochs 60 --model-dir runs/avd

Rerunning the same command reuses the clips and shards (cache) and resumes the run.
"""
import argparse
import json
import os

from l3_keras.cli import add_train_config_arguments, configure_logging, train_config_changes
from l3_keras.errors import L3Error


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fsdd", required=True, help="FSDD recordings folder ({digit}_{speaker}_{i}.wav)")
    p.add_argument("--holdout-speakers", nargs="+", help="speakers never heard in training "
                                                          "(default: the last in sorted order)")
    p.add_argument("--dcase", help="DCASE 2016 task 2 folder: also probe on it")
    p.add_argument("--train-clips", type=int, default=720, help="training clips (720)")
    p.add_argument("--held-out-clips", type=int, default=40, help="held-out clips (40)")
    p.add_argument("--cued-clips", type=int, default=0,
                   help="more training clips whose digits also have their own colour (0)")
    p.add_argument("--event-seconds", type=float, nargs=2, metavar=("MIN", "MAX"),
                   help="drawn event length, filled with recordings of one digit (2 4)")
    p.add_argument("--max-gap", type=float, help="longest pause between events, s (0.25)")
    p.add_argument("--identity", choices=["glyph", "emblem"],
                   help="what shows a digit: its glyph (default) or an emblem whose shape and hue "
                        "the digit fixes (an easy visual side, for diagnosis)")
    p.add_argument("--probe-per-class", type=int, default=20,
                   help="recordings per digit and speaker in the probe (20)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--model-dir", help="run directory (default runs/PRESET-avdigits)")
    p.add_argument("--cache-dir", help="clips and shards cache (default .cache/)")
    p.add_argument("--export", default="", help="export name under saved_models/ ('' = none)")
    p.add_argument("--export-root", help="folder of exports (default saved_models/)")
    p.add_argument("--workers", type=int, default=2, help="clip-making / decoding processes")
    add_train_config_arguments(p)
    return p, p.parse_args(argv)


def scene_spec(args):
    """The SceneSpec the flags ask for (SceneSpec's defaults where a flag is not given)."""
    from l3_keras.data import scenes

    spec = {"event_seconds": args.event_seconds, "max_gap": args.max_gap,
            "identity": args.identity}
    return scenes.SceneSpec(**{k: tuple(v) if isinstance(v, list) else v
                               for k, v in spec.items() if v is not None})


def main(argv=None):
    parser, args = parse(argv)
    configure_logging("%(asctime)s %(message)s")
    from l3_keras.data import labelled
    from l3_keras.train import scene_recipe

    spec = scene_spec(args)
    try:
        items = labelled.list_labelled(args.fsdd, "pattern", labelled.FSDD_PATTERN)
        extra = ({"dcase": labelled.list_labelled(args.dcase, "pattern", labelled.DCASE_PATTERN)}
                 if args.dcase else {})
        results = scene_recipe.run_scene_recipe(
            items, spec=spec, holdout=args.holdout_speakers, train_clips=args.train_clips,
            held_out_clips=args.held_out_clips, cued_clips=args.cued_clips, preset=args.preset,
            model_dir=args.model_dir or os.path.join("runs", f"{args.preset}-avdigits"),
            cache_dir=args.cache_dir, export=args.export, export_root=args.export_root,
            workers=args.workers,
            probe_per_class=args.probe_per_class, extra_probes=extra,
            **train_config_changes(args))
    except L3Error as err:
        parser.exit(2, f"train_avdigits: error: {err}\n")
    print(json.dumps({k: results[k] for k in ("avc_accuracy", "steps", "probe", "wall_seconds")},
                     indent=1))
    return results


if __name__ == "__main__":
    main()
