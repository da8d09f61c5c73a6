"""Embedding long recordings with the paper model: exact vs shared mode, float32 vs bf16, peak memory.

One run prints:
  1. exact and shared mode (`embed.get_audio_embedding`, float32) on one --seconds long
     recording at --hop: seconds of audio per second of wall time, and their ratio;
  2. float32 vs mixed bf16 (exact mode) on the first --precision-seconds of it: s/s, ratio and
     the relative L2 difference of the embeddings;
  3. images per second (224x224, float32 and bf16);
  4. peak RSS of a fresh process that embeds a WAV file of each --memory-minutes length from
     its path (chunked decoding), at --memory-hop (a long hop keeps the paper model's CPU time
     affordable; memory does not depend on the hop beyond the [T, D] output).
Each speed figure is ONE timed call after a warm-up call on 2 s (the long calls take minutes on
2 cores); ratios are measured in the same run. Random weights: speed does not depend on them,
but shared-vs-exact ACCURACY does (see tests/test_embed_stream.py for the trained model's).

    python benchmarks/long_recordings.py [--seconds 60] [--hop 0.1] [--precision-seconds 10]
                               [--memory-minutes 10 60] [--memory-hop 60]
"""
import argparse
import os
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings

import numpy as np

from l3_keras import embed, models
from l3_keras.config import get_preset

# VmHWM, not ru_maxrss, which Linux carries over from the parent across fork + exec.
PEAK = textwrap.dedent(
    """
    import sys, warnings
    warnings.filterwarnings("ignore")
    from l3_keras import embed
    emb, _ = embed.get_audio_embedding(sys.argv[1], model="paper", hop_size=float(sys.argv[2]))
    hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
    print(len(emb), int(hwm.split()[1]) // 1024)
    """
)


def recording(seconds, rate, seed=0):
    """A chirp in noise: float32 [seconds * rate]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 200 * t * (1 + (t % 10) / 10))
            + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def audio_rate(towers, x, rate, hop, mode):
    embed.get_audio_embedding(x[: 2 * rate], rate, towers, hop, mode=mode)  # warm-up
    (emb, _), secs = timed(lambda: embed.get_audio_embedding(x, rate, towers, hop, mode=mode))
    return emb, len(x) / rate / secs, secs


def write_wav(path, minutes, rate):
    import soundfile

    with soundfile.SoundFile(path, "w", rate, 1, subtype="PCM_16") as f:
        for i in range(int(minutes)):
            f.write(recording(60, rate, seed=i))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=60, help="recording length (60)")
    p.add_argument("--hop", type=float, default=0.1, help="seconds between windows (0.1)")
    p.add_argument("--precision-seconds", type=float, default=10, help="for float32 vs bf16 (10)")
    p.add_argument("--images", type=int, default=16, help="224x224 images per timing (16)")
    p.add_argument("--memory-minutes", type=float, nargs="*", default=[10, 60])
    p.add_argument("--memory-hop", type=float, default=60.0, help="hop of the memory runs (60 s)")
    args = p.parse_args()
    warnings.filterwarnings("ignore", message=".*random weights.*")
    cfg = get_preset("paper")
    rate = cfg.sample_rate
    towers = embed.EmbeddingModels.from_l3(models.build_l3(cfg), cfg)
    x = recording(args.seconds, rate)
    print(f"paper model, random weights, {args.seconds:g} s at {rate} Hz, hop {args.hop:g} s, "
          f"{os.cpu_count()} CPUs", flush=True)

    exact, exact_rate, exact_s = audio_rate(towers, x, rate, args.hop, "exact")
    print(f"exact  float32: {exact_rate:6.3f} s/s ({len(exact)} windows in {exact_s:.1f} s)", flush=True)
    shared, shared_rate, shared_s = audio_rate(towers, x, rate, args.hop, "shared")
    print(f"shared float32: {shared_rate:6.3f} s/s ({len(shared)} windows in {shared_s:.1f} s): "
          f"{shared_rate / exact_rate:.2f}x exact", flush=True)

    short = x[: int(args.precision_seconds * rate)]
    bf16 = towers.with_precision("bf16")
    ref, f32_rate, _ = audio_rate(towers, short, rate, args.hop, "exact")
    low, bf16_rate, _ = audio_rate(bf16, short, rate, args.hop, "exact")
    rel = np.linalg.norm(low - ref, axis=1) / np.linalg.norm(ref, axis=1)
    print(f"exact on {args.precision_seconds:g} s: float32 {f32_rate:.3f} s/s, bf16 {bf16_rate:.3f} s/s "
          f"({bf16_rate / f32_rate:.2f}x); bf16 vs float32 relative L2 median {np.median(rel):.2e}, "
          f"max {rel.max():.2e}", flush=True)

    images = np.random.default_rng(0).integers(0, 256, (args.images, *cfg.image_size, 3), np.uint8)
    for name, t in (("float32", towers), ("bf16", bf16)):
        embed.get_image_embedding(images[:2], t)
        _, secs = timed(lambda: embed.get_image_embedding(images, t))
        print(f"images {name}: {args.images / secs:.2f} img/s", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        for minutes in args.memory_minutes:
            path = os.path.join(tmp, f"{minutes:g}min.wav")
            write_wav(path, minutes, rate)
            out = subprocess.run([sys.executable, "-c", PEAK, path, str(args.memory_hop)],
                                 check=True, capture_output=True, text=True).stdout.split()
            os.unlink(path)
            print(f"peak RSS, {minutes:g} min WAV from its path (exact, hop {args.memory_hop:g} s, "
                  f"{out[0]} windows): {out[1]} MB", flush=True)
    print(f"this process: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB")


if __name__ == "__main__":
    main()
