"""`l3 export`: .keras files, the TF Serving SavedModel, its signatures, warm-up file and errors.

Two kinds of reference. `keras_reference` runs `l3_keras.preprocess` eagerly, so those tests show
that the saved graph computes what the Keras model does (allclose 1e-5). The oracle tests
(`test_*_match_pil`, `test_wav_bytes_*`) preprocess with independent code instead: PIL for image
resizing and cropping, soundfile + soxr for WAV decoding, down-mixing and resampling.
"""
import io
import json
import pathlib
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import scipy.signal
import soundfile
import soxr
import tensorflow as tf
from PIL import Image

from l3_keras import embed, embed_stream, export, models, preprocess, serving
from l3_keras.cli import main
from l3_keras.config import get_preset
from l3_keras.errors import L3Error
from tests.helpers import as_list, predict_in_fresh_process, random_inputs

TOL = dict(rtol=1e-5, atol=1e-5)
SAVED_MODEL_CLI = str(pathlib.Path(sys.executable).with_name("saved_model_cli"))


def make_run_dir(path, cfg):
    """A training run folder as l3_keras.train writes it: config.json {"model": ...} + model.keras."""
    path.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)  # the oracle tolerances below were measured on these weights
    l3 = models.build_l3(cfg)
    l3.save(path / "model.keras")
    (path / "config.json").write_text(json.dumps({"model": cfg.to_dict(), "train": {}}))
    return l3


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    """(l3 source model, config, export folder) for the tiny preset, exported through the CLI."""
    root = tmp_path_factory.mktemp("exports")
    cfg = get_preset("tiny")
    l3 = make_run_dir(root / "run", cfg)
    rc = main(["export", str(root / "run"), "--name", "tiny", "--root", str(root / "saved_models")])
    assert rc == 0
    return l3, cfg, root / "saved_models" / "tiny"


def python_api_reference(l3, cfg, waveform, hop_size=0.1):
    """The whole-file signatures' outputs computed by `embed.get_audio_embedding`."""
    towers = embed.EmbeddingModels.from_l3(l3, cfg)
    emb, ts = embed.get_audio_embedding(np.asarray(waveform), cfg.sample_rate, towers, hop_size)
    return {"embeddings": emb, "timestamps": ts}


def keras_reference(l3, cfg, signature, inputs):
    """What the Keras model gives for a signature's inputs: {output name: array}."""
    size, rate, samples = cfg.image_size, cfg.sample_rate, cfg.audio_samples
    if signature == "audio_embedding_file":
        return python_api_reference(l3, cfg, inputs["waveform"])
    if signature == "audio_embedding_file_bytes":
        return python_api_reference(l3, cfg, preprocess.decode_wav_file(inputs["audio_bytes"], rate))
    if "image" in inputs:
        image = preprocess.fit_images(inputs["image"], size)
    if "image_bytes" in inputs:
        image = preprocess.decode_images(inputs["image_bytes"], size)
    audio = tf.constant(inputs["audio"]) if "audio" in inputs else None
    if "audio_bytes" in inputs:
        audio = preprocess.decode_wav_windows(inputs["audio_bytes"], rate, samples)
    if signature.startswith("audio"):
        return {"embedding": models.audio_embedding_model(l3, cfg)(audio)}
    if signature.startswith("image"):
        return {"embedding": models.image_embedding_model(l3, cfg)(image)}
    return {"probability": l3({"image": image, "audio": audio})[:, 1]}


def real_inputs(cfg, fixtures):
    """Every signature's inputs from daisy.jpg and chirp_44k.wav (a 44.1 kHz WAV: resampled)."""
    jpeg = (fixtures / "daisy.jpg").read_bytes()
    wav = (fixtures / "chirp_44k.wav").read_bytes()
    image = tf.io.decode_jpeg(jpeg).numpy()[None]
    audio = preprocess.decode_wav_windows(np.array([wav], object), cfg.sample_rate, cfg.audio_samples)
    audio = audio.numpy()
    waveform = preprocess.decode_wav_file(wav, cfg.sample_rate).numpy()
    wav_file = np.array(wav, object)
    jpeg, wav = np.array([jpeg], object), np.array([wav], object)
    return {
        "audio_embedding_file": {"waveform": waveform},
        "audio_embedding_file_bytes": {"audio_bytes": wav_file},
        "audio_embedding": {"audio": audio},
        "audio_embedding_bytes": {"audio_bytes": wav},
        "image_embedding": {"image": image},
        "image_embedding_bytes": {"image_bytes": jpeg},
        "avc": {"image": image, "audio": audio},
        "serving_default": {"image": image, "audio": audio},
        "avc_bytes": {"image_bytes": jpeg, "audio_bytes": wav},
    }


