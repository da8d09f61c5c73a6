"""Does mixed precision cost accuracy? The main job's run in float32 and in bf16 (or fp16), compared.

Trains PRESET on the main job's synthetic collection (`train.recipe.run_recipe`: the same clips,
held-out videos, schedule and seed) once per precision and prints each run's held-out AVC accuracy
with its 95% interval, the difference, and the training rate. The issue's check is the paper model
in bf16 on a GPU:

    python benchmarks/mixed_precision.py --preset paper                 # GPU: the paper model
    python benchmarks/mixed_precision.py                                # tiny, the main job's schedule
    python benchmarks/mixed_precision.py --steps-per-epoch 50 --epochs 6  # shorter

On most CPUs bfloat16 is emulated (8x slower than float32 for tiny here), so a CPU run can only be
a shortened one, and that shows that bf16 training learns rather than that it matches float32. Runs go to --out (kept: rerunning reuses finished runs).
"""
import argparse
import math
import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import env_line, show_progress  # noqa: E402
from l3_keras.train import rundir  # noqa: E402
from l3_keras.train.recipe import run_recipe  # noqa: E402


def interval(accuracy, pairs):
    """Half-width of the normal-approximation 95% interval of an accuracy over `pairs` pairs."""
    return 1.96 * math.sqrt(accuracy * (1 - accuracy) / pairs)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--precisions", default="float32,bf16",
                   help="comma-separated: float32, bf16, fp16 (the first is the reference)")
    p.add_argument("--epochs", type=int, help="default: the main job's")
    p.add_argument("--steps-per-epoch", type=int, help="default: the main job's")
    p.add_argument("--validation-pairs", type=int, default=4096,
                   help="held-out pairs scored at the end (more pairs, tighter intervals)")
    p.add_argument("--out", default=os.path.join("runs", "mixed-precision"))
    args = p.parse_args(argv)
    show_progress()
    print(env_line())
    rows = []
    for name in args.precisions.split(","):
        run_dir = os.path.join(args.out, f"{args.preset}-{name}")
        results = run_recipe(preset=args.preset, model_dir=run_dir, export="",
                             mixed_precision=None if name == "float32" else name,
                             epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                             validation_pairs=args.validation_pairs)
        history = rundir.read_history(run_dir)
        rate = statistics.median([row["pairs_per_second"] for row in history] or [float("nan")])
        last = history[-1]  # the last epoch's training-mode figures
        rows.append((name, results["avc_accuracy"], results["pairs"], rate, last))
    ref = rows[0][1]
    for name, acc, pairs, rate, last in rows:
        print(f"{args.preset} {name:>8}: held-out AVC {acc:.4f} +- {interval(acc, pairs):.4f} "
              f"({pairs} pairs), {acc - ref:+.4f} vs {rows[0][0]}; last epoch's training AVC "
              f"{last['avc_accuracy']:.4f}, loss {last['loss']:.4f}; {rate:.1f} pairs/s (median epoch)")


if __name__ == "__main__":
    main()
