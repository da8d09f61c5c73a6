"""Train-step throughput of the full "paper" model on this machine.

Prints pairs/s of one forward + backward + Adam update at batch 16 (the paper's per-GPU batch), in
float32 and in mixed bfloat16, and the achieved GFLOP/s (conv, dense and DFT multiply-adds counted
from the layer shapes, training = 3 x forward) next to a float32 / bfloat16 matmul roofline measured
in the same run.

    python benchmarks/train_step.py [--preset paper] [--batch 16] [--repeats 5] [--steps 3]
"""
import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.common import env_line, fmt_rates, matmul_roofline_gflops, median_rate  # noqa: E402
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="paper")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=3, help="train steps per timed repeat")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    cfg = get_preset(args.preset)
    print(env_line())
    flops_per_pair = 3 * forward_flops(cfg, 1)
    print(f"model {cfg.name}: {flops_per_pair / 1e9:.2f} GFLOP per training pair (forward x 3)")
    for policy, dtype in (("float32", tf.float32), ("mixed_bfloat16", tf.bfloat16)):
        rate, rates = train_step_rate(cfg, args.batch, policy, args.steps, args.repeats)
        roof = matmul_roofline_gflops(dtype=dtype)
        achieved = rate * flops_per_pair / 1e9
        print(f"{policy:>15}: {rate:7.2f} pairs/s (median of {fmt_rates(rates)}), "
              f"{achieved:6.1f} GFLOP/s = {achieved / roof:5.1%} of the {dtype.name} matmul roofline "
              f"({roof:.1f} GFLOP/s)")


if __name__ == "__main__":
    main()