def cli_run(version_dir, signature, inputs, tmp_path):
    """Runs `saved_model_cli run` on .npy files of `inputs`; returns {output name: array}."""
    args = []
    for key, value in inputs.items():
        np.save(tmp_path / f"{key}.npy", value, allow_pickle=True)
        args.append(f"{key}={tmp_path / key}.npy")
    out = tmp_path / f"out_{signature}"
    subprocess.run(
        [SAVED_MODEL_CLI, "run", "--dir", str(version_dir), "--tag_set", "serve",
         "--signature_def", signature, "--inputs", ";".join(args), "--outdir", str(out),
         "--overwrite"],
        check=True, capture_output=True,
    )
    return {p.stem: np.load(p) for p in out.glob("*.npy")}


def test_export_layout(tiny_export):
    _, cfg, folder = tiny_export
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "export.json", "l3.keras", "audio_embedding.keras",
            "image_embedding.keras", "models.config", "serving"} <= names
    assert export.read_config(folder) == cfg
    assert (folder / "serving/1/saved_model.pb").exists()
    assert (folder / "serving/1" / export.WARMUP).exists()
    assert 'base_path: "/models/tiny/serving"' in (folder / "models.config").read_text()
    info = json.loads((folder / "export.json").read_text())
    assert info["version"] == 1 and len(info["signatures"]) == 9
    assert info["file_signatures_hop_size"] == 0.1
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp folders


@pytest.mark.parametrize(
    "name",
    ["l3.keras",
     pytest.param("audio_embedding.keras", marks=pytest.mark.slow),
     pytest.param("image_embedding.keras", marks=pytest.mark.slow)],
)
def test_keras_files_reload_in_fresh_process(tiny_export, name, tmp_path):
    l3, cfg, folder = tiny_export
    x = random_inputs(cfg, batch=2, seed=3)
    model, inputs = {
        "l3.keras": (l3, x),
        "audio_embedding.keras": (models.audio_embedding_model(l3, cfg), x["audio"]),
        "image_embedding.keras": (models.image_embedding_model(l3, cfg), x["image"]),
    }[name]
    got = predict_in_fresh_process(folder / name, inputs, tmp_path)
    expected = as_list(model.predict(inputs, verbose=0))
    np.testing.assert_allclose(got[0], expected[0], **TOL)


def test_saved_model_cli_show_lists_signatures(tiny_export):
    _, cfg, folder = tiny_export
    text = subprocess.run(
        [SAVED_MODEL_CLI, "show", "--all", "--dir", str(folder / "serving/1")],
        check=True, capture_output=True, text=True,
    ).stdout
    s, d = cfg.audio_samples, cfg.embedding_dim
    expected = {
        "audio_embedding": ([("audio", "DT_FLOAT", f"(-1, {s})")], ("embedding", f"(-1, {d})")),
        "audio_embedding_bytes": ([("audio_bytes", "DT_STRING", "(-1)")], ("embedding", f"(-1, {d})")),
        "image_embedding": ([("image", "DT_UINT8", "(-1, -1, -1, 3)")], ("embedding", f"(-1, {d})")),
        "image_embedding_bytes": ([("image_bytes", "DT_STRING", "(-1)")], ("embedding", f"(-1, {d})")),
        "audio_embedding_file": ([("waveform", "DT_FLOAT", "(-1)")], ("embeddings", f"(-1, {d})")),
        "audio_embedding_file_bytes": ([("audio_bytes", "DT_STRING", "()")],
                                       ("embeddings", f"(-1, {d})")),
        "avc": ([("audio", "DT_FLOAT", f"(-1, {s})"), ("image", "DT_UINT8", "(-1, -1, -1, 3)")],
                ("probability", "(-1)")),
        "avc_bytes": ([("audio_bytes", "DT_STRING", "(-1)"), ("image_bytes", "DT_STRING", "(-1)")],
                      ("probability", "(-1)")),
    }
    expected["serving_default"] = expected["avc"]
    for name, (inputs, (output, out_shape)) in expected.items():
        block = text.split(f"signature_def['{name}']:")[1].split("signature_def[")[0]
        for key, dtype, shape in inputs:
            assert re.search(rf"inputs\['{key}'\].*?dtype: {dtype}\s+shape: {re.escape(shape)}\n",
                             block, re.S), (name, key)
        assert re.search(rf"outputs\['{output}'\].*?dtype: DT_FLOAT\s+shape: {re.escape(out_shape)}\n",
                         block, re.S), name


