"""The TF Serving SavedModel: a tf.Module whose tf.functions wrap the Keras models' call.

Signatures (batch = any; H, W = the model's image size; S = its window in samples; D = embedding
size; see `signature_table`):

    audio_embedding        audio float32 [batch, S] at the model's rate   -> embedding [batch, D]
    audio_embedding_bytes  audio_bytes string [batch] (16-bit PCM WAV)    -> embedding [batch, D]
    audio_embedding_file   waveform float32 [n], any n >= 1, model's rate -> embeddings [T, D],
                                                                             timestamps [T]
    audio_embedding_file_bytes  audio_bytes string [] (one WAV: any length, rate, channels)
                                                                          -> embeddings, timestamps
    image_embedding        image uint8 [batch, h, w, 3], any h, w         -> embedding [batch, D]
    image_embedding_bytes  image_bytes string [batch] (JPEG/PNG/...)      -> embedding [batch, D]
    avc, serving_default   image uint8 [batch, h, w, 3] + audio float32 [batch, S]
                                                                          -> probability [batch]
    avc_bytes              image_bytes + audio_bytes string [batch]       -> probability [batch]

`probability` is P(frame and audio correspond), column 1 of the AVC softmax. A model with weights
for only some parts (`parts`: OpenL3's imports have no AVC head, maybe no image tower) gets only
their signatures, and serving_default is then audio_embedding. Image inputs are
fitted with `preprocess.fit_images`; WAV inputs of `audio_embedding_bytes` and `avc_bytes` give
their first window (`decode_wav_windows`).
Input names of the encoded variants end in `_bytes` so REST clients know to send {"b64": ...}.

Whole files (YAMNet's convention): `audio_embedding_file*` embed one recording of any length
with the Python API's framing (`embed.get_audio_embedding`, center=True): 1 s windows every
`hop_size` seconds (fixed at export, default 0.1 s; export.json records it), timestamps = window
centres in seconds (float64). Shorter than a window: one zero-padded frame; empty: an
InvalidArgumentError saying so. Windows are cut in the graph and run `batch_size` at a time in a
tf.while_loop, so memory beyond the request itself is bounded. WAVs are down-mixed and resampled
in the graph (`preprocess.decode_wav_file`).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from l3_keras import models, preprocess
from l3_keras.config import ModelConfig
from l3_keras.errors import L3Error

DEFAULT_SIGNATURE = "serving_default"
AVC = "avc"
PARTS = ("audio", "image", AVC)
_PART_SIGNATURES = {
    "audio": ("audio_embedding", "audio_embedding_bytes", "audio_embedding_file",
              "audio_embedding_file_bytes"),
    "image": ("image_embedding", "image_embedding_bytes"),
    AVC: (AVC, "avc_bytes"),
}


class L3ServingModule(tf.Module):
    """Serving functions over one AVC model and the embedding towers cut from it.

    Args:
        l3: the AVC model (`models.build_l3` or a loaded `.keras` file).
        cfg: its ModelConfig.
        parts: the trained parts to serve, a subset of PARTS ("audio", "image", "avc").
    """

    def __init__(self, l3, cfg: ModelConfig, parts=PARTS, hop_size: float = 0.1, batch_size: int = 32):
        super().__init__(name="l3_serving")
        self._parts = tuple(p for p in PARTS if p in parts)
        self.l3 = l3
        self.audio_model = models.audio_embedding_model(l3, cfg)
        self.image_model = models.image_embedding_model(l3, cfg)
        # Save the tf.Variables under the Keras variables, not the Keras wrappers: a wrapper is
        # saved as a separate copy ("Variable_N") that TF 1 style loaders (TF Serving,
        # saved_model_cli run) restore, while the functions read the uninitialised original
        # ("Could not find variable vision_block1_conv1/kernel"). tf.saved_model.load hides this.
        self.model_variables = [v.value for v in l3.variables]
        self._size = tuple(cfg.image_size)
        self._rate = cfg.sample_rate
        self._samples = cfg.audio_input_samples  # window + context (edge-free models)
        self._window = cfg.audio_samples
        self._context = cfg.audio_context_samples
        self._dim = cfg.embedding_dim
        self.hop_size = hop_size
        self._hop = int(round(hop_size * cfg.sample_rate))
        if self._hop < 1 or batch_size < 1:
            raise L3Error(f"hop_size {hop_size} s and batch_size {batch_size} must be positive.")
        self._batch = batch_size
        audio = tf.TensorSpec([None, cfg.audio_input_samples], tf.float32, name="audio")
        waveform = tf.TensorSpec([None], tf.float32, name="waveform")
        wav_file = tf.TensorSpec([], tf.string, name="audio_bytes")
        image = tf.TensorSpec([None, None, None, 3], tf.uint8, name="image")
        image_bytes = tf.TensorSpec([None], tf.string, name="image_bytes")
        audio_bytes = tf.TensorSpec([None], tf.string, name="audio_bytes")
        self._specs = {s.name: s for s in (audio, image, image_bytes, audio_bytes, waveform)}
        self._specs["audio_file_bytes"] = wav_file
        self.audio_embedding = tf.function(self._audio, input_signature=[audio])
        self.audio_embedding_bytes = tf.function(self._audio_bytes, input_signature=[audio_bytes])
        self.image_embedding = tf.function(self._image, input_signature=[image])
        self.image_embedding_bytes = tf.function(self._image_bytes, input_signature=[image_bytes])
        self.audio_embedding_file = tf.function(self._audio_file, input_signature=[waveform])
        self.audio_embedding_file_bytes = tf.function(self._audio_file_bytes, input_signature=[wav_file])
        self.avc = tf.function(self._avc, input_signature=[image, audio])
        self.avc_bytes = tf.function(self._avc_bytes, input_signature=[image_bytes, audio_bytes])

    # Parameter names become the signatures' input names.
    def _audio(self, audio):
        audio = self._checked(audio, "audio")
        return {"embedding": _float32(self.audio_model(audio, training=False))}

    def _audio_bytes(self, audio_bytes):
        audio = self._decode_wav(self._checked(audio_bytes, "audio_bytes"))
        return {"embedding": _float32(self.audio_model(audio, training=False))}

    def _audio_file(self, waveform):
        return self._embed_file(self._checked(waveform, "waveform"))

    def _audio_file_bytes(self, audio_bytes):
        x = self._checked(audio_bytes, "audio_file_bytes")
        return self._embed_file(preprocess.decode_wav_file(x, self._rate))

    def _embed_file(self, x):
        """Mono float32 [n] at the model's rate -> {embeddings [T, D], timestamps [T]}."""
        win, hop, batch, context = self._window, self._hop, self._batch, self._context
        span = win + 2 * context
        left = win // 2  # center=True: window k is centred on sample k * hop
        n = tf.size(x)
        with tf.control_dependencies([tf.debugging.assert_positive(
                n, message="waveform is empty (0 samples); send at least one sample")]):
            padded = tf.pad(x, [[left + context, win - left + context]])
        count = n // hop + 1  # as embed.frame_audio: (n + win - win) // hop + 1
        steps = (count + batch - 1) // batch

        def body(i, out):
            first = i * batch
            size = tf.minimum(batch, count - first)
            segment = padded[first * hop : first * hop + (size - 1) * hop + span]
            windows = tf.signal.frame(segment, span, hop)  # [size, span]
            return i + 1, out.write(i, _float32(self.audio_model(windows, training=False)))

        out = tf.TensorArray(tf.float32, size=steps, infer_shape=False, element_shape=[None, self._dim])
        _, out = tf.while_loop(lambda i, _: i < steps, body, [tf.constant(0), out])
        k = tf.cast(tf.range(count), tf.float64)
        timestamps = (k * hop + win / 2 - left) / self._rate
        return {"embeddings": out.concat(), "timestamps": timestamps}

    def _image(self, image):
        x = preprocess.fit_images(self._checked(image, "image"), self._size)
        return {"embedding": _float32(self.image_model(x, training=False))}

    def _image_bytes(self, image_bytes):
        x = preprocess.decode_images(self._checked(image_bytes, "image_bytes"), self._size)
        return {"embedding": _float32(self.image_model(x, training=False))}

    def _avc(self, image, audio):
        x = preprocess.fit_images(self._checked(image, "image"), self._size)
        return self._probability(x, self._checked(audio, "audio"))

    def _avc_bytes(self, image_bytes, audio_bytes):
        x = preprocess.decode_images(self._checked(image_bytes, "image_bytes"), self._size)
        return self._probability(x, self._decode_wav(self._checked(audio_bytes, "audio_bytes")))

    def _decode_wav(self, audio_bytes):
        return preprocess.decode_wav_windows(audio_bytes, self._rate, self._samples)

    def _probability(self, image, audio):
        probs = self.l3({models.IMAGE: image, models.AUDIO: audio}, training=False)
        return {"probability": _float32(probs)[:, 1]}

    def _checked(self, x, name):
        """`x` after a run-time check of its shape against its input spec.

        A loaded signature does not check shapes, so a wrong one would fail deep in the graph
        (e.g. in the spectrogram's MirrorPad). The check reads the run-time shape padded with -1,
        which grappler cannot fold away (it folds tf.rank to the static rank).
        """
        spec = self._specs[name]
        rank = spec.shape.rank
        shape = tf.pad(tf.shape(x), [[0, rank + 1]], constant_values=-1)
        known = [(i, d) for i, d in enumerate(spec.shape.as_list()) if d is not None]
        ok = tf.equal(shape[rank], -1)
        if rank:
            ok = tf.logical_and(ok, shape[rank - 1] >= 0)
        for axis, size in known:
            ok = tf.logical_and(ok, tf.equal(shape[axis], size))
        message = f"input {spec.name} must be {spec.dtype.name} {_shape(spec)}"
        with tf.control_dependencies([tf.debugging.Assert(ok, [message, "got shape", tf.shape(x)])]):
            return tf.identity(x)

    def signatures(self) -> dict:
        """{signature name: concrete function} for tf.saved_model.save."""
        names = [name for part in self._parts for name in _PART_SIGNATURES[part]]
        sigs = {name: getattr(self, name).get_concrete_function() for name in names}
        sigs[DEFAULT_SIGNATURE] = sigs[AVC if AVC in self._parts else "audio_embedding"]
        return sigs


