"""`l3 export`: a trained AVC model -> `.keras` files plus a TF Serving SavedModel.

Layout of `saved_models/NAME/` (see saved_models/README.md for serving it):

    config.json               the ModelConfig (sample rate, window, image size, embedding size)
    export.json               source, version, git commit, signature table
    l3.keras                  AVC model: {"image": [b, H, W, 3] in [0, 1], "audio": [b, S]} -> [b, 2]
    audio_embedding.keras     waveform float32 [b, S] at config.sample_rate -> [b, D]
    image_embedding.keras     image float32 [b, H, W, 3] in [0, 1] -> [b, D] (absent when the
                              export has no trained image tower: `l3 import-openl3` without --image)
    models.config             TF Serving model config file (text proto), base_path /models/NAME/serving
    serving/N/                SavedModel, version N (signatures: `serving.py`)
    serving/N/assets.extra/tf_serving_warmup_requests   one PredictionLog per signature
    audio_embedding.tflite, image_embedding.tflite      with tflite=True (`export_tflite`)

Sources: a training run folder (its `config.json` holds {"model": ModelConfig dict, ...} and the
final model is `model.keras`; the layout `l3_keras.train` is expected to write), an export
folder (`config.json` is the ModelConfig itself, the model is `l3.keras`), or a `.keras` file
with a preset name (or a `config.json` of either kind beside it).

Atomicity: everything is written into a hidden temporary folder beside the target, which is
then renamed into place; a crash leaves only `.NAME.tmp-*`, never a half-written NAME/.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile

import keras
import tensorflow as tf

from l3_keras import files, models, serving
from l3_keras.config import ModelConfig, get_preset
from l3_keras.errors import L3Error
from l3_keras.train.rundir import CONFIG, MODEL as RUN_MODEL

EXPORT_MODEL = "l3.keras"
WARMUP = "assets.extra/tf_serving_warmup_requests"


def load_source(source, preset=None):
    """Loads the AVC model and its config from a run folder, an export folder or a .keras file.

    Args:
        source: run folder, export folder or `.keras` file (see the module docstring).
        preset: preset name for a `.keras` file without a config.json beside it; overrides one.

    Returns:
        (l3 keras.Model, ModelConfig).

    Raises:
        L3Error: missing files, or a model whose inputs do not fit the config.
    """
    path = pathlib.Path(source)
    if path.is_dir():
        model_file = next((path / n for n in (RUN_MODEL, EXPORT_MODEL) if (path / n).exists()), None)
        if model_file is None:
            raise L3Error(f"{path} holds neither {RUN_MODEL} (a run) nor {EXPORT_MODEL} (an export).")
    elif path.suffix == ".keras" and path.exists():
        model_file = path
    else:
        raise L3Error(f"{path} is not a run folder, an export folder or an existing .keras file.")
    cfg = get_preset(preset) if preset else read_config(model_file.parent)
    l3 = keras.models.load_model(model_file)
    shapes = {k: tuple(l3.get_layer(k).output.shape[1:]) for k in (models.IMAGE, models.AUDIO)}
    want = {models.IMAGE: (*cfg.image_size, 3), models.AUDIO: (cfg.audio_input_samples,)}
    if shapes != want:
        raise L3Error(
            f"{model_file} takes inputs {shapes} but config {cfg.name!r} says {want}; "
            "pass the preset it was trained with (--preset)."
        )
    return l3, cfg


def read_config(folder) -> ModelConfig:
    """The ModelConfig in `folder/config.json`: a run's {"model": {...}} or an export's own."""
    path = pathlib.Path(folder) / CONFIG
    if not path.exists():
        raise L3Error(f"No {CONFIG} in {folder}; pass --preset with the model's preset name.")
    data = json.loads(path.read_text())
    return ModelConfig.from_dict(data.get("model", data))


def export(source, name, version=None, preset=None, root="saved_models", overwrite=False,
           hop_size=0.1, tflite=False):
    """Exports an AVC model to `root/name` (layout in the module docstring).

    Args:
        source: run folder, export folder or `.keras` file.
        name: export (and TF Serving model) name.
        version: TF Serving version number; default: one more than the highest existing one.
            Other versions already in `root/name/serving` are kept.
        preset: preset name for a `.keras` source without config.json.
        root: folder that holds the exports.
        overwrite: replace an existing `serving/version`.
        hop_size: seconds between windows of the whole-file signatures (`serving`).
        tflite: also write the embedding towers as .tflite files.

    Returns:
        pathlib.Path of the export folder.

    Raises:
        L3Error: bad source, bad name, or an existing version without overwrite.
    """
    _target(name, root, version, overwrite)  # fail before the slow load
    l3, cfg = load_source(source, preset)
    parts, info = _source_export_info(source)
    return write_export(l3, cfg, name, source=str(source), info=info, root=root, version=version,
                        overwrite=overwrite, parts=parts, hop_size=hop_size, tflite=tflite)


def _source_export_info(source):
    """(parts, extra export.json keys) to carry over when `source` is itself an export.

    An export of only some parts (an OpenL3 import has no trained AVC head) stays that way when it
    is exported again, with its provenance (e.g. the OpenL3 weight files and their SHA-256).
    """
    path = pathlib.Path(source) / "export.json"
    if not path.is_file():
        return serving.PARTS, None
    old = json.loads(path.read_text())
    regenerated = {"source", "version", "signatures", "parts", "file_signatures_hop_size",
                   "git_commit", "versions"}
    return tuple(old.get("parts", serving.PARTS)), {
        k: v for k, v in old.items() if k not in regenerated
    }


def write_export(l3, cfg, name, source, info=None, root="saved_models", version=None,
                 overwrite=False, parts=serving.PARTS, hop_size=0.1, tflite=False):
    """Writes the export of an AVC model already in memory (`export` and `l3 import-openl3`).

    Args:
        l3, cfg: the AVC model and its ModelConfig.
        name, root, version, overwrite: as for `export`.
        source: what the model came from, recorded in export.json.
        info: more keys for export.json (e.g. the OpenL3 weight files and their SHA-256).
        parts: the parts with trained weights ("audio", "image", "avc"): only their signatures
            are served, and image_embedding.keras is written only with "image".
        hop_size: seconds between windows of the whole-file signatures (in export.json).
        tflite: also write the embedding towers as .tflite files (`export_tflite`).

    Returns:
        pathlib.Path of the export folder.
    """
    target, old_versions, version = _target(name, root, version, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a serving container may run as another user
    try:
        sigs = _write(tmp, l3, cfg, name, version, parts, hop_size)
        if tflite:
            from l3_keras.export_tflite import write_tflite

            write_tflite(l3, cfg, tmp, parts)
        for v in old_versions - {version}:
            shutil.copytree(target / "serving" / str(v), tmp / "serving" / str(v))
        info = {**_info(source, version, sigs), "parts": [p for p in serving.PARTS if p in parts],
                "file_signatures_hop_size": hop_size, **(info or {})}
        files.write_json(tmp / "export.json", info)
        _swap(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _target(name, root, version, overwrite):
    """(export folder, its existing versions, the version to write); L3Error if not allowed."""
    if not name or os.sep in name or name.startswith("."):
        raise L3Error(f"Export name {name!r} must be a plain folder name, e.g. 'l3_paper'.")
    target = pathlib.Path(root) / name
    old_versions = _versions(target)
    version = int(version) if version is not None else max(old_versions, default=0) + 1
    if version < 1:
        raise L3Error(f"--version must be a positive integer; got {version}.")
    if version in old_versions and not overwrite:
        raise L3Error(f"{target}/serving/{version} exists; choose another --version or --overwrite.")
    return target, old_versions, version


def _write(folder, l3, cfg, name, version, parts, hop_size) -> dict:
    (folder / CONFIG).write_text(cfg.to_json())
    l3.save(folder / EXPORT_MODEL)
    models.audio_embedding_model(l3, cfg).save(folder / "audio_embedding.keras")
    if "image" in parts:
        models.image_embedding_model(l3, cfg).save(folder / "image_embedding.keras")
    version_dir = folder / "serving" / str(version)
    sigs = serving.save(l3, cfg, version_dir, parts, hop_size)
    warmup = {k: v for k, v in serving.warmup_inputs(cfg).items() if k in sigs}
    write_warmup(version_dir / WARMUP, name, warmup)
    (folder / "models.config").write_text(models_config(name))
    return sigs


def write_warmup(path, model_name, inputs_by_signature):
    """Writes TF Serving's warm-up file: one PredictionLog (PredictRequest) per signature.

    Args:
        path: `serving/N/assets.extra/tf_serving_warmup_requests`.
        model_name: the served model name.
        inputs_by_signature: {signature: {input name: numpy array}}.
    """
    # Imported here: tensorflow-serving-api is only needed by exports, not by training.
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for signature, inputs in inputs_by_signature.items():
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = signature
            for key, value in inputs.items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())


def models_config(name: str) -> str:
    """TF Serving --model_config_file text, for `-v $PWD/saved_models:/models`."""
    return (
        "model_config_list {\n"
        "  config {\n"
        f'    name: "{name}"\n'
        f'    base_path: "/models/{name}/serving"\n'
        '    model_platform: "tensorflow"\n'
        "  }\n"
        "}\n"
    )


def _versions(target) -> set:
    serving_dir = pathlib.Path(target) / "serving"
    if not serving_dir.is_dir():
        return set()
    return {int(p.name) for p in serving_dir.iterdir() if p.name.isdigit()}


def _swap(tmp, target):
    """Renames `tmp` to `target`; an old `target` is renamed aside first and deleted after."""
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _info(source, version, sigs) -> dict:
    table = [
        {"name": n, "inputs": i, "outputs": o} for n, i, o in serving.signature_table(sigs)
    ]
    return {"source": str(source), "version": version, **files.stamp(), "signatures": table}