def _signature_inputs(cfg, name, real_media):
    if real_media is not None:
        return real_inputs(cfg, real_media / "fixtures/openl3")[name]
    return serving.warmup_inputs(cfg, batch=2, seed=5)[name]


@pytest.fixture
def maybe_real_media(request):
    """The real-media folder, or None (then synthetic inputs are used instead of skipping)."""
    try:
        return request.getfixturevalue("real_media")
    except pytest.skip.Exception:
        return None


def test_saved_model_cli_run_bytes_signature_matches_keras(tiny_export, maybe_real_media, tmp_path):
    l3, cfg, folder = tiny_export
    inputs = _signature_inputs(cfg, "avc_bytes", maybe_real_media)
    got = cli_run(folder / "serving/1", "avc_bytes", inputs, tmp_path)
    expected = keras_reference(l3, cfg, "avc_bytes", inputs)
    np.testing.assert_allclose(got["probability"], expected["probability"], **TOL)


@pytest.mark.slow
@pytest.mark.parametrize("signature", sorted(serving.warmup_inputs(get_preset("tiny"))))
def test_saved_model_cli_run_every_signature(tiny_export, signature, maybe_real_media, tmp_path):
    """Real JPEG / WAV files through every signature (synthetic inputs without ../shared)."""
    l3, cfg, folder = tiny_export
    inputs = _signature_inputs(cfg, signature, maybe_real_media)
    got = cli_run(folder / "serving/1", signature, inputs, tmp_path)
    for key, value in keras_reference(l3, cfg, signature, inputs).items():
        np.testing.assert_allclose(got[key], value, **TOL, err_msg=signature)


def test_warmup_requests_round_trip_through_saved_model(tiny_export):
    from tensorflow_serving.apis import prediction_log_pb2

    l3, cfg, folder = tiny_export
    loaded = tf.saved_model.load(str(folder / "serving/1"))
    seen = set()
    for record in tf.data.TFRecordDataset(str(folder / "serving/1" / export.WARMUP)):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        request = log.predict_log.request
        assert request.model_spec.name == "tiny"
        name = request.model_spec.signature_name
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        got = loaded.signatures[name](**{k: tf.constant(v) for k, v in inputs.items()})
        for key, value in keras_reference(l3, cfg, name, inputs).items():
            np.testing.assert_allclose(got[key], value, **TOL, err_msg=name)
        seen.add(name)
    assert seen == set(loaded.signatures)


def test_wrong_inputs_name_the_expected_input(tiny_export):
    _, cfg, folder = tiny_export
    fn = tf.saved_model.load(str(folder / "serving/1")).signatures["audio_embedding"]
    s = cfg.audio_samples
    # Raw loaded signature: wrong rank / length -> the in-graph check names the input and shape.
    for bad in (tf.zeros([2, 5]), tf.zeros([s]), tf.zeros([1, s, 1])):
        with pytest.raises(tf.errors.InvalidArgumentError, match=rf"input audio must be float32 \[batch, {s}\]"):
            fn(audio=bad)
    # Python-side API: L3Error before the graph runs, for dtype too.
    with pytest.raises(L3Error, match=rf"expects audio: float32 \[batch, {s}\]; got float64"):
        serving.call_signature(fn, "audio_embedding", audio=np.zeros([1, s]))
    with pytest.raises(L3Error, match=r"got float32 \[1, 5\]"):
        serving.call_signature(fn, "audio_embedding", audio=np.zeros([1, 5], np.float32))
    with pytest.raises(L3Error, match="takes audio: float32"):
        serving.call_signature(fn, "audio_embedding", image=np.zeros([1, s], np.float32))
    image_fn = tf.saved_model.load(str(folder / "serving/1")).signatures["image_embedding"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"input image must be uint8 \[batch, \?, \?, 3\]"):
        image_fn(image=tf.zeros([1, 8, 8, 4], tf.uint8))


