"""Writing files so that no reader ever sees half of one, and the stamps stored beside results.

Every file the package writes for others to read (shards, manifests, run configs, models, figures,
embeddings, synthetic clips) goes through `atomic_write`: the writer fills a temporary file in the
same folder, which is flushed to disk and then renamed over the final name. A crash or a kill leaves
at most a `NAME.tmp-PID` file (that `prepare` and `make_collection` clean up or ignore), never a
truncated file under the final name. `write_json` is the same for JSON; `stamp` says which code made
a result (git commit and versions).

Paths may also be URLs of another filesystem TensorFlow reads (gs://...; what Beam jobs write):
those go through `tf.io.gfile` (imported then only), where a rename is atomic for readers too (a
GCS object appears once complete). Nothing else here imports TensorFlow: decoding worker
processes use this module too.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import json
import os
import platform
import subprocess
import uuid
from typing import Iterator, Optional

import l3_keras

# Modules whose versions are stamped, where they are installed (av and TF only in some processes).
_VERSIONED = ("tensorflow", "keras", "numpy", "av")


def is_url(path) -> bool:
    """Whether `path` names a file on another filesystem (scheme://...), not a local path."""
    return "://" in os.fspath(path)


def temp_name(path, suffix: str = "") -> str:
    """`PATH.tmp-PID[suffix]`: the temporary name `atomic_write` uses for `path`.

    A suffix keeps the extension for writers that infer the format from it (`.keras`, `.png`).
    """
    return f"{os.fspath(path)}.tmp-{os.getpid()}{suffix}"


@contextlib.contextmanager
def atomic_write(path, suffix: str = "") -> Iterator[str]:
    """Yields a temporary path to write `path` through; on success it is synced and renamed.

    Example:
        with atomic_write("model.keras", suffix=".keras") as tmp:
            model.save(tmp)

    Args:
        path: the final file name (its folder must exist).
        suffix: appended to the temporary name (see `temp_name`).

    Yields:
        the temporary path; the writer creates it. If the block raises, the temporary file is
        removed and `path` is left as it was.
    """
    path = os.fspath(path)
    if is_url(path):
        yield from _atomic_write_gfile(path, suffix)
        return
    tmp = temp_name(path, suffix)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(os.path.dirname(os.path.abspath(path)))
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _atomic_write_gfile(path: str, suffix: str) -> Iterator[str]:
    """`atomic_write` on a TF filesystem; the temp name is unique per call (concurrent retries
    of one Beam task in one process must not share it)."""
    import tensorflow as tf

    tmp = f"{path}.tmp-{uuid.uuid4().hex}{suffix}"
    try:
        yield tmp
        tf.io.gfile.rename(tmp, path, overwrite=True)
    finally:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.remove(tmp)


def open_file(path, mode: str = "r"):
    """`open`, or `tf.io.gfile.GFile` for a URL (see the module docstring)."""
    if is_url(path):
        import tensorflow as tf

        return tf.io.gfile.GFile(os.fspath(path), mode)
    return open(path, mode)


def _fsync(path: str) -> None:
    """Flushes a file (or a folder's entries, after a rename) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot sync a folder; the rename is still atomic
        pass
    finally:
        os.close(fd)


def write_json(path, obj, indent: Optional[int] = 2) -> str:
    """Writes `obj` as JSON to `path` atomically (numpy scalars and arrays become numbers, lists).

    Returns:
        `path` as a str.
    """
    path = os.fspath(path)
    with atomic_write(path) as tmp:
        with open_file(tmp, "w") as f:
            f.write(json.dumps(obj, indent=indent, default=_to_builtin))
    return path


def read_json(path):
    with open_file(path) as f:
        return json.load(f)


def _to_builtin(value):
    if hasattr(value, "tolist"):  # numpy arrays and scalars, without importing numpy here
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


@functools.lru_cache(maxsize=1)
def git_commit() -> Optional[str]:
    """The commit of the l3_keras source tree, or None when the package is not in a git checkout."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=os.path.dirname(os.path.abspath(__file__))
                              ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def versions() -> dict:
    """{"l3_keras", "python", and each of tensorflow, keras, numpy, av that is installed}."""
    out = {"l3_keras": l3_keras.__version__, "python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = importlib.import_module(name).__version__
        except ImportError:
            continue
    return out


def stamp() -> dict:
    """{"git_commit", "versions"}: which code wrote a run, an export or a shard set."""
    return {"git_commit": git_commit(), "versions": versions()}
