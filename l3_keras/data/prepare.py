"""`l3 prepare`: videos -> TFRecord shards plus a manifest; resumable, splittable across machines.

Layout of `out_dir` for split part i (of `num_shards` machines):
    part-{i:03d}-{k:05d}.tfrecord        records of the k-th block of `videos_per_shard` videos
    part-{i:03d}-{k:05d}.tfrecord.json   sidecar: that block's kept/skipped entries, written after
                                         the shard's atomic rename, so it marks the shard finished
    manifest.json                        (manifest-part-{i:03d}.json when num_shards > 1, so that
                                         parts can share one folder; `merge_manifests` joins them)

Every step is deterministic: the sorted input list, this machine's part `videos[i::num_shards]` and
its blocks, so a rerun after a kill skips the finished shards, redoes the rest and ends with the
same manifest (apart from "created").

Decoding runs in `workers` spawned processes that only import `video` (never TensorFlow: 700 MB and
8 s each); the parent builds the tf.train.Example (about 1 ms against ~0.3-0.8 s to decode a 10 s
clip) and writes the shards. Spawned processes re-import the calling script, so a script that calls
`prepare(workers > 1)` should import TensorFlow (and l3_keras modules that do) under
`if __name__ == "__main__":`; the `l3 prepare` command does. A worker that crashes (an FFmpeg
segfault) costs its video only: it is skipped as "decoder crashed".
"""
from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import datetime
import functools
import glob
import logging
import multiprocessing
import os
import posixpath
import sys
from typing import Iterator, List, Optional, Sequence

import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from l3_keras import files
from l3_keras.config import DataConfig
from l3_keras.data import records
from l3_keras.data import video as video_lib
from l3_keras.errors import L3Error, check_choice

LABEL_SOURCES = ("folder",)
MANIFEST_FORMAT = "l3_keras.prepare/1"
# Rough record size per second of video: int16 audio plus ~0.3 bytes per pixel of JPEG (q90, 16:9).
_JPEG_BYTES_PER_PIXEL = 0.3
# A collection is cut into at least this many shards by default (when it has as many videos), so
# that a held-out tenth of whole shards exists and several input pipelines have files to read.
MIN_SHARDS = 20

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Job:
    """One video to prepare: its absolute path (or URL), stored id and label ("" if unlabelled)."""

    path: str
    video_id: str
    label: str


@dataclasses.dataclass(frozen=True)
class ShardPlan:
    """How one part of a collection is cut into shards: the same for local and Beam runs.

    Attributes:
        names: shard file names, `part-{i:03d}-{k:05d}.tfrecord`.
        blocks: the jobs of each shard, in record order.
        settings: {"data_config", "label_from"}, stored in every sidecar and the manifest.
        inputs: the manifest's "inputs" entry (source, videos, split, videos_per_shard).
    """

    names: List[str]
    blocks: List[List[Job]]
    settings: dict
    inputs: dict