def thirty_seconds(cfg, real_media):
    """30 s of real audio at the model's rate (Big Buck Bunny's soundtrack), else synthetic."""
    n = 30 * cfg.sample_rate
    if real_media is not None:
        x = embed_stream.decode_audio(real_media / "av-clips/moviepy/big_buck_bunny_0_30.webm",
                                      cfg.sample_rate)[:n]
        assert len(x) > n - cfg.sample_rate
        return x
    rng = np.random.default_rng(7)
    t = np.arange(n) / cfg.sample_rate
    return (0.3 * np.sin(2 * np.pi * 300 * t * (1 + t / 30)) + 0.05 * rng.standard_normal(n)).astype(np.float32)


def check_whole_file_signatures(l3, cfg, fns, waveform, hop_size):
    """The whole-file signatures (float and WAV bytes) == the Python API (<= 1e-4)."""
    expected = python_api_reference(l3, cfg, waveform, hop_size)
    got = serving.call_signature(fns["audio_embedding_file"], "audio_embedding_file", waveform=waveform)
    assert got["embeddings"].shape == expected["embeddings"].shape
    np.testing.assert_allclose(got["timestamps"], expected["timestamps"], atol=1e-9)
    np.testing.assert_allclose(got["embeddings"], expected["embeddings"], rtol=1e-4, atol=1e-4)
    # A WAV at the model's rate: the same windows, up to 16-bit quantisation on both sides.
    pcm = np.round(np.clip(waveform, -1, 1) * 32767).astype(np.int16)[:, None]
    wav = tf.audio.encode_wav(pcm.astype(np.float32) / 32768, cfg.sample_rate).numpy()
    got = serving.call_signature(fns["audio_embedding_file_bytes"], "audio_embedding_file_bytes",
                                 audio_bytes=np.array(wav, object))
    expected = python_api_reference(l3, cfg, pcm[:, 0], hop_size)  # int16 PCM: / 32768
    np.testing.assert_allclose(got["embeddings"], expected["embeddings"], rtol=1e-4, atol=1e-4)


def test_whole_file_signatures_equal_the_python_api(tiny_export, maybe_real_media):
    l3, cfg, folder = tiny_export
    fns = tf.saved_model.load(str(folder / "serving/1")).signatures
    check_whole_file_signatures(l3, cfg, fns, thirty_seconds(cfg, maybe_real_media), 0.1)


def test_whole_file_signatures_short_empty_and_other_rates(tiny_export):
    l3, cfg, folder = tiny_export
    fns = tf.saved_model.load(str(folder / "serving/1")).signatures
    short = fns["audio_embedding_file"](waveform=tf.ones([5]) * 0.1)
    assert short["embeddings"].shape == (1, cfg.embedding_dim) and short["timestamps"].numpy().tolist() == [0.0]
    with pytest.raises(tf.errors.InvalidArgumentError, match="waveform is empty"):
        fns["audio_embedding_file"](waveform=tf.zeros([0]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="input waveform must be float32"):
        fns["audio_embedding_file"](waveform=tf.zeros([2, 3]))
    empty = tf.audio.encode_wav(tf.zeros([0, 1]), 16000)
    with pytest.raises(tf.errors.InvalidArgumentError, match="WAV file has no samples"):
        fns["audio_embedding_file_bytes"](audio_bytes=empty)
    # 2.5 s stereo at 44.1 kHz: down-mixed and resampled in the graph (FFT) vs soxr in Python.
    t = np.arange(int(2.5 * 44100)) / 44100
    stereo = np.stack([0.4 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 1234 * t)], 1)
    wav = tf.audio.encode_wav(stereo.astype(np.float32), 44100)
    got = fns["audio_embedding_file_bytes"](audio_bytes=wav)
    towers = embed.EmbeddingModels.from_l3(l3, cfg)
    emb, ts = embed.get_audio_embedding(tf.audio.decode_wav(wav)[0].numpy(), 44100, towers)
    np.testing.assert_allclose(got["timestamps"], ts, atol=1e-9)
    # Two resamplers (FFT in the graph, soxr in Python): close, not equal (rows agree to ~0.3 %).
    rel = np.linalg.norm(got["embeddings"] - emb, axis=1) / np.linalg.norm(emb, axis=1)
    assert rel.max() < 0.02, rel


