"""`l3 embed --runner beam`: the local `l3 embed` outputs, computed with Beam's RunInference.

The same files are listed (folders searched recursively by extension, single files, and here
also globs and list files on any TF filesystem), each gets the same `.npz` under OUT (layout in
`embed_files`), and the same inputs go into the same exported models:
    inputs   per file: read (`media.read_audio` / `read_image`) or decode (a video, in a
             `CrashTolerantPool` process with `embed_stream.decode_video`, as the local
             `process_video_file` decodes), then `embed.frame_audio`,
             `prepare_images` or `video_inputs`; a failure is a skipped file with its reason
    models   RunInference with TFModelHandlerNumpy over the export's audio_embedding.keras and
             image_embedding.keras; one element is one file's windows (or frames), a batch of
             files runs through `embed.run_batched` in chunks of --batch-size rows
    write    per file (CoGroupByKey of its embeddings and timestamps): OUT/REL.npz, atomically
    finish   OUT/embed-manifest.json: counts and every skipped file with its reason
"""
from __future__ import annotations

import datetime
import functools
import io
import os
import posixpath
from typing import Sequence

import apache_beam as beam
import numpy as np
import tensorflow as tf
from apache_beam.ml.inference.base import KeyedModelHandler, PredictionResult, RunInference
from apache_beam.ml.inference.tensorflow_inference import ModelType, TFModelHandlerNumpy

from l3_keras import embed, embed_stream, export, files, media
from l3_keras.beam import common
from l3_keras.data import prepare as prepare_lib
from l3_keras.data import video as video_lib
from l3_keras.errors import L3Error, check_choice

MANIFEST = "embed-manifest.json"
MANIFEST_FORMAT = "l3_keras.embed/1"
TODO_FILE = "beam-embed-todo.jsonl"
FILES_PER_BATCH = 8  # files per RunInference batch (a 10 s clip is 101 windows at hop 0.1)
FILES_PER_ELEMENT = 64  # files per job element: 2 million files are 31,250 small elements
TOWERS = {"audio": ("audio",), "image": ("image",), "video": ("audio", "image")}


def embed_beam(kind, inputs: Sequence, out, model, hop_size=0.1, batch_size=32,
               beam_options: Sequence[str] = ()) -> dict:
    """Embeds every input file into `out` with a Beam job (see the module docstring).

    Args:
        kind: "audio", "image" or "video".
        inputs: files, folders, globs or list files, local or on any TF filesystem.
        out: output folder (local or gs://).
        model: export folder written by `l3 export` (local or gs://), read by every worker.
        hop_size: seconds between audio windows (and video frames).
        batch_size: windows per forward pass.
        beam_options: "KEY=VALUE" pipeline options (`common.pipeline_options`).

    Returns:
        the manifest dict (also written to OUT/embed-manifest.json).

    Raises:
        L3Error: no inputs found, or `model` is not an export folder.
    """
    check_choice("kind", kind, media.MEDIA_TYPES)
    out = os.fspath(out)
    model = os.fspath(model)
    with common.local_copy(common.join(model, "config.json")) as config_file:
        cfg = export.read_config(os.path.dirname(config_file))
    missing = [t for t in TOWERS[kind] if not tf.io.gfile.exists(_model_file(model, t))]
    if missing:  # an OpenL3 import without --image has no image tower
        raise L3Error(f"{model} has no {missing[0]} tower ({_model_file(model, missing[0])} is "
                      "missing); embed another kind of file or use a full export.")
    pairs = _list_inputs(kind, inputs)
    tf.io.gfile.makedirs(out)
    todo_file = common.join(out, TODO_FILE)
    spans = common.write_work_list(todo_file, pairs, per_element=FILES_PER_ELEMENT)
    settings = {"kind": kind, "model": model, "hop_size": hop_size, "inputs": len(pairs)}

    with beam.Pipeline(options=common.pipeline_options(beam_options)) as pipeline:
        tagged = (
            pipeline
            | "Files to embed" >> beam.Create(spans)
            | "Spread" >> beam.Reshuffle()
            | "Inputs" >> beam.ParDo(_InputsFn(todo_file, kind, cfg, hop_size)).with_outputs(
                *TOWERS["video"], "skipped", main="meta")
        )
        groups = {"meta": tagged.meta}
        for tower in TOWERS[kind]:
            handler = TFModelHandlerNumpy(
                _model_file(model, tower), ModelType.SAVED_MODEL,
                inference_fn=functools.partial(_run_files, batch_size=batch_size),
                min_batch_size=1, max_batch_size=FILES_PER_BATCH)
            groups[tower] = (tagged[tower]
                             | f"Embed {tower}" >> RunInference(KeyedModelHandler(handler))
                             | f"Unwrap {tower}" >> beam.MapTuple(lambda k, r: (k, r.inference)))
        written = (groups | "Join" >> beam.CoGroupByKey()
                   | "Write" >> beam.Map(_write_npz, out=out, kind=kind))
        skipped = tagged.skipped | "Skipped" >> beam.combiners.ToList()
        count = written | "Count" >> beam.combiners.Count.Globally()
        _ = count | "Manifest" >> beam.Map(_write_manifest, out=out, settings=settings,
                                           skipped=beam.pvalue.AsSingleton(skipped))
    return files.read_json(common.join(out, MANIFEST))