def prepare(
    inputs,
    out_dir,
    data_config: DataConfig,
    workers: int = 1,
    num_shards: int = 1,
    shard_index: int = 0,
    videos_per_shard: Optional[int] = None,
    label_from: Optional[str] = None,
    progress: bool = True,
) -> dict:
    """Decodes videos into TFRecord shards and writes the manifest; resumes an interrupted run.

    Args:
        inputs: folder (searched recursively), video file, or list file; see `iter_video_paths`.
        out_dir: output folder (created).
        data_config: decoding settings; stored in the manifest and checked on resume.
        workers: decoding processes.
        num_shards: machines the input list is split across; this call prepares
            `sorted_videos[shard_index::num_shards]`.
        shard_index: this machine's part, in [0, num_shards).
        videos_per_shard: videos per TFRecord file; default `default_videos_per_shard`.
        label_from: None, or "folder" to store each video's parent folder name as its label.
        progress: tqdm bar on stderr.

    Returns:
        the manifest dict (also written to out_dir, see `manifest_name`).

    Raises:
        L3Error: bad arguments, no videos, or out_dir holds shards made with other settings.
    """
    if workers < 1:
        raise L3Error("workers must be at least 1.")
    plan = plan_shards(list_jobs(inputs, label_from), os.path.abspath(os.fspath(inputs)),
                       data_config, num_shards, shard_index, videos_per_shard, label_from)
    names, blocks, settings = plan.names, plan.blocks, plan.settings
    os.makedirs(out_dir, exist_ok=True)
    _remove_temp_files(out_dir, shard_index)
    todo = [k for k in range(len(blocks)) if not _finished(out_dir, names[k], blocks[k], settings)]
    total = sum(len(block) for block in blocks)
    done_videos = total - sum(len(blocks[k]) for k in todo)
    bar = tqdm.tqdm(
        total=total, initial=done_videos, unit="video", file=sys.stderr, disable=not progress,
        desc=f"prepare part {shard_index}/{num_shards}", dynamic_ncols=True,
    )
    outcomes = decode_all([job for k in todo for job in blocks[k]], data_config, workers)
    with bar, logging_redirect_tqdm(), contextlib.closing(outcomes):
        for k in todo:
            block = [_log_and_count(next(outcomes), bar) for _ in blocks[k]]
            _write_block(out_dir, names[k], block, settings)

    sidecars = [files.read_json(os.path.join(out_dir, name + ".json")) for name in names]
    manifest = build_manifest(plan, sidecars)
    files.write_json(os.path.join(out_dir, manifest_name(num_shards, shard_index)), manifest)
    return manifest


def plan_shards(jobs: List[Job], source: str, data_config: DataConfig, num_shards: int = 1,
                shard_index: int = 0, videos_per_shard: Optional[int] = None,
                label_from: Optional[str] = None) -> ShardPlan:
    """Cuts this part's jobs into shards: `jobs[shard_index::num_shards]` in blocks.

    Args:
        jobs: every video of the collection, sorted (`list_jobs`).
        source: the input as given (recorded in the manifest).
        data_config, num_shards, shard_index, videos_per_shard, label_from: see `prepare`.

    Raises:
        L3Error: bad split arguments or label source.
    """
    _check_split(1, num_shards, shard_index, videos_per_shard)
    if label_from is not None:
        check_choice("label_from", label_from, LABEL_SOURCES)
    per_shard = videos_per_shard or default_videos_per_shard(data_config, len(jobs))
    part = jobs[shard_index::num_shards]
    blocks = [part[k : k + per_shard] for k in range(0, len(part), per_shard)]
    return ShardPlan(
        names=[f"part-{shard_index:03d}-{k:05d}.tfrecord" for k in range(len(blocks))],
        blocks=blocks,
        settings={"data_config": data_config.to_dict(), "label_from": label_from},
        inputs={
            "source": source,
            "videos": len(jobs),
            "num_shards": num_shards,
            "shard_indices": [shard_index],
            "videos_per_shard": per_shard,
        },
    )


def build_manifest(plan: ShardPlan, sidecars: Sequence[dict]) -> dict:
    """The manifest of a part from the sidecars of all its shards (in `plan.names` order)."""
    return _manifest(
        plan.settings,
        inputs=plan.inputs,
        shards=[{"file": name, **_counts(s)} for name, s in zip(plan.names, sidecars)],
        kept=[e for s in sidecars for e in s["kept"]],
        skipped=[e for s in sidecars for e in s["skipped"]],
    )


def manifest_name(num_shards: int = 1, shard_index: int = 0) -> str:
    """"manifest.json" for a whole collection, "manifest-part-{i:03d}.json" for one split part."""
    return "manifest.json" if num_shards == 1 else f"manifest-part-{shard_index:03d}.json"


