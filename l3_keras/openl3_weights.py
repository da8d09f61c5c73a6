"""OpenL3's published weight files: their HDF5 layout, read and written with h5py alone.

OpenL3 (marl/openl3 v0.4.2) ships one file per network, e.g. `openl3_audio_mel256_music.h5`
and `openl3_image_mel256_music.h5`, in the Keras 2 `save_weights` layout:

    attrs["layer_names"]                 every layer of the network, in model order
    <layer>/attrs["weight_names"]        e.g. [b"conv2d_1/kernel:0", b"conv2d_1/bias:0"]; empty
                                         for layers without weights (input, ReLU, pooling, ...)
    <layer>/<weight name>                the array (kernel:0, bias:0, gamma:0, beta:0,
                                         moving_mean:0, moving_variance:0)

(A full-model file keeps the same tree under `model_weights`.) Layers with weights map onto ours
in order, which `openl3_plan` spells out per tower; layer names are not relied on since OpenL3's
are Keras' automatic ones (`conv2d_3`), except the last, `audio_embedding_layer` /
`vision_embedding_layer`, which tells an audio file from an image one.

This module needs only numpy and h5py (no Keras), so the fixture generator can run it in the
oracle venv beside OpenL3's own code.
"""
from __future__ import annotations

import gzip
import pathlib
import re
import shutil
import tempfile
from typing import List, NamedTuple, Tuple

import numpy as np

from l3_keras.config import ModelConfig
from l3_keras.errors import L3Error

CONV = ("kernel", "bias")
BATCHNORM = ("gamma", "beta", "moving_mean", "moving_variance")
EMBEDDING_LAYER = {"audio": "audio_embedding_layer", "vision": "vision_embedding_layer"}
INPUT_REPRS = ("linear", "mel128", "mel256")
CONTENT_TYPES = ("music", "env")
_FILE_NAME = re.compile(r"openl3_(audio|image)_(linear|mel128|mel256)_(music|env)")


class PlannedLayer(NamedTuple):
    """One layer with weights, in OpenL3's order: our layer name and its weights' shapes."""

    name: str
    weights: Tuple[str, ...]  # CONV or BATCHNORM
    shapes: Tuple[Tuple[int, ...], ...]


def openl3_plan(cfg: ModelConfig, prefix: str) -> List[PlannedLayer]:
    """The layers with weights of one OpenL3 tower (`prefix` "audio" or "vision"), in file order.

    Args:
        cfg: an OpenL3 preset (`openl3-linear`, ...): conv biases, last conv linear, input BN.
        prefix: "audio" or "vision".
    """
    channels = 3 if prefix == "vision" else 1
    plan = [PlannedLayer(f"{prefix}_bn_input", BATCHNORM, ((channels,),) * 4)]
    n = len(cfg.filters)
    for b, f in enumerate(cfg.filters, start=1):
        for i in range(1, cfg.convs_per_block + 1):
            plan.append(PlannedLayer(f"{prefix}_block{b}_conv{i}", CONV, ((3, 3, channels, f), (f,))))
            channels = f
            if not (b == n and i == cfg.convs_per_block):
                plan.append(PlannedLayer(f"{prefix}_block{b}_bn{i}", BATCHNORM, ((f,),) * 4))
    return plan


def parse_file_name(path) -> Tuple[str, str, str]:
    """(kind "audio"|"image", input_repr, content_type) from OpenL3's file name.

    Raises:
        L3Error: if the name does not follow `openl3_<audio|image>_<repr>_<content>.h5[.gz]`.
    """
    m = _FILE_NAME.search(pathlib.Path(path).name)
    if not m:
        raise L3Error(
            f"Cannot tell the model from the file name {pathlib.Path(path).name!r} (OpenL3 names "
            "them openl3_audio_mel256_music.h5 etc.); pass --input-repr and --content-type."
        )
    return m.group(1), m.group(2), m.group(3)


def _open_h5(path, stack):
    """h5py.File of `path`; a `.gz` file is unpacked to a temporary file first."""
    import h5py

    path = pathlib.Path(path)
    if not path.is_file():
        raise L3Error(f"OpenL3 weight file {path} does not exist.")
    try:
        if path.suffix == ".gz":
            tmp = stack.enter_context(tempfile.TemporaryDirectory())
            plain = pathlib.Path(tmp) / path.stem
            with gzip.open(path, "rb") as src, open(plain, "wb") as dst:
                shutil.copyfileobj(src, dst)
            path = plain
        return stack.enter_context(h5py.File(path, "r"))
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise L3Error(f"{path} is not a readable HDF5 weight file (truncated or corrupt?): {e}") from e


def _text(x) -> str:
    return x.decode("utf8") if isinstance(x, bytes) else str(x)


