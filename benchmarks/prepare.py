"""Videos per second of `l3 prepare` locally and on Beam's local runner, same input, one run.

Both prepare the same videos into fresh folders with the same settings and parallelism: the
local `prepare(workers=N)` (a process pool) and `beam.prepare.prepare_beam` on the FnApiRunner
with N threads, each DoFn with its own decoding process. Each is timed --runs times (median);
the Beam figure includes the pipeline's start-up, as a user's run would. CPU time (this process
and its finished children, decoders included) per 10 s of video is what a plan at scale needs on
a shared machine, where wall time per worker is inflated by other jobs' load. The input is
../shared/data/av-clips when present (real 10 s clips of varied formats, as the paper's Flickr
videos), else synthetic 10 s clips. Per-video time for a plan at scale = workers / (videos/s).

    python benchmarks/prepare.py [--input DIR] [--workers 2] [--runs 3] [--max-seconds 10]
"""
import argparse
import os
import resource
import shutil
import statistics
import tempfile
import time

from tests.conftest import real_media_root


def timed(fn):
    """(wall seconds, CPU seconds of this process and its finished children, fn())."""
    def cpu():
        return sum(r.ru_utime + r.ru_stime for r in map(resource.getrusage, (
            resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)))

    start, start_cpu = time.perf_counter(), cpu()
    result = fn()
    return time.perf_counter() - start, cpu() - start_cpu, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", help="folder of videos (default: real av-clips, else synthetic)")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-seconds", type=float, default=10.0)
    parser.add_argument("--videos-per-shard", type=int, default=4,
                        help="Beam writes shards in parallel: keep several per worker (4)")
    parser.add_argument("--preset", default="paper", help="sample rate and frame size (paper)")
    args = parser.parse_args()

    # Imported here, not at the top: decoding processes are spawned and re-import this script,
    # which must not cost them a TensorFlow import each.
    from l3_keras.beam.prepare import prepare_beam  # the optional extra
    from l3_keras.config import DataConfig, get_preset
    from l3_keras.data import synthetic
    from l3_keras.data.prepare import prepare

    root = tempfile.mkdtemp(prefix="l3-bench-prepare-")
    src = args.input or str(real_media_root() / "av-clips")
    if not os.path.isdir(src):
        src = os.path.join(root, "clips")
        synthetic.make_collection(src, 16, synthetic.ClipSpec(seconds=10.0), workers=args.workers)
    config = DataConfig.for_model(get_preset(args.preset), max_seconds=args.max_seconds)
    load = os.getloadavg()[0]
    per_shard = args.videos_per_shard
    options = [f"direct_num_workers={args.workers}"]
    times = {"local prepare": [], "beam (local)": []}
    cpu = {name: [] for name in times}
    # Alternated, so that the load of a shared machine falls on both alike.
    for run in range(args.runs):
        local_dir, beam_dir = (os.path.join(root, f"{name}{run}") for name in ("local", "beam"))
        seconds, cpu_seconds, manifest = timed(lambda: prepare(
            src, local_dir, config, workers=args.workers, videos_per_shard=per_shard,
            progress=False))
        times["local prepare"].append(seconds)
        cpu["local prepare"].append(cpu_seconds)
        seconds, cpu_seconds, beam_manifest = timed(lambda: prepare_beam(
            src, beam_dir, config, per_shard, beam_options=options))
        times["beam (local)"].append(seconds)
        cpu["beam (local)"].append(cpu_seconds)
        assert beam_manifest["totals"] == manifest["totals"]
    videos = manifest["inputs"]["videos"]
    seconds = manifest["totals"]["audio_seconds"]
    print(f"input: {src}: {videos} videos, {seconds:.0f} s of audio kept "
          f"(max {args.max_seconds:g} s each); preset {args.preset}; {args.workers} workers; "
          f"{os.cpu_count()} cores; load average before {load:.1f}, after {os.getloadavg()[0]:.1f}")
    local_s, beam_s = (statistics.median(t) for t in times.values())
    for name, runs in times.items():
        median = statistics.median(runs)
        cpu_10s = statistics.median(cpu[name]) / seconds * 10
        print(f"{name:14s} {videos / median:6.2f} videos/s  "
              f"({median:.1f} s median of {', '.join(f'{t:.1f}' for t in runs)})  "
              f"{median * args.workers / videos:.2f} s per video per worker; "
              f"CPU time {cpu_10s:.2f} s per 10 s of video")
    print(f"beam / local speed: {local_s / beam_s:.2f}")
    shard_bytes = sum(os.path.getsize(os.path.join(root, "local0", s["file"]))
                      for s in manifest["shards"])
    print(f"shards: {shard_bytes / seconds * 10 / 2**20:.2f} MiB per 10 s of video; "
          f"{local_s * args.workers / seconds * 10:.2f} s (local) and "
          f"{beam_s * args.workers / seconds * 10:.2f} s (beam) per 10 s of video per worker")
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