def default_videos_per_shard(data_config: DataConfig, num_videos: Optional[int] = None) -> int:
    """Videos per shard: shards of about `shard_megabytes` (10 s a video if no max_seconds), but
    small enough that `num_videos` make at least MIN_SHARDS shards (at least 1 video each)."""
    seconds = data_config.max_seconds or 10.0
    pixels = data_config.frame_short_side**2 * 16 / 9
    per_second = 2 * data_config.sample_rate + data_config.fps * pixels * _JPEG_BYTES_PER_PIXEL
    by_size = int(data_config.shard_megabytes * 2**20 / (seconds * per_second))
    if num_videos is not None:
        by_size = min(by_size, num_videos // MIN_SHARDS)
    return max(1, by_size)


def merge_manifests(paths_or_dirs: Sequence, out) -> dict:
    """Joins the manifests of split parts into one (e.g. `out_dir/manifest.json`).

    Args:
        paths_or_dirs: manifest files, or folders holding manifest-part-*.json (else manifest.json).
        out: merged manifest path; shard file names are rewritten relative to its folder.

    Returns:
        the merged manifest dict (also written to `out`).

    Raises:
        L3Error: no manifests, different settings or splits, or parts that overlap.
    """
    paths = [p for item in paths_or_dirs for p in _manifest_paths(os.fspath(item))]
    parts = [(p, files.read_json(p)) for p in paths]
    first_path, first = parts[0]
    out_dir = os.path.dirname(os.path.abspath(os.fspath(out)))
    shards, kept, skipped, indices = [], [], [], []
    owner = {}  # video_id -> manifest path
    for path, part in parts:
        for key in ("data_config", "label_from"):
            if part[key] != first[key]:
                raise L3Error(f"{path} has another {key} than {first_path}; prepare parts alike.")
        if part["inputs"]["num_shards"] != first["inputs"]["num_shards"]:
            raise L3Error(f"{path} was split into another number of parts than {first_path}.")
        for entry in part["kept"] + part["skipped"]:
            video_id = entry["video_id"]
            if video_id in owner:
                raise L3Error(f"{video_id} is in both {owner[video_id]} and {path}.")
            owner[video_id] = path
        # Shard names are relative to their manifest; make them relative to the merged one.
        rel = os.path.relpath(os.path.dirname(os.path.abspath(path)), out_dir)
        shards += [_rebase(s, "file", rel) for s in part["shards"]]
        kept += [_rebase(e, "shard", rel) for e in part["kept"]]
        skipped += part["skipped"]
        indices += part["inputs"]["shard_indices"]
    if len(set(indices)) != len(indices):
        raise L3Error(f"Split parts {sorted(indices)} repeat an index; merge each part once.")
    missing = sorted(set(range(first["inputs"]["num_shards"])) - set(indices))
    if missing:
        logger.warning("merge-manifests: parts %s are missing; the merged manifest is partial.",
                       missing)
    inputs = {**first["inputs"], "shard_indices": sorted(indices), "missing_parts": missing}
    merged = _manifest(first, inputs=inputs, shards=shards, kept=kept, skipped=skipped)
    files.write_json(os.fspath(out), merged)
    return merged


def _rebase(entry: dict, key: str, rel: str) -> dict:
    return {**entry, key: os.path.normpath(os.path.join(rel, entry[key]))}


def _check_split(workers, num_shards, shard_index, videos_per_shard):
    if workers < 1 or num_shards < 1 or (videos_per_shard is not None and videos_per_shard < 1):
        raise L3Error("workers, num_shards and videos_per_shard must be at least 1.")
    if not 0 <= shard_index < num_shards:
        raise L3Error(f"shard_index {shard_index} must be in [0, num_shards={num_shards}).")


def list_jobs(inputs, label_from=None) -> List[Job]:
    """One job a video, sorted; ids are relative to the input folder (or the list file's folder)."""
    src = os.fspath(inputs)
    base = src if os.path.isdir(src) else os.path.dirname(src)
    return jobs_from_paths(video_lib.iter_video_paths(src), base, label_from)


def jobs_from_paths(paths: Sequence[str], base: str, label_from=None) -> List[Job]:
    """Jobs for local paths or URLs (gs://...) under `base`, sorted: ids are relative to it.

    A local path outside `base` keeps its absolute path as id; labels are parent folder names.
    """
    jobs = []
    for path in sorted(set(paths)):
        url = "://" in path
        full = path if url else os.path.abspath(path)
        rel = (posixpath if url else os.path).relpath(path, base)
        video_id = full if rel.startswith("..") else rel.replace(os.sep, "/")
        folder = posixpath.dirname(full.replace(os.sep, "/"))
        label = posixpath.basename(folder) if label_from else ""
        jobs.append(Job(full, video_id, label))
    return jobs


def decode_all(jobs: List[Job], data_config, workers: int, decode=None) -> Iterator:
    """(job, DecodedVideo fields or skip reason) in job order, decoded by `workers` processes.

    At most 4 * workers videos are in flight, which bounds memory whatever the collection size.
    `decode(path, data_config)` defaults to `video.decode_or_reason` (tests swap in a crasher).
    """
    decode = decode or video_lib.decode_or_reason
    if workers == 1:
        for job in jobs:
            yield job, decode(job.path, data_config)
        return
    pool = CrashTolerantPool(workers, functools.partial(decode, data_config=data_config))
    with pool:
        pending = collections.deque()
        for job in jobs:
            if len(pending) >= 4 * workers:
                yield pool.result(*pending.popleft())
            pending.append(pool.submit(job))
        while pending:
            yield pool.result(*pending.popleft())


class CrashTolerantPool:
    """Spawned worker processes where a crashing video (an FFmpeg segfault) costs that video only.

    spawn, not fork: forking a parent with TensorFlow threads running can deadlock. Workers get a
    module-level function of `video` and plain arguments, so they never import TensorFlow.
    """

    def __init__(self, workers: int, decode):
        self._workers = workers
        self._decode = decode
        self._context = multiprocessing.get_context("spawn")
        self._pool = self._start(workers)
        self._generation = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._pool.shutdown(cancel_futures=True)

    def _start(self, workers):
        pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=self._context)
        try:
            pool.submit(int).result()
        except concurrent.futures.process.BrokenProcessPool as e:
            raise L3Error(
                "Decoding worker processes cannot start (a `python -` script from stdin cannot "
                "spawn them); run from a file or the `l3` command, or use workers=1."
            ) from e
        return pool

    def submit(self, job: Job):
        return job, self._generation, self._pool.submit(self._decode, job.path)

    def result(self, job: Job, generation: int, future):
        try:
            return job, future.result()
        except concurrent.futures.process.BrokenProcessPool:
            # A crash fails every in-flight video of the pool: retry each alone to find the culprit.
            if generation == self._generation:
                self._pool.shutdown(cancel_futures=True)
                self._pool, self._generation = self._start(self._workers), generation + 1
            with concurrent.futures.ProcessPoolExecutor(1, mp_context=self._context) as alone:
                try:
                    return job, alone.submit(self._decode, job.path).result()
                except concurrent.futures.process.BrokenProcessPool:
                    return job, "decoder crashed"