def _float32(x):
    # Under a mixed-precision policy the towers return bfloat16 / float16; clients get float32.
    return tf.cast(x, tf.float32)


def save(l3, cfg: ModelConfig, path, parts=PARTS, hop_size: float = 0.1, batch_size: int = 32) -> dict:
    """Writes the SavedModel of `l3` to `path` (one TF Serving version folder).

    Args:
        parts: the parts with trained weights, whose signatures are saved (see L3ServingModule).
        hop_size, batch_size: framing and windows per pass of the whole-file signatures.

    Returns:
        the {name: concrete function} signatures that were saved.
    """
    module = L3ServingModule(l3, cfg, parts, hop_size, batch_size)
    sigs = module.signatures()
    tf.saved_model.save(module, str(path), signatures=sigs)
    return sigs


def signature_table(sigs) -> list:
    """[(name, {input: (dtype, shape)}, {output: (dtype, shape)})] of concrete functions."""

    def spec(s):
        return s.dtype.name, tuple(s.shape.as_list())

    rows = []
    for name, fn in sorted(sigs.items()):
        inputs = {k: spec(s) for k, s in fn.structured_input_signature[1].items()}
        outputs = {k: spec(s) for k, s in fn.structured_outputs.items()}
        rows.append((name, inputs, outputs))
    return rows


