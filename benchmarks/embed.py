"""Embedding throughput of the paper model on this machine, float32 and mixed bfloat16.

Prints, per precision:
  audio: seconds of audio embedded per second of wall time (1 s windows every --hop s, centred,
         a --seconds long clip at 48 kHz, `embed.get_audio_embedding`);
  image: 224x224 images embedded per second (`embed.get_image_embedding`, uint8 input).
Figures are the median over --runs timed runs after one warm-up run. Random weights: the speed
does not depend on them.

    python benchmarks/embed.py [--seconds 10] [--images 32] [--runs 3] [--batch-size 32]
"""
import argparse
import statistics
import time
import warnings

import keras
import numpy as np

from l3_keras import embed, models
from l3_keras.config import get_preset


def median_seconds(fn, runs):
    fn()  # warm-up: first calls allocate and pick kernels
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(policy, args):
    keras.mixed_precision.set_global_policy(policy)
    cfg = get_preset("paper")
    towers = embed.EmbeddingModels.from_l3(models.build_l3(cfg), cfg)
    rng = np.random.default_rng(0)
    audio = (rng.random(args.seconds * cfg.sample_rate, np.float32) - 0.5) * 0.2
    images = rng.integers(0, 256, (args.images, *cfg.image_size, 3), np.uint8)

    def run_audio():
        embed.get_audio_embedding(audio, cfg.sample_rate, towers, args.hop, batch_size=args.batch_size)

    def run_images():
        embed.get_image_embedding(images, towers, batch_size=args.batch_size)

    windows = len(embed.frame_audio(audio, cfg, args.hop, True)[1])
    audio_s = median_seconds(run_audio, args.runs)
    image_s = median_seconds(run_images, args.runs)
    print(
        f"{policy:>14}: audio {args.seconds / audio_s:6.2f} s/s ({windows} windows in {audio_s:.2f} s)"
        f" | images {args.images / image_s:6.2f} img/s ({args.images} in {image_s:.2f} s)",
        flush=True,
    )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=int, default=10, help="audio clip length (10)")
    p.add_argument("--hop", type=float, default=0.1, help="seconds between windows (0.1)")
    p.add_argument("--images", type=int, default=32, help="224x224 images per run (32)")
    p.add_argument("--runs", type=int, default=3, help="timed runs; the median is printed (3)")
    p.add_argument("--batch-size", type=int, default=32, help="windows / images per pass (32)")
    p.add_argument("--policies", nargs="+", default=["float32", "mixed_bfloat16"])
    args = p.parse_args()
    warnings.filterwarnings("ignore", message=".*random weights.*")
    for policy in args.policies:
        measure(policy, args)


if __name__ == "__main__":
    main()