@pytest.mark.slow
def test_paper_whole_file_signature_equals_the_python_api(tmp_path, maybe_real_media):
    """Paper preset, 30 s; a 1 s hop (31 windows) keeps this about a minute on 2 CPU cores."""
    cfg = get_preset("paper")
    l3 = models.build_l3(cfg)
    path = tmp_path / "serving"
    serving.save(l3, cfg, path, hop_size=1.0, batch_size=8)
    text = subprocess.run([SAVED_MODEL_CLI, "show", "--dir", str(path), "--tag_set", "serve",
                           "--signature_def", "audio_embedding_file"],
                          check=True, capture_output=True, text=True).stdout
    assert re.search(r"inputs\['waveform'\].*?shape: \(-1\)", text, re.S), text
    assert re.search(r"outputs\['timestamps'\].*?DT_DOUBLE", text, re.S), text
    fns = tf.saved_model.load(str(path)).signatures
    check_whole_file_signatures(l3, cfg, fns, thirty_seconds(cfg, maybe_real_media)[: 30 * 48000], 1.0)


def test_tflite_embeddings_match_keras(maybe_real_media, tmp_path, capsys):
    """`l3 export --tflite`: both towers as .tflite vs Keras on real files (synthetic without
    ../shared); the max differences are printed."""
    from l3_keras.export_tflite import FILES, run_tflite

    cfg = get_preset("tiny")
    l3 = make_run_dir(tmp_path / "run", cfg)
    args = ["export", str(tmp_path / "run"), "--name", "t", "--root", str(tmp_path), "--tflite"]
    assert main(args) == 0
    folder = tmp_path / "t"
    inputs = _signature_inputs(cfg, "audio_embedding", maybe_real_media)["audio"]
    images = _signature_inputs(cfg, "image_embedding", maybe_real_media)["image"]
    checks = {"audio": (models.audio_embedding_model(l3, cfg), inputs),
              "image": (models.image_embedding_model(l3, cfg), preprocess.fit_images(images, cfg.image_size).numpy())}
    for kind, (model, x) in checks.items():
        got = run_tflite(folder / FILES[kind], x)
        expected = np.asarray(model(x))
        with capsys.disabled():
            print(f"tflite {kind}: max abs diff {np.abs(got - expected).max():.2e} "
                  f"(values up to {np.abs(expected).max():.2f})")
        # Audio: TFLite's RFFT and XNNPACK kernels round differently, and the log-mel front end
        # magnifies that in quiet bins (measured ~2e-3 on values up to ~6).
        tol = 5e-3 if kind == "audio" else 1e-4
        np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)