def _log_and_count(outcome, bar):
    job, result = outcome
    if isinstance(result, str):
        logger.warning("skipped %s: %s", job.path, result)
    bar.update(1)
    return outcome


def _write_block(out_dir, name, block, settings):
    """Writes one shard atomically, then its sidecar (whose presence marks the shard finished)."""
    encoded = [encode_outcome(job, result, name) for job, result in block]
    records.write_shard(os.path.join(out_dir, name), [ex for ex, _ in encoded if ex is not None])
    sidecar = make_sidecar([job for job, _ in block], [entry for _, entry in encoded], settings)
    files.write_json(os.path.join(out_dir, name + ".json"), sidecar)


def encode_outcome(job: Job, result, shard: str):
    """(serialized tf.train.Example or None, manifest entry) for one decoded or skipped video.

    Args:
        job: the video.
        result: `video.decode_or_reason`'s output: DecodedVideo fields, or the skip reason (str).
        shard: the name of the shard the record goes to.

    Returns:
        (None, {"video_id", "path", "reason"}) for a skipped video, else (record bytes,
        {"video_id", "path", "label", "shard", "duration", "frames"}).
    """
    if isinstance(result, str):
        return None, {"video_id": job.video_id, "path": job.path, "reason": result}
    decoded = video_lib.DecodedVideo(video_id=job.video_id, label=job.label, **result)
    entry = {
        "video_id": job.video_id,
        "path": job.path,
        "label": job.label,
        "shard": shard,
        "duration": round(decoded.duration, 6),
        "frames": len(decoded.frames),
    }
    return records.encode_example(decoded), entry


