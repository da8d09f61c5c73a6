"""`l3 export --tflite`: the two embedding towers as TensorFlow Lite flatbuffers.

    audio_embedding.tflite   waveform float32 [batch, S] (one window, + context for edge-free
                             models) at the model's rate -> embedding [batch, D]; the spectrogram
                             front end is inside, built from TFLite builtin ops only
    image_embedding.tflite   image float32 [batch, H, W, 3] in [0, 1] -> embedding [batch, D]

Both are float32 and need no Select TF ops. Variable-length audio (the whole-file signature of
`serving`) does not convert with builtins: its tf.while_loop over batches of windows uses
TensorList ops, which only the Flex delegate (Select TF ops) runs; on-device callers frame the
audio themselves (`embed.frame_audio`).

Conversion goes through `keras.Model.export` (a SavedModel of the inference graph): converting
a tf.function over the model directly produced NaNs after the synchronized BatchNormalization.
"""
from __future__ import annotations

import pathlib
import tempfile

import numpy as np

FILES = {"audio": "audio_embedding.tflite", "image": "image_embedding.tflite"}


def convert(model) -> bytes:
    """A Keras embedding model -> .tflite bytes (builtin ops, float32)."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        return converter.convert()


def write_tflite(l3, cfg, folder, parts=("audio", "image")) -> dict:
    """Writes FILES of the towers in `parts` into `folder`; returns {kind: path}."""
    from l3_keras import models

    folder = pathlib.Path(folder)
    towers = {"audio": models.audio_embedding_model(l3, cfg)}
    if "image" in parts:
        towers["image"] = models.image_embedding_model(l3, cfg)
    paths = {}
    for kind, model in towers.items():
        paths[kind] = folder / FILES[kind]
        paths[kind].write_bytes(convert(model))
    return paths


def run_tflite(path, x) -> np.ndarray:
    """Runs a .tflite embedding model on a float32 batch (resizing its input to x's batch)."""
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=str(path))
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], list(np.shape(x)))
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], np.asarray(x, np.float32))
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
