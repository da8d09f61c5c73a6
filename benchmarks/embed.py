"""Embedding throughput of the paper model on this machine, float32 and mixed bfloat16.

Prints, per precision:
  audio: seconds of audio embedded per second of wall time (1 s windows every --hop s, centred,
         a --seconds long clip at 48 kHz, `embed.get_audio_embedding`);
  image: 224x224 images embedded per second (`embed.get_image_embedding`, uint8 input).
Figures are the median over --runs timed runs after one warm-up run. Random weights: the speed
does not depend on them.

With --openl3 REPR it instead compares, in one run, seconds of audio per second of l3_keras'
`openl3-REPR` (OpenL3-layout weights imported by `l3 import-openl3`'s loader) and of OpenL3's own
get_audio_embedding (kapre front end, run in the oracle venv as a subprocess), on the same clip
with the same hop and batch size, alternating run by run.

    python benchmarks/embed.py [--seconds 10] [--images 32] [--runs 3] [--batch-size 32]
    python benchmarks/embed.py --openl3 mel256 --seconds 5 --hop 0.5 [--oracle-python PY]
"""
import argparse
import os
import pathlib
import statistics
import subprocess
import tempfile
import textwrap
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


ORACLE_SCRIPT = textwrap.dedent(
    """
    import sys, time, warnings
    import numpy as np
    warnings.simplefilter("ignore")
    from openl3 import core, models
    weights, audio_path, repr_, hop, batch = sys.argv[1:]
    model = models.load_audio_embedding_model_from_path(weights, repr_, 512)
    audio = np.load(audio_path)
    for line in sys.stdin:  # one timed run per line
        start = time.perf_counter()
        core.get_audio_embedding(audio, 48000, model=model, hop_size=float(hop),
                                 batch_size=int(batch), verbose=0)
        print(time.perf_counter() - start, flush=True)
    """
)


def compare_openl3(args):
    """l3_keras vs OpenL3's own code: seconds of audio per second, same model, hop and clip.

    The two alternate run by run (OpenL3 in a long-lived subprocess) so that both see the same
    machine load; the printed speed ratio is the median of the per-pair ratios.
    """
    from l3_keras import openl3_import, openl3_weights

    cfg = get_preset(f"openl3-{args.openl3}")
    audio = (np.random.default_rng(0).random(args.seconds * 48000, np.float32) - 0.5) * 0.2
    with tempfile.TemporaryDirectory() as tmp:
        weights = pathlib.Path(tmp) / f"openl3_audio_{args.openl3}_music.h5"
        plan = openl3_weights.openl3_plan(cfg, "audio")
        openl3_weights.write_keras2_weights(weights, plan, openl3_weights.random_weights(plan, 0), "audio")
        np.save(pathlib.Path(tmp) / "audio.npy", audio)
        l3, cfg = openl3_import.build_openl3(weights)
        towers = embed.EmbeddingModels.from_l3(l3, cfg)
        oracle = subprocess.Popen(
            [args.oracle_python, "-c", ORACLE_SCRIPT, str(weights), str(pathlib.Path(tmp) / "audio.npy"),
             args.openl3, str(args.hop), str(args.batch_size)],
            env=dict(os.environ, PYTHONPATH=args.openl3_source, TF_CPP_MIN_LOG_LEVEL="3"),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )

        def theirs():
            oracle.stdin.write("run\n")
            oracle.stdin.flush()
            return float(oracle.stdout.readline())

        def ours():
            start = time.perf_counter()
            embed.get_audio_embedding(audio, 48000, towers, args.hop, batch_size=args.batch_size)
            return time.perf_counter() - start

        try:
            ours(), theirs()  # warm-up
            pairs = [(ours(), theirs()) for _ in range(args.runs)]
        finally:
            oracle.stdin.close()
            oracle.wait()
    mine, other = (statistics.median(t) for t in zip(*pairs))
    windows = len(embed.frame_audio(audio, cfg, args.hop, True)[1])
    print(f"openl3-{args.openl3}, {args.seconds} s clip, hop {args.hop} s ({windows} windows), "
          f"batch {args.batch_size}, {args.runs} alternating runs (medians):")
    print(f"  l3_keras        {args.seconds / mine:6.2f} s/s ({mine:.2f} s)")
    print(f"  OpenL3 (kapre)  {args.seconds / other:6.2f} s/s ({other:.2f} s)")
    print(f"  l3_keras / OpenL3 speed: {statistics.median(b / a for a, b in pairs):.2f}x")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=int, default=10, help="audio clip length (10)")
    p.add_argument("--hop", type=float, default=0.1, help="seconds between windows (0.1)")
    p.add_argument("--images", type=int, default=32, help="224x224 images per run (32)")
    p.add_argument("--runs", type=int, default=3, help="timed runs; the median is printed (3)")
    p.add_argument("--batch-size", type=int, default=32, help="windows / images per pass (32)")
    p.add_argument("--policies", nargs="+", default=["float32", "mixed_bfloat16"])
    p.add_argument("--openl3", choices=["linear", "mel128", "mel256"],
                   help="compare this OpenL3 model with OpenL3's own code instead")
    p.add_argument("--oracle-python", default="/tmp/openl3-oracle/bin/python",
                   help="python of the venv where OpenL3's code runs (see ../shared/oracles)")
    p.add_argument("--openl3-source", default=str(pathlib.Path(__file__).resolve().parents[2]
                                                   / "shared" / "oracles" / "openl3"))
    args = p.parse_args()
    warnings.filterwarnings("ignore", message=".*random weights.*")
    if args.openl3:
        return compare_openl3(args)
    for policy in args.policies:
        measure(policy, args)


if __name__ == "__main__":
    main()