def _model_file(model, tower: str) -> str:
    return common.join(model, f"{tower}_embedding.keras")


def _list_inputs(kind, inputs) -> list:
    """[(input, output name relative to OUT, skip reason or None)], as `embed_files.list_inputs`.

    Folders and globs give their files of `kind`; anything else is one file (a missing one is
    listed too, so it is reported as skipped). A second input of an already used output name is
    skipped with the local command's reason.
    """
    items, seen = [], set()
    for src in map(os.fspath, inputs):
        try:
            paths, base = common.list_files(src, kind) if (
                tf.io.gfile.isdir(src) or common.is_glob(src)) else ([src], posixpath.dirname(src))
        except L3Error:
            continue  # a folder without such files
        for path in paths:
            rel = (posixpath if files.is_url(path) else os.path).relpath(path, base)
            rel = os.path.splitext(rel.replace(os.sep, "/"))[0] + ".npz"
            reason = (f"output {rel} already written for another input of the same name"
                      if rel in seen else None)
            seen.add(rel)
            items.append((path, rel, reason))
    if not items:
        raise L3Error(f"No {kind} files found in {', '.join(map(str, inputs))}.")
    return items


class _InputsFn(beam.DoFn):
    """A span of [input, rel, reason] lines -> per file: meta (rel, {input, timestamps}) and
    tower rows (rel, array), or skipped {input, reason}."""

    def __init__(self, todo_file, kind, cfg, hop_size):
        self._todo_file, self._kind, self._cfg, self._hop = todo_file, kind, cfg, hop_size

    def setup(self):
        self._pool = None
        self._progress = common.RateLog(f"embed (beam) {self._kind} files")
        if self._kind == "video":
            # Decoded as the local `process_video_file` decodes (float audio resampled as it
            # streams), so both give the same embeddings.
            decode = functools.partial(
                video_lib.decode_or_reason,
                data_config=embed.video_data_config(self._cfg, self._hop),
                decode=functools.partial(embed_stream.decode_video,
                                         sample_rate=self._cfg.sample_rate))
            self._pool = prepare_lib.CrashTolerantPool(1, decode)

    def process(self, span):
        for src, rel, reason in common.read_work(self._todo_file, span):
            yield from self._file(src, rel, reason)
            self._progress.tick()

    def _file(self, src, rel, reason):
        try:
            if reason:
                raise L3Error(reason)
            with common.local_copy(src) as path:
                x = self._inputs(path, src)
        except Exception as e:  # noqa: BLE001 - one bad file must not stop a million
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            yield beam.pvalue.TaggedOutput("skipped", {"input": src, "reason": reason})
            return
        meta = {"input": src, **{k: v for k, v in x.items() if k.endswith("timestamps")}}
        yield rel, meta
        for tower in TOWERS[self._kind]:
            yield beam.pvalue.TaggedOutput(tower, (rel, x[tower]))

    def _inputs(self, path, src) -> dict:
        cfg = self._cfg
        if self._kind == "audio":
            audio, sr = media.read_audio(path)
            windows, ts = embed.frame_audio(embed.prepare_audio(audio, sr, cfg), cfg, self._hop,
                                            center=True)
            return {"audio": np.ascontiguousarray(windows), "audio_timestamps": ts}
        if self._kind == "image":
            return {"image": embed.prepare_images(media.read_image(path), cfg),
                    "image_timestamps": np.zeros(1)}
        _, decoded = self._pool.result(*self._pool.submit(prepare_lib.Job(path, src, "")))
        if isinstance(decoded, str):
            raise video_lib.VideoError(src, decoded)
        return embed.video_inputs(decoded, cfg, self._hop)

    def teardown(self):
        if self._pool is not None:
            self._pool.close()


def _run_files(model, batch, inference_args, model_id=None, *, batch_size):
    """RunInference's inference_fn: each element is one file's rows; rows run in chunks."""
    outputs = embed.run_batched(model, list(batch), batch_size, False)
    return [PredictionResult(x, y, model_id) for x, y in zip(batch, outputs)]


def _write_npz(item, out, kind) -> str:
    """One output file, with the keys and order of the local `l3 embed`."""
    rel, grouped = item
    meta = grouped["meta"][0]
    if kind == "video":
        arrays = {"audio_embedding": grouped["audio"][0],
                  "audio_timestamps": meta["audio_timestamps"],
                  "image_embedding": grouped["image"][0],
                  "image_timestamps": meta["image_timestamps"]}
    else:
        arrays = {"embedding": grouped[kind][0], "timestamps": meta[f"{kind}_timestamps"]}
    path = common.join(out, rel)
    tf.io.gfile.makedirs(posixpath.dirname(path) if files.is_url(path) else os.path.dirname(path))
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    with files.atomic_write(path) as tmp, files.open_file(tmp, "wb") as f:
        f.write(buf.getvalue())
    return rel


def _write_manifest(embedded, out, settings, skipped) -> None:
    manifest = {
        "format": MANIFEST_FORMAT,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **files.stamp(),
        **settings,
        "totals": {"embedded": embedded, "skipped": len(skipped)},
        "skipped": sorted(skipped, key=lambda e: e["input"]),
    }
    files.write_json(common.join(out, MANIFEST), manifest)
    tf.io.gfile.remove(common.join(out, TODO_FILE))