def warmup_inputs(cfg: ModelConfig, batch: int = 1, seed: int = 0) -> dict:
    """Synthetic inputs for every signature: {signature: {input name: numpy array}}.

    The uint8 image is 16 px larger than the model's size so the resize path is warmed too;
    the whole-file signatures get 0.55 s (a few windows; the WAV at 44.1 kHz, stereo, so the
    resampler and down-mix are warmed).
    """
    rng = np.random.default_rng(seed)
    h, w = cfg.image_size
    image = rng.integers(0, 256, (batch, h + 16, w + 16, 3), dtype=np.uint8)
    audio = (rng.random((batch, cfg.audio_input_samples), dtype=np.float32) - 0.5) * 0.2
    jpeg = [tf.io.encode_jpeg(im).numpy() for im in image]
    wav = [tf.audio.encode_wav(a[:, None], cfg.sample_rate).numpy() for a in audio]
    image_bytes = np.array(jpeg, dtype=object)
    audio_bytes = np.array(wav, dtype=object)
    waveform = audio[0, : int(0.55 * cfg.sample_rate)]
    stereo = (rng.random((int(0.55 * 44100), 2), dtype=np.float32) - 0.5) * 0.2
    wav_file = np.array(tf.audio.encode_wav(stereo, 44100).numpy(), dtype=object)
    return {
        "audio_embedding_file": {"waveform": waveform},
        "audio_embedding_file_bytes": {"audio_bytes": wav_file},
        "audio_embedding": {"audio": audio},
        "audio_embedding_bytes": {"audio_bytes": audio_bytes},
        "image_embedding": {"image": image},
        "image_embedding_bytes": {"image_bytes": image_bytes},
        AVC: {"image": image, "audio": audio},
        DEFAULT_SIGNATURE: {"image": image, "audio": audio},
        "avc_bytes": {"image_bytes": image_bytes, "audio_bytes": audio_bytes},
    }


def call_signature(fn, name: str, **inputs):
    """Calls a loaded signature, turning an input mismatch into an L3Error naming what it expects.

    Args:
        fn: a signature of `tf.saved_model.load(path).signatures`.
        name: its name, for the message.
        **inputs: input name -> array.

    Returns:
        {output name: numpy array}.

    Raises:
        L3Error: missing, extra, wrong-rank or wrong-dtype inputs.
    """
    expected = fn.structured_input_signature[1]
    want = ", ".join(f"{k}: {s.dtype.name} {_shape(s)}" for k, s in sorted(expected.items()))
    if set(inputs) != set(expected):
        raise L3Error(f"Signature {name!r} takes {want}; got inputs {sorted(inputs)}.")
    for key, spec in expected.items():
        value = tf.convert_to_tensor(inputs[key])
        if value.dtype != spec.dtype or not spec.shape.is_compatible_with(value.shape):
            raise L3Error(
                f"Signature {name!r} expects {key}: {spec.dtype.name} {_shape(spec)}; got "
                f"{value.dtype.name} {_shape(value)}. It takes {want}."
            )
        inputs[key] = value
    return {k: v.numpy() for k, v in fn(**inputs).items()}


def _shape(t) -> str:
    dims = t.shape.as_list()
    if dims == [None]:
        return "[samples]"
    dims = ["batch" if i == 0 and d is None else "?" if d is None else str(d)
            for i, d in enumerate(dims)]
    return "[" + ", ".join(dims) + "]"
