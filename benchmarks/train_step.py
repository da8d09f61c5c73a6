"""Train-step throughput of the full "paper" model on this machine.

Prints pairs/s of one forward + backward + Adam update at batch 16 (the paper's per-GPU batch), in
float32 and in mixed bfloat16, and the achieved GFLOP/s (conv, dense and DFT multiply-adds counted
from the layer shapes, training = 3 x forward) next to a float32 / bfloat16 matmul roofline measured
in the same run.

Then the whole fit loop: pairs/s of the real training path (`train.recipe.run_recipe`, what
recipes/train_flickr.py runs: pairs from prepared shards, model.fit, checkpoints, TensorBoard, CSV,
progress callbacks) at the same batch, median over epochs after the first (which traces), against
the bare float32 train step: the input pipeline and callbacks should cost (almost) nothing. An
epoch's rate counts its training steps (mid-epoch checkpoints included); the validation pass and
checkpoint after it are left out, as their share depends on the epoch length (1000s of steps in a
real run, a few here).

    python benchmarks/train_step.py [--preset paper] [--batch 16] [--repeats 5] [--steps 3]
                                    [--fit-steps 4] [--fit-epochs 4] [--no-fit-loop]
                                    [--policies float32,mixed_bfloat16]
"""
import argparse
import os
import statistics
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.common import (env_line, fmt_rates, matmul_roofline_gflops, median_rate,  # noqa: E402
                               show_progress)
from l3_keras import models  # noqa: E402
from l3_keras.config import get_preset  # noqa: E402


def forward_flops(cfg, batch):
    """Multiply-adds x 2 of convs and dense layers (forward); backward is ~2x forward."""
    l3 = models.build_l3(cfg)
    total = 0
    for layer in l3.layers:
        if isinstance(layer, keras.layers.Conv2D):
            h, w, c_out = layer.output.shape[1:]
            c_in = layer.input.shape[-1]
            total += 2 * h * w * c_out * c_in * np.prod(layer.kernel_size)
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.input.shape[-1] * layer.units
        elif isinstance(layer, keras.layers.STFTSpectrogram):
            frames, bins = layer.output.shape[1:]
            total += 2 * 2 * frames * bins * layer.frame_length
    return batch * total


def train_step_rate(cfg, batch, policy, steps, repeats):
    keras.mixed_precision.set_global_policy(policy)
    try:
        l3 = models.build_l3(cfg)
        l3.compile(keras.optimizers.Adam(1e-4, weight_decay=1e-5),
                   loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        rng = np.random.default_rng(0)
        x = {"image": rng.random((batch, *cfg.image_size, 3), dtype=np.float32),
             "audio": rng.standard_normal((batch, cfg.audio_samples)).astype(np.float32) * 0.1}
        y = (np.arange(batch) % 2).astype(np.int32)
        ds = tf.data.Dataset.from_tensors((x, y)).repeat().prefetch(2)
        it = iter(ds)
        l3.train_on_batch(x, y)  # build + trace

        def run():
            for _ in range(steps):
                l3.train_on_batch(*next(it))
        return median_rate(run, steps * batch, repeats=repeats)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def fit_loop_rate(cfg, batch, steps, epochs, cache_dir):
    """(median, per-epoch) pairs/s of run_recipe's fit on a few synthetic clips prepared for `cfg`."""
    from l3_keras.config import DataConfig
    from l3_keras.data import synthetic
    from l3_keras.data.prepare import prepare
    from l3_keras.train import rundir
    from l3_keras.train.recipe import run_recipe

    side = DataConfig.for_model(cfg).frame_short_side
    folder = os.path.join(cache_dir, f"bench-{cfg.name}")
    spec = synthetic.ClipSpec(seconds=4.0, kinds=4, size=(side + side % 2,) * 2,
                              sample_rate=cfg.sample_rate)
    synthetic.make_collection(os.path.join(folder, "clips"), 6, spec)
    shards = os.path.join(folder, "shards")
    prepare(os.path.join(folder, "clips"), shards, DataConfig.for_model(cfg), videos_per_shard=2,
            progress=False)
    with tempfile.TemporaryDirectory() as run_dir:
        run_recipe(shards, preset=cfg.name, model_dir=run_dir, export="",
                   batch_per_replica=batch, steps_per_epoch=steps, epochs=epochs,
                   validation_pairs=batch, val_fraction=0.34, log_every=steps)
        rates = [row["pairs_per_second"] for row in rundir.read_history(run_dir)][1:]
    return statistics.median(rates), rates


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="paper")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=3, help="train steps per timed repeat")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--fit-steps", type=int, default=4, help="steps per epoch of the fit loop")
    p.add_argument("--fit-epochs", type=int, default=4, help="epochs of the fit loop (1st traces)")
    p.add_argument("--no-fit-loop", action="store_true", help="only the bare train steps")
    p.add_argument("--policies", default="float32,mixed_bfloat16",
                   help="bare-step dtype policies (bf16 is emulated, so slow, on most CPUs)")
    p.add_argument("--cache-dir", default=os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), ".cache"), help="where the benchmark clips are kept")
    args = p.parse_args(argv)
    cfg = get_preset(args.preset)
    print(env_line())
    flops_per_pair = 3 * forward_flops(cfg, 1)
    print(f"model {cfg.name}: {flops_per_pair / 1e9:.2f} GFLOP per training pair (forward x 3)")
    bare = {}
    dtypes = {"float32": tf.float32, "mixed_bfloat16": tf.bfloat16}
    for policy in args.policies.split(","):
        dtype = dtypes[policy]
        rate, rates = train_step_rate(cfg, args.batch, policy, args.steps, args.repeats)
        bare[policy] = rate
        roof = matmul_roofline_gflops(dtype=dtype)
        achieved = rate * flops_per_pair / 1e9
        print(f"{policy:>15}: {rate:7.2f} pairs/s (median of {fmt_rates(rates)}), "
              f"{achieved:6.1f} GFLOP/s = {achieved / roof:5.1%} of the {dtype.name} matmul roofline "
              f"({roof:.1f} GFLOP/s)")
    if not args.no_fit_loop:
        show_progress()
        rate, rates = fit_loop_rate(cfg, args.batch, args.fit_steps, args.fit_epochs, args.cache_dir)
        print(f"{'fit loop':>15}: {rate:7.2f} pairs/s (median of epochs {fmt_rates(rates)}): shards -> "
              f"pairs -> model.fit + callbacks, float32")
        print(f"{'ratio':>15}: {rate / bare['float32']:.3f} of the bare float32 train step "
              f"({bare['float32']:.2f} pairs/s)")


if __name__ == "__main__":
    main()