def read_layers(path) -> List[Tuple[str, dict]]:
    """The layers with weights in an OpenL3 (Keras 2 layout) file, in order.

    Returns:
        [(layer name, {"kernel": array, "bias": array, ...})] with the weight names' last part
        (`conv2d_1/kernel:0` -> "kernel").

    Raises:
        L3Error: unreadable, truncated or not in the Keras 2 layout; the message names the file.
    """
    import contextlib

    with contextlib.ExitStack() as stack:
        f = _open_h5(path, stack)
        try:
            if "layer_names" not in f.attrs and "model_weights" in f:
                f = f["model_weights"]
            if "layer_names" not in f.attrs:
                raise L3Error(
                    f"{path} has no 'layer_names' attribute: not a Keras 2 weight file as OpenL3 "
                    "publishes them."
                )
            layers = []
            for name in map(_text, f.attrs["layer_names"]):
                group = f[name]
                names = [_text(w) for w in group.attrs.get("weight_names", [])]
                if names:
                    short = [w.split("/")[-1].split(":")[0] for w in names]
                    layers.append((name, {s: np.asarray(group[w]) for s, w in zip(short, names)}))
            return layers
        except (KeyError, OSError, ValueError) as e:
            if isinstance(e, L3Error):
                raise
            raise L3Error(f"{path}: cannot read its weights (truncated or corrupt?): {e}") from e


def check_layers(layers, plan: List[PlannedLayer], path, prefix: str) -> List[List[np.ndarray]]:
    """Matches file layers to `plan` in order; returns each layer's arrays in Keras order.

    Raises:
        L3Error: wrong number of layers, wrong weight names, wrong shapes or an image file given
            for audio (and vice versa); the message names the file and what did not match.
    """
    other = "vision" if prefix == "audio" else "audio"
    if layers and layers[-1][0] == EMBEDDING_LAYER[other]:
        raise L3Error(
            f"{path} holds OpenL3's {'image' if other == 'vision' else 'audio'} network (last "
            f"layer {layers[-1][0]!r}), not the {'image' if prefix == 'vision' else 'audio'} one."
        )
    if len(layers) != len(plan):
        raise L3Error(
            f"{path} has {len(layers)} layers with weights; OpenL3's {prefix} network has "
            f"{len(plan)}. Is it an OpenL3 {'image' if prefix == 'vision' else 'audio'} weight file?"
        )
    values = []
    for k, ((name, weights), want) in enumerate(zip(layers, plan)):
        if sorted(weights) != sorted(want.weights):
            raise L3Error(
                f"{path}: layer {k} ({name!r}) holds weights {sorted(weights)}; {want.name} needs "
                f"{list(want.weights)}."
            )
        arrays = [weights[w] for w in want.weights]
        got = tuple(a.shape for a in arrays)
        if got != want.shapes:
            raise L3Error(
                f"{path}: layer {k} ({name!r}) has shapes {got}; {want.name} needs {want.shapes}. "
                "Is it the weight file for this input representation?"
            )
        values.append([a.astype(np.float32) for a in arrays])
    return values


def random_weights(plan: List[PlannedLayer], seed: int, input_mean=0.0, input_var=1.0):
    """Seeded random weights for `plan`: He-normal kernels, BatchNorms that keep activations O(1).

    Pure numpy (`default_rng(seed)`), so the fixture generator (oracle venv) and the tests (our
    venv) make identical files. `input_mean` / `input_var` set the input BatchNorm's statistics
    (e.g. -40 / 400 for a dB spectrogram in [-80, 0]).
    """
    rng = np.random.default_rng(seed)
    out = []
    for k, layer in enumerate(plan):
        if layer.weights == CONV:
            (kshape, bshape) = layer.shapes
            fan_in = int(np.prod(kshape[:3]))
            kernel = rng.standard_normal(kshape) * np.sqrt(2.0 / fan_in)
            out.append([kernel, rng.standard_normal(bshape) * 0.1])
        else:
            (shape,) = set(layer.shapes)
            mean, var = (input_mean, input_var) if k == 0 else (0.0, 1.0)
            gamma = rng.uniform(0.5, 1.5, shape)
            beta = rng.standard_normal(shape) * 0.1
            moving_mean = mean + rng.standard_normal(shape) * 0.1 * np.sqrt(var)
            moving_var = var * rng.uniform(0.5, 1.5, shape)
            out.append([gamma, beta, moving_mean, moving_var])
    return [[np.asarray(a, np.float32) for a in arrays] for arrays in out]


def write_keras2_weights(path, plan: List[PlannedLayer], values, prefix: str):
    """Writes `values` (as from `random_weights`) in OpenL3's published layout (see module doc).

    Layer names are Keras 2's automatic ones as in OpenL3's files (`batch_normalization_1`,
    `conv2d_1`, ..., the last conv `<prefix>_embedding_layer`) after a weightless `input_1`.
    """
    import h5py

    counters = {"conv2d": 0, "batch_normalization": 0}
    names, weights = ["input_1"], {"input_1": []}  # a weightless layer, as Keras 2 lists them
    for k, (layer, arrays) in enumerate(zip(plan, values)):
        kind = "conv2d" if layer.weights == CONV else "batch_normalization"
        counters[kind] += 1
        name = EMBEDDING_LAYER[prefix] if k == len(plan) - 1 else f"{kind}_{counters[kind]}"
        names.append(name)
        weights[name] = [(f"{name}/{w}:0", a) for w, a in zip(layer.weights, arrays)]
    with h5py.File(path, "w") as f:
        # Fixed-length byte strings (numpy "S"), as Keras 2 writes these attributes.
        f.attrs["layer_names"] = np.asarray([n.encode("utf8") for n in names])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for name in names:
            group = f.create_group(name)
            group.attrs["weight_names"] = np.asarray([w.encode("utf8") for w, _ in weights[name]], "S")
            for w, a in weights[name]:
                group.create_dataset(w, data=a)