def test_export_is_atomic_and_versioned(tiny_export, tmp_path, monkeypatch):
    l3, cfg, folder = tiny_export
    with pytest.raises(L3Error, match="exists"):
        export.export(folder.parent.parent / "run", "tiny", version=1, root=folder.parent)

    def crash(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(serving, "save", crash)
    with pytest.raises(RuntimeError):
        export.export(folder, "again", root=tmp_path)
    assert list(tmp_path.iterdir()) == []  # neither a half export nor its temp folder


def test_bad_sources_raise_l3error(tmp_path):
    with pytest.raises(L3Error, match="not a run folder"):
        export.load_source(tmp_path / "missing.keras")
    with pytest.raises(L3Error, match="neither"):
        export.load_source(tmp_path)
    models.build_l3(get_preset("tiny")).save(tmp_path / "m.keras")
    with pytest.raises(L3Error, match="--preset"):
        export.load_source(tmp_path / "m.keras")
    with pytest.raises(L3Error, match="--preset"):
        export.load_source(tmp_path / "m.keras", preset="paper")  # shapes do not fit
    with pytest.raises(L3Error, match="plain folder name"):
        export.export(tmp_path / "m.keras", "../x", preset="tiny", root=tmp_path)


def test_preprocess_fits_images_and_resamples():
    image = np.random.default_rng(0).integers(0, 256, (30, 50, 3), np.uint8)
    x = preprocess.fit_images(image[None], (16, 16)).numpy()
    assert x.shape == (1, 16, 16, 3) and 0 <= x.min() and x.max() <= 1
    same = preprocess.fit_images(image[None], (30, 50)).numpy()[0]
    np.testing.assert_allclose(same, image / 255.0, atol=1e-6)  # already the right size: unchanged
    t = np.arange(441) / 44100.0
    tone = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    got = preprocess.resample_fft(tone, 480).numpy()
    np.testing.assert_allclose(got, scipy.signal.resample(tone, 480), atol=1e-4)


@pytest.mark.slow
def test_paper_export_cli_run(tmp_path):
    cfg = get_preset("paper")
    l3 = make_run_dir(tmp_path / "run", cfg)
    folder = export.export(tmp_path / "run", "paper", root=tmp_path / "saved_models")
    inputs = serving.warmup_inputs(cfg, batch=1)["avc"]
    got = cli_run(folder / "serving/1", "avc", inputs, tmp_path)
    expected = keras_reference(l3, cfg, "avc", inputs)
    np.testing.assert_allclose(got["probability"], expected["probability"], **TOL)


# ----------------------------------------------------------------------------------------------
# Independent oracles: PIL for images, soundfile + soxr for WAV bytes


def pil_fit(image, size):
    """float32 [h, w, 3] in [0, 1]: PIL bilinear resize (per channel, in float) to cover `size`,
    then the central crop: the serving convention, computed without TensorFlow."""
    h, w = image.shape[:2]
    th, tw = size
    scale = max(th / h, tw / w)
    nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
    channels = [np.asarray(Image.fromarray(image[..., c].astype(np.float32)).resize((nw, nh), Image.BILINEAR))
                for c in range(3)]
    top, left = (nh - th) // 2, (nw - tw) // 2
    return np.stack(channels, -1)[top : top + th, left : left + tw] / 255.0


def smooth_image(h, w, seed=0):
    """uint8 [h, w, 3] with structure at several scales (noise upsampled), not flat."""
    noise = np.random.default_rng(seed).integers(0, 256, (max(2, h // 4), max(2, w // 4), 3), np.uint8)
    return np.asarray(Image.fromarray(noise).resize((w, h), Image.BILINEAR))


@pytest.mark.parametrize("shape", [(100, 150), (30, 50), (200, 90), (64, 64)])
def test_fit_images_and_png_decoding_match_pil(shape):
    image = smooth_image(*shape)
    expected = pil_fit(image, (64, 64))
    np.testing.assert_allclose(preprocess.fit_images(image[None], (64, 64))[0], expected, atol=1e-5)
    png = tf.io.encode_png(image).numpy()
    np.testing.assert_allclose(preprocess.decode_images(tf.constant([png]), (64, 64))[0], expected,
                               atol=1e-5)


def test_image_bytes_signatures_match_pil(tiny_export):
    """PNG bytes through the SavedModel vs the Keras tower on a PIL-resized image; JPEG bytes
    through the graph's preprocessing vs PIL resizing of the same decoded pixels (JPEG decoders
    themselves differ: PIL's and TensorFlow's by up to 12 / 255 on this image)."""
    l3, cfg, folder = tiny_export
    sig = tf.saved_model.load(str(folder / "serving/1")).signatures["image_embedding_bytes"]
    tower = models.image_embedding_model(l3, cfg)
    image = smooth_image(90, 120, seed=3)
    png = tf.io.encode_png(image).numpy()
    got = sig(image_bytes=tf.constant([png]))["embedding"].numpy()
    np.testing.assert_allclose(got, tower(pil_fit(image, cfg.image_size)[None]).numpy(), **TOL)
    jpeg = tf.io.encode_jpeg(image, quality=95).numpy()
    decoded = tf.io.decode_jpeg(jpeg).numpy()
    ours = preprocess.decode_images(tf.constant([jpeg]), cfg.image_size)[0].numpy()
    np.testing.assert_allclose(ours, pil_fit(decoded, cfg.image_size), atol=1e-5)


def wav_bytes(seconds, sr, channels):
    """16-bit WAV: a 440 Hz tone plus a rising 3 kHz sweep, the second channel at half level."""
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3000 * t * (1 + 0.1 * t))
    x = np.stack([x, 0.5 * x], axis=1)[:, :channels]
    buffer = io.BytesIO()
    soundfile.write(buffer, x.astype(np.float32), sr, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def soxr_window(data, cfg):
    """The first window of a WAV file as the signatures define it, by soundfile + soxr."""
    x, sr = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    x = x.mean(axis=1)[:sr]
    x = np.pad(x, (0, sr - len(x)))
    return soxr.resample(x, sr, cfg.sample_rate, quality="HQ").astype(np.float32)[: cfg.audio_samples]


# (rate, channels, embedding tolerance relative to its largest value). FFT resampling (the graph)
# and soxr agree to 1e-5 inside the window; they differ within ~25 ms of its ends (FFT resampling
# treats the window as periodic), which moves the embedding by 0.3% (44.1, 22.05 kHz) and 2.4%
# (8 kHz, upsampled) of its scale.
WAV_CASES = [(44100, 2, 0.01), (22050, 2, 0.01), (8000, 1, 0.04)]


@pytest.mark.parametrize("sr,channels,rel", WAV_CASES)
def test_wav_bytes_signature_matches_soundfile_and_soxr(tiny_export, sr, channels, rel):
    """In-graph decoding, down-mixing and resampling (`audio_embedding_bytes`) vs soundfile + soxr."""
    l3, cfg, folder = tiny_export
    data = wav_bytes(1.5, sr, channels)
    reference = soxr_window(data, cfg)
    window = preprocess.decode_wav_windows(tf.constant([data]), cfg.sample_rate, cfg.audio_samples)
    edge = cfg.sample_rate // 40  # 25 ms
    np.testing.assert_allclose(window[0, edge:-edge], reference[edge:-edge], atol=1e-3)
    sig = tf.saved_model.load(str(folder / "serving/1")).signatures["audio_embedding_bytes"]
    got = sig(audio_bytes=tf.constant([data]))["embedding"].numpy()
    expected = models.audio_embedding_model(l3, cfg)(reference[None]).numpy()
    assert np.abs(got - expected).max() <= rel * np.abs(expected).max()


def test_audio_embedding_bytes_agrees_with_the_python_api_on_44k_stereo(tiny_export):
    """README: a 44.1 kHz stereo WAV sent as bytes embeds like `embed.get_audio_embedding` of the
    same file (first window, center=False)."""
    l3, cfg, folder = tiny_export
    data = wav_bytes(1.5, 44100, 2)
    sig = tf.saved_model.load(str(folder / "serving/1")).signatures["audio_embedding_bytes"]
    got = sig(audio_bytes=tf.constant([data]))["embedding"].numpy()[0]
    audio, sr = soundfile.read(io.BytesIO(data), dtype="float32")
    api, ts = embed.get_audio_embedding(audio, sr, embed.EmbeddingModels.from_l3(l3, cfg), center=False)
    assert ts[0] == 0.5 and audio.shape[1] == 2
    assert np.abs(got - api[0]).max() <= 0.01 * np.abs(api[0]).max()


@pytest.mark.slow  # two training runs / two exports
def test_exporting_again_adds_a_version_and_keeps_the_older(tiny_export, tmp_path):
    """README: a second export under the same name is version 2; version 1 stays as it was."""
    l3, cfg, folder = tiny_export
    root = tmp_path / "saved_models"
    first = export.export(folder.parent.parent / "run", "again", root=root)
    v1 = (first / "serving/1/saved_model.pb").read_bytes()
    second = export.export(folder.parent.parent / "run", "again", root=root)
    assert second == first
    assert sorted(p.name for p in (first / "serving").iterdir()) == ["1", "2"]
    assert (first / "serving/1/saved_model.pb").read_bytes() == v1
    assert json.loads((first / "export.json").read_text())["version"] == 2
    loaded = tf.saved_model.load(str(first / "serving/2"))
    assert set(loaded.signatures) == set(tf.saved_model.load(str(first / "serving/1")).signatures)


@pytest.mark.slow  # two exports
def test_exporting_a_partial_export_again_keeps_its_parts_and_provenance(tiny_export, tmp_path):
    """An export without a trained AVC head (as an OpenL3 import) must not regain avc signatures."""
    l3, cfg, _ = tiny_export
    root = tmp_path / "saved_models"
    first = export.write_export(l3, cfg, "partial", source="weights.h5", root=root,
                                info={"openl3": {"sha256": "abc"}}, parts=("audio", "image"))
    again = export.export(first, "again", root=root)
    info = json.loads((again / "export.json").read_text())
    assert info["parts"] == ["audio", "image"]
    assert info["openl3"] == {"sha256": "abc"}
    assert info["source"] == str(first)
    signatures = set(tf.saved_model.load(str(again / "serving/1")).signatures)
    assert not any(s.startswith("avc") for s in signatures), signatures
    assert signatures == set(tf.saved_model.load(str(first / "serving/1")).signatures)
