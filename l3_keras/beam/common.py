"""Pipeline options and file listing for the Beam jobs, on any filesystem TensorFlow reads.

Paths are local paths or URLs (gs://bucket/...): TensorFlow's filesystems (`tf.io.gfile`) list
and read them, and `files.atomic_write` writes them, so what a Beam job writes is exactly what
training reads. Decoders (PyAV, soundfile, Pillow) need local files: `local_copy` stages a
remote one in a temporary folder.
"""
from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import posixpath
import shutil
import tempfile
import time
from typing import Iterator, List, Sequence, Tuple

import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions

from l3_keras import files, media
from l3_keras.errors import L3Error

# Batch pipelines run here on Beam's portable in-process runner, the one DirectRunner falls back
# to: DirectRunner tries Prism first, which downloads a binary at run time.
LOCAL_RUNNER = "apache_beam.runners.portability.fn_api_runner.FnApiRunner"

logger = logging.getLogger(__name__)


def pipeline_options(beam_options: Sequence[str] = ()) -> PipelineOptions:
    """PipelineOptions from "KEY=VALUE" (or bare "KEY" for a switch) strings.

    Unless given, the job runs locally on every core: runner=FnApiRunner,
    direct_num_workers=os.cpu_count(), direct_running_mode=multi_threading (the direct_* options
    are ignored by other runners). Threads, not processes: the DoFns hand the CPU-heavy work to
    their own decoding process, so one TensorFlow is imported rather than one per worker.

    Example:
        pipeline_options(["runner=DataflowRunner", "project=my-project", "region=europe-west4"])

    Raises:
        L3Error: an item without a key.
    """
    given = {}
    for item in beam_options:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-")
        if not key:
            raise L3Error(f"Beam option {item!r} must be KEY=VALUE, e.g. runner=DataflowRunner.")
        given[key] = value if sep else None
    defaults = {
        "runner": LOCAL_RUNNER,
        "direct_num_workers": str(os.cpu_count() or 1),
        "direct_running_mode": "multi_threading",
    }
    merged = {**defaults, **given}
    return PipelineOptions([f"--{k}" if v is None else f"--{k}={v}" for k, v in merged.items()])


class RateLog:
    """Counts a worker's items and logs the count and rate every `every` seconds."""

    def __init__(self, what: str, every: float = 30.0):
        self._what, self._every = what, every
        self._count, self._start = 0, time.time()
        self._logged = self._start

    def tick(self):
        self._count += 1
        now = time.time()
        if now - self._logged >= self._every:
            self._logged = now
            logger.info("%s, worker pid %d: %d done, %.2f/s", self._what, os.getpid(),
                        self._count, self._count / (now - self._start))


def is_glob(path) -> bool:
    return glob.has_magic(os.fspath(path))


def join(base, name: str) -> str:
    base = os.fspath(base)
    return posixpath.join(base, name) if files.is_url(base) else os.path.join(base, name)


def list_files(src, media_type: str) -> Tuple[List[str], str]:
    """(files, base) for a folder (recursive, `media_type`'s extensions), a glob, one file, or a
    list file.

    Works on any TF filesystem. A glob's matches are taken as they are; `base` (what ids are
    relative to) is its folder up to the first wildcard. A list file holds one path per line,
    relative to its own folder ("#" comments and blank lines ignored).

    Raises:
        L3Error: the input does not exist or holds no files.
    """
    src = os.fspath(src)
    gfile = tf.io.gfile
    if is_glob(src):
        paths = gfile.glob(src)
        base = posixpath.dirname(src[: min(src.find(c) for c in "*?[" if c in src)])
    elif gfile.isdir(src):
        paths = [join(folder, name) for folder, _, names in gfile.walk(src) for name in names
                 if media.is_media(name, media_type)]
        base = src
    elif media.is_media(src, media_type):
        paths, base = [src], posixpath.dirname(src)
    elif gfile.exists(src):
        with gfile.GFile(src) as f:
            lines = [line.strip() for line in f]
        base = posixpath.dirname(src)
        paths = [line if files.is_url(line) else join(base, line)
                 for line in lines if line and not line.startswith("#")]
    else:
        raise L3Error(f"Input {src} does not exist; give a folder, a glob or a list file.")
    if not paths:
        raise L3Error(f"No {media_type} files found in {src} (expected "
                      f"{', '.join(media.EXTENSIONS[media_type])}).")
    return sorted(set(paths)), base


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[str]:
    """`path` itself if local, else a temporary local copy (a missing file stays missing)."""
    if not files.is_url(path):
        yield path
        return
    folder = tempfile.mkdtemp(prefix="l3-beam-")
    local = os.path.join(folder, posixpath.basename(path))
    try:
        if tf.io.gfile.exists(path):
            tf.io.gfile.copy(path, local)
        yield local
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_work_list(path: str, items: Sequence, per_element: int = 1) -> List[Tuple[int, int]]:
    """Writes `items` as JSON lines; returns (offset, length) spans of `per_element` lines each.

    The spans are a Beam job's elements (`beam.Create` of a few bytes each, however long the
    lists), and `read_work` reads one span back on a worker. Beam's own text source is not used:
    it reads only the filesystems Beam was installed for (gs:// needs apache-beam[gcp]).
    """
    lines = [(json.dumps(item) + "\n").encode() for item in items]
    with files.atomic_write(path) as tmp, files.open_file(tmp, "wb") as f:
        f.write(b"".join(lines))  # one write: GFile creates no file for a writer that never writes
    spans, offset = [], 0
    for start in range(0, len(lines), per_element):
        length = sum(map(len, lines[start : start + per_element]))
        spans.append((offset, length))
        offset += length
    return spans


def read_work(path: str, span: Tuple[int, int]) -> list:
    """The items of one span of `write_work_list`'s file."""
    with tf.io.gfile.GFile(path, "rb") as f:
        f.seek(span[0])
        return [json.loads(line) for line in f.read(span[1]).decode().splitlines()]
