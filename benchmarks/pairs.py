"""Input-pipeline throughput at the paper's sizes: `prepare` videos/s and AVC pairs/s per CPU core.

Makes (once, cached) a synthetic collection of 10 s clips with 48 kHz AAC audio and 288x512
frames, prepares it with the paper DataConfig (48 kHz, 256 px short side, 4 fps), then times
`make_pair_dataset(training=True)` (random 224 crop, flip, colour jitter, gain) with tf.data
restricted to one thread, for several pairs_per_video. Figures are medians over runs; "per CPU
s" divides by the process CPU time, which stays honest on a machine shared with other jobs.

Usage: python benchmarks/pairs.py [--clips 20] [--runs 5] [--pairs 2000] [--cache /tmp/l3_bench]
"""
import argparse
import os
import shutil
import statistics
import tempfile
import time

import tensorflow as tf

from l3_keras.config import DataConfig, get_preset
from l3_keras.data import pairs, shards, synthetic
from l3_keras.data.prepare import prepare

MODEL = get_preset("paper")
DATA = DataConfig.for_model(MODEL)


def _timed(fn):
    """(result, wall seconds, process CPU seconds) of fn()."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def bench_prepare(clip_dir: str, runs: int) -> tuple:
    """(median videos/s wall, median videos per CPU s, videos) of prepare(workers=1) from scratch."""
    walls, cpus, n = [], [], 0
    for _ in range(runs):
        out = tempfile.mkdtemp(prefix="l3_bench_prepare_")
        try:
            manifest, wall, cpu = _timed(lambda: prepare(clip_dir, out, DATA, progress=False))
        finally:
            shutil.rmtree(out)
        n = manifest["totals"]["kept"]
        walls.append(n / wall)
        cpus.append(n / cpu)  # workers=1 decodes in this process, so its CPU time counts
    return statistics.median(walls), statistics.median(cpus), n


def bench_pairs(files, pairs_per_video: int, num_pairs: int, runs: int) -> tuple:
    """Median pairs/s on one thread (wall, and per CPU second) for one pairs_per_video."""
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    batch = 32
    ds = pairs.make_pair_dataset(files, MODEL, training=True, seed=0, batch_size=batch,
                                 options=pairs.PairOptions(pairs_per_video=pairs_per_video))
    ds = ds.with_options(options)
    iterator = iter(ds)
    for _ in range(20):  # warm up: fill the shuffle buffer, trace the functions
        next(iterator)
    steps = max(1, num_pairs // batch)
    walls, cpus = [], []
    for _ in range(runs):
        _, wall, cpu = _timed(lambda: [next(iterator) for _ in range(steps)])
        walls.append(steps * batch / wall)
        cpus.append(steps * batch / cpu)
    return statistics.median(walls), statistics.median(cpus)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=2000, help="pairs per timed run")
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "l3_bench"))
    parser.add_argument("--pairs-per-video", type=int, nargs="+", default=[1, 2, 4, 8])
    args = parser.parse_args()
    # One runtime thread too, so that idle pool threads do not spin on the other cores.
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)

    clip_dir = os.path.join(args.cache, "clips_288x512_48k")
    spec = synthetic.ClipSpec(seconds=10, size=(288, 512), sample_rate=48000)
    _, wall, _ = _timed(lambda: synthetic.make_collection(clip_dir, args.clips, spec,
                                                          workers=os.cpu_count()))
    print(f"synthetic collection: {args.clips} clips x 10 s, 288x512 @ 10 fps, 48 kHz "
          f"({wall:.1f} s, cached in {clip_dir})")

    wall_rate, cpu_rate, kept = bench_prepare(clip_dir, max(1, args.runs // 2))
    print(f"prepare (workers=1, paper DataConfig, {kept} videos): {wall_rate:.2f} videos/s (wall), "
          f"{cpu_rate:.2f} videos per CPU s = {cpu_rate * 10:.0f} s of video per CPU s")

    shard_dir = os.path.join(args.cache, "shards_paper")
    prepare(clip_dir, shard_dir, DATA, videos_per_shard=5, progress=False)
    files = shards.list_shards(shard_dir)
    print(f"pairs: 224x224 crop + flip + brightness/saturation + gain, 48000 audio samples, "
          f"1 tf.data thread, batch 32, {len(files)} shards")
    print(f"  (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; on a busy machine "
          "the per CPU s figure is the fairer one)")
    for s in args.pairs_per_video:
        wall_rate, cpu_rate = bench_pairs(files, s, args.pairs, args.runs)
        print(f"  pairs_per_video={s}: {wall_rate:7.0f} pairs/s (wall, 1 thread)  "
              f"{cpu_rate:7.0f} pairs per CPU s")


if __name__ == "__main__":
    main()