def make_sidecar(jobs: Sequence[Job], entries: Sequence[dict], settings: dict) -> dict:
    """A shard's sidecar: settings, its videos (with source stamps) and their entries, in order."""
    return {
        **settings,
        "videos": [job.video_id for job in jobs],
        "sources": [_source_stamp(job) for job in jobs],
        "kept": [e for e in entries if "reason" not in e],
        "skipped": [e for e in entries if "reason" in e],
    }


def _source_stamp(job: Job) -> list:
    """[path, size, mtime_ns] of a job's video (None for a file that cannot be stat'ed)."""
    try:
        st = os.stat(job.path)
    except OSError:
        return [job.path, None, None]
    return [job.path, st.st_size, st.st_mtime_ns]


def _finished(out_dir, name, block, settings) -> bool:
    """True if a previous run wrote this shard from the same, unchanged video files."""
    path = os.path.join(out_dir, name)
    if not (os.path.exists(path) and os.path.exists(path + ".json")):
        return False
    return sidecar_is_current(files.read_json(path + ".json"), path, block, settings)


def sidecar_is_current(sidecar: dict, path: str, block: Sequence[Job], settings: dict) -> bool:
    """True if the shard at `path` with this sidecar holds exactly `block`, unchanged since.

    A shard whose videos were replaced or edited since (other path, size or mtime) is prepared
    again. Raises L3Error if the shard was prepared with other settings.
    """
    sidecar = {**sidecar, "data_config": DataConfig.from_dict(sidecar["data_config"]).to_dict()}
    for key, value in settings.items():
        if sidecar.get(key) != value:
            raise L3Error(
                f"{path} was prepared with another {key} ({sidecar.get(key)}); "
                "use a new --out folder or delete the old shards."
            )
    if sidecar["videos"] != [job.video_id for job in block]:
        return False
    if sidecar.get("sources") != [_source_stamp(job) for job in block]:
        logger.info("prepare: %s: its videos changed since it was written; preparing it again.",
                    path)
        return False
    return True


def _remove_temp_files(out_dir, shard_index):
    """Deletes temp files a killed run of this part left behind (other parts may be running)."""
    for tmp in glob.glob(os.path.join(glob.escape(out_dir), f"part-{shard_index:03d}-*.tmp*")):
        os.remove(tmp)


def _counts(sidecar) -> dict:
    return {"kept": len(sidecar["kept"]), "skipped": len(sidecar["skipped"])}


def _manifest(settings, inputs, shards, kept, skipped) -> dict:
    kept = sorted(kept, key=lambda e: e["video_id"])
    skipped = sorted(skipped, key=lambda e: e["video_id"])
    return {
        "format": MANIFEST_FORMAT,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **files.stamp(),
        "data_config": settings["data_config"],
        "label_from": settings["label_from"],
        "inputs": inputs,
        "totals": {
            "kept": len(kept),
            "skipped": len(skipped),
            "audio_seconds": round(sum(e["duration"] for e in kept), 3),
            "frames": sum(e["frames"] for e in kept),
        },
        "shards": shards,
        "kept": kept,
        "skipped": skipped,
    }


def _manifest_paths(item: str) -> List[str]:
    if os.path.isfile(item):
        return [item]
    parts = sorted(glob.glob(os.path.join(glob.escape(item), "manifest-part-*.json")))
    whole = os.path.join(item, "manifest.json")
    if parts:
        return parts
    if os.path.isfile(whole):
        return [whole]
    raise L3Error(f"No manifest-part-*.json or manifest.json in {item}; run `l3 prepare` first.")
