"""`l3 prepare --runner beam`: the local `prepare`'s shards, sidecars and manifest, from a Beam job.

Everything but the scheduling is `l3_keras.data.prepare`: the same sorted job list and blocks
(`plan_shards`, so the same shard names and sizes), the same decoder (`video.decode_or_reason` in
a `CrashTolerantPool`, one spawned process per DoFn instance, so a segfaulting FFmpeg costs one
video, "decoder crashed", never the worker), the same records and manifest entries
(`encode_outcome`, `make_sidecar`, `build_manifest`).

The job:
    driver   lists the videos, plans the blocks, keeps the shards a previous run finished
             (`sidecar_is_current`), deletes stray temp files, writes OUT/beam-todo.jsonl
             (one line per shard still to write: [name, [[path, id, label], ...]]); the job's
             elements are the byte spans of its lines
    write    per shard, in parallel (Reshuffle spreads them over workers): decode its videos in
             order, write the records to a temp name then rename, then the sidecar (which marks
             the shard finished)
    finish   once every shard is written: manifest.json from all sidecars

One element is one shard, not one video: decoded videos never go through a shuffle (terabytes
for millions of videos), and a shard is durable as soon as it is written, so a killed job loses
at most the shards in flight. Parallelism is the number of shards still to write: a collection
of fewer shards than worker threads is quicker with the local `prepare --workers`.

Reruns are idempotent: finished shards are kept, a retried or killed write leaves only a
`*.tmp-*` file that no reader globs and the next run deletes, and the manifest is rebuilt from
the sidecars, so it ends the same (apart from "created"). Only one job may write an OUT at a time.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
import threading
import time
from typing import Callable, Optional, Sequence

import apache_beam as beam
import tensorflow as tf
from apache_beam.metrics import Metrics

from l3_keras import files, media
from l3_keras.beam import common
from l3_keras.config import DataConfig
from l3_keras.data import prepare as local
from l3_keras.data import records
from l3_keras.data import video as video_lib

TODO_FILE = "beam-todo.jsonl"
LOG_EVERY_SECONDS = 30.0

logger = logging.getLogger(__name__)


def prepare_beam(inputs, out_dir, data_config: DataConfig, videos_per_shard: Optional[int] = None,
                 label_from: Optional[str] = None, beam_options: Sequence[str] = (),
                 decode: Callable = video_lib.decode_or_reason) -> dict:
    """Decodes videos into TFRecord shards and a manifest with a Beam job; resumes a killed one.

    Args:
        inputs: folder (recursive), glob, one video, or list file; local or on any TF filesystem
            (gs://...). See `common.list_files`.
        out_dir: output folder, local or gs://, shared by the driver and all workers.
        data_config: decoding settings (as `data.prepare.prepare`).
        videos_per_shard: videos per TFRecord file; default from `data_config.shard_megabytes`.
        label_from: None, or "folder" to store each video's parent folder name as its label.
        beam_options: "KEY=VALUE" pipeline options (`common.pipeline_options`); default: the
            local runner on every core.
        decode: `decode(path, data_config)` -> DecodedVideo fields or a skip reason, a
            module-level function (tests swap in one that crashes).

    Returns:
        the manifest dict (also written to OUT/manifest.json).

    Raises:
        L3Error: bad arguments, no videos, or out_dir holds shards made with other settings.
    """
    out_dir = os.fspath(out_dir)
    plan = local.plan_shards(*_jobs(inputs, label_from), data_config,
                             videos_per_shard=videos_per_shard, label_from=label_from)
    tf.io.gfile.makedirs(out_dir)
    for pattern in ("part-000-*.tmp*", TODO_FILE + ".tmp*"):  # left by a killed run
        for tmp in tf.io.gfile.glob(common.join(out_dir, pattern)):
            tf.io.gfile.remove(tmp)
    todo = [k for k, name in enumerate(plan.names) if not _finished(out_dir, plan, k)]
    logger.info("prepare (beam): %d videos in %d shards, %d shards to write",
                plan.inputs["videos"], len(plan.names), len(todo))
    todo_file = common.join(out_dir, TODO_FILE)
    work = [[plan.names[k], [dataclasses.astuple(job) for job in plan.blocks[k]]] for k in todo]
    spans = common.write_work_list(todo_file, work)

    summary = dataclasses.replace(plan, blocks=[])  # the manifest needs names, settings, inputs
    write = _ShardFn(todo_file, out_dir, data_config, plan.settings, decode)
    with _Progress(out_dir, len(plan.names), len(plan.names) - len(todo)), \
            beam.Pipeline(options=common.pipeline_options(beam_options)) as pipeline:
        _ = (
            pipeline
            | "Shards to write" >> beam.Create(spans)
            | "Spread" >> beam.Reshuffle()
            | "Write shards" >> beam.ParDo(write)
            | "Count" >> beam.combiners.Count.Globally()
            | "Manifest" >> beam.Map(_write_manifest, out_dir=out_dir, plan=summary)
        )
    return files.read_json(common.join(out_dir, local.manifest_name()))


def _jobs(inputs, label_from):
    """(sorted jobs, source): `data.prepare.list_jobs` for local paths, else any TF filesystem."""
    src = os.fspath(inputs)
    if not files.is_url(src) and not common.is_glob(src):
        return local.list_jobs(src, label_from), os.path.abspath(src)
    paths, base = common.list_files(src, media.VIDEO)
    return local.jobs_from_paths(paths, base, label_from), src


def _finished(out_dir, plan, k) -> bool:
    path = common.join(out_dir, plan.names[k])
    if not (tf.io.gfile.exists(path) and tf.io.gfile.exists(path + ".json")):
        return False
    return local.sidecar_is_current(files.read_json(path + ".json"), path, plan.blocks[k],
                                    plan.settings)


class _ShardFn(beam.DoFn):
    """A span of the todo file: [name, [[path, id, label], ...]] -> name, once written."""

    def __init__(self, todo_file, out_dir, data_config: DataConfig, settings: dict,
                 decode: Callable):
        self._todo_file, self._out_dir = todo_file, out_dir
        self._config, self._settings = data_config, settings
        self._decode_fn = decode

    def setup(self):
        decode = functools.partial(self._decode_fn, data_config=self._config)
        self._pool = local.CrashTolerantPool(1, decode)
        self._kept = Metrics.counter("prepare", "kept")
        self._skipped = Metrics.counter("prepare", "skipped")
        self._progress = common.RateLog("prepare (beam) videos", LOG_EVERY_SECONDS)

    def process(self, span):
        [(name, jobs)] = common.read_work(self._todo_file, span)
        jobs = [local.Job(*job) for job in jobs]
        encoded = [local.encode_outcome(job, self._decode(job), name) for job in jobs]
        path = common.join(self._out_dir, name)
        records.write_shard(path, [record for record, _ in encoded if record is not None])
        sidecar = local.make_sidecar(jobs, [entry for _, entry in encoded], self._settings)
        files.write_json(path + ".json", sidecar)
        yield name

    def _decode(self, job):
        with common.local_copy(job.path) as path:
            _, result = self._pool.result(*self._pool.submit(dataclasses.replace(job, path=path)))
        if isinstance(result, str):
            logger.warning("skipped %s: %s", job.path, result)
            self._skipped.inc()
        else:
            self._kept.inc()
        self._progress.tick()
        return result

    def teardown(self):
        self._pool.close()


def _write_manifest(_, out_dir, plan) -> None:
    sidecars = [files.read_json(common.join(out_dir, name + ".json")) for name in plan.names]
    manifest = local.build_manifest(plan, sidecars)
    files.write_json(common.join(out_dir, local.manifest_name()), manifest)
    todo_file = common.join(out_dir, TODO_FILE)
    if tf.io.gfile.exists(todo_file):  # a retried step finds it gone
        tf.io.gfile.remove(todo_file)


class _Progress:
    """Logs shards written, rate and ETA every LOG_EVERY_SECONDS while the job runs, from the
    finished shards' sidecars under `out_dir` (so for any runner, the job's whole progress)."""

    def __init__(self, out_dir, total: int, done: int):
        self._pattern = common.join(out_dir, "part-000-*.tfrecord.json")
        self._total, self._done = total, done
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._start = time.time()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        while not self._stop.wait(LOG_EVERY_SECONDS):
            done = len(tf.io.gfile.glob(self._pattern))
            rate = (done - self._done) / (time.time() - self._start)
            eta = f"{(self._total - done) / rate / 60:.0f} min" if rate > 0 else "?"
            logger.info("prepare (beam): %d/%d shards, %.2f shards/min, ETA %s", done,
                        self._total, rate * 60, eta)
