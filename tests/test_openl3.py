"""OpenL3's weights in our towers: parity with OpenL3's own code, the importer's checks, the export.

Reference embeddings: tests/data/openl3_embeddings.npz, written by scripts/make_openl3_fixtures.py
with OpenL3 v0.4.2's code (oracle venv) from the seeded weight files that `openl3_fixtures`
re-creates here. Tolerance: max |ours - OpenL3| <= 1e-4 x max |OpenL3| per model and size.
"""
import gzip
import json
import os
import pathlib
import shutil
import subprocess
import sys

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from l3_keras import cli, embed, models, openl3_import, openl3_weights
from l3_keras.audio import slaney_mel_filterbank, spectrogram_shape
from l3_keras.config import get_preset
from l3_keras.errors import L3Error
from tests import openl3_fixtures as fx
from tests.helpers import predict_in_fresh_process

RTOL = 1e-4
REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def oracle():
    return dict(np.load(fx.FIXTURES))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return tmp_path_factory.mktemp("openl3_weights")


def relative_error(ours, theirs):
    return float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))


def audio_inputs(media):
    return {"noise": fx.noise_audio(), **(fx.real_audio(media) if media else {})}


def media_or_none():
    from tests.conftest import real_media_root

    root = real_media_root()
    return root if (root / "README.md").exists() else None


SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    "input_repr", ["mel128", pytest.param("linear", marks=SLOW), pytest.param("mel256", marks=SLOW)]
)
def test_audio_import_matches_openl3(input_repr, oracle, weights):
    """512-D (global max) and 6144-D (4x3 grid) embeddings and timestamps equal OpenL3's."""
    l3, cfg = openl3_import.build_openl3(fx.weight_file(weights, "audio", input_repr))
    media = media_or_none()
    base = embed.EmbeddingModels.from_l3(l3, cfg)
    transfer = embed.EmbeddingModels.from_l3(l3, cfg, transfer_features=True)
    errors = {}
    for name, audio in audio_inputs(media).items():
        emb, ts = embed.get_audio_embedding(audio, 48000, base, hop_size=fx.HOP)
        np.testing.assert_allclose(ts, oracle[f"timestamps/{name}"])
        errors[f"512/{name}"] = relative_error(emb, oracle[f"audio/{input_repr}/512/{name}"])
        big, _ = embed.get_audio_embedding(audio[:24000], 48000, transfer, hop_size=fx.HOP,
                                           transfer_features=True)
        assert big.shape == (1, 6144)
        errors[f"6144/{name}"] = relative_error(big, oracle[f"audio/{input_repr}/6144/{name}"])
    print(input_repr, errors)
    assert max(errors.values()) <= RTOL, errors


def image_inputs():
    media = media_or_none()
    return {"noise": fx.noise_image(), **(fx.real_images(media) if media else {})}


def test_image_import_matches_openl3(oracle, weights):
    """OpenL3's image network (input BN, ReLU before BN in block 1): 512-D and 8192-D (4x4 grid)."""
    l3, cfg = openl3_import.build_openl3(
        fx.weight_file(weights, "audio", "mel128"), fx.weight_file(weights, "image", fx.IMAGE_REPR)
    )
    images = image_inputs()
    transfer = embed.EmbeddingModels.from_l3(l3, cfg, transfer_features=True)
    small = embed.get_image_embedding(list(images.values()), embed.EmbeddingModels.from_l3(l3, cfg))
    big = embed.get_image_embedding(list(images.values()), transfer, transfer_features=True)
    errors = {}
    for k, name in enumerate(images):
        errors[f"512/{name}"] = relative_error(small[k], oracle[f"image/512/{name}"])
        errors[f"8192/{name}"] = relative_error(big[k], oracle[f"image/8192/{name}"])
    print(errors)
    assert big.shape[1] == 8192
    assert max(errors.values()) <= RTOL, errors


# OpenL3 v0.4.2's networks, counted with its own code (oracle venv): model.count_params() and
# the output shape of the last conv (its 'audio_embedding_layer' / 'vision_embedding_layer').
OPENL3_PARAMS = {"audio": 4_689_860, "vision": 4_691_020}
OPENL3_LAST_MAP = {"linear": (32, 24), "mel128": (16, 24), "mel256": (32, 24), "vision": (28, 28)}
SPECTROGRAMS = {"linear": (257, 197), "mel128": (128, 199), "mel256": (256, 199)}


@pytest.mark.parametrize("input_repr", fx.AUDIO_REPRS)
def test_openl3_topology(input_repr):
    """The presets hold exactly OpenL3's weights and map sizes; the last conv is linear."""
    cfg = get_preset(f"openl3-{input_repr}")
    assert spectrogram_shape(cfg) == SPECTROGRAMS[input_repr]
    for prefix, build in (("audio", models.build_audio_tower), ("vision", models.build_vision_tower)):
        tower = build(cfg)
        plan = openl3_weights.openl3_plan(cfg, prefix)
        assert tower.count_params() == sum(int(np.prod(s)) for p in plan for s in p.shapes)
        assert tower.count_params() == OPENL3_PARAMS[prefix]
        last = tower.get_layer(models.last_conv_name(cfg, prefix))
        assert isinstance(last, keras.layers.Conv2D)
        grid = OPENL3_LAST_MAP[input_repr if prefix == "audio" else prefix]
        assert tuple(last.output.shape[1:]) == (*grid, 512)


def test_mel_filterbank_matches_librosa():
    """kapre's filterbank is librosa.filters.mel(htk=False, norm="slaney") in float32."""
    librosa = pytest.importorskip("librosa")
    for n_mels in (128, 256):
        ours = slaney_mel_filterbank(48000, 2048, n_mels)
        theirs = librosa.filters.mel(sr=48000, n_fft=2048, n_mels=n_mels).T.astype(np.float32)
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-9)


def _copy_layers(src, dst, drop=None, reshape=None):
    """Rewrites an OpenL3 file without layer `drop` or with a wrongly shaped kernel in `reshape`."""
    with h5py.File(src, "r") as f, h5py.File(dst, "w") as g:
        names = [n for n in f.attrs["layer_names"] if n.decode() != drop]
        g.attrs["layer_names"] = np.asarray(names)
        for n in names:
            f.copy(f[n.decode()], g, name=n.decode())
        if reshape:
            group = g[reshape]
            key = [w for w in group.attrs["weight_names"] if w.decode().endswith("kernel:0")][0].decode()
            kernel = group[key][()]
            del group[key]
            group.create_dataset(key, data=kernel[:, :, :, :-1])


def test_bad_weight_files_are_refused_with_the_reason(weights, tmp_path):
    good = fx.weight_file(weights, "audio", "mel128")
    image = fx.weight_file(weights, "image", fx.IMAGE_REPR)
    truncated = tmp_path / "openl3_audio_mel128_music.h5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(L3Error, match="truncated or corrupt"):
        openl3_import.build_openl3(truncated)
    missing_layer = tmp_path / "dropped" / "openl3_audio_mel128_music.h5"
    missing_layer.parent.mkdir()
    _copy_layers(good, missing_layer, drop="batch_normalization_3")
    with pytest.raises(L3Error, match="has 15 layers with weights; OpenL3's audio network has 16"):
        openl3_import.build_openl3(missing_layer)
    wrong_shape = tmp_path / "shape" / "openl3_audio_mel128_music.h5"
    wrong_shape.parent.mkdir()
    _copy_layers(good, wrong_shape, reshape="conv2d_2")
    with pytest.raises(L3Error, match=r"layer 3 \('conv2d_2'\) has shapes .*audio_block1_conv2 needs"):
        openl3_import.build_openl3(wrong_shape)
    with pytest.raises(L3Error, match="holds OpenL3's image network"):
        openl3_import.build_openl3(image, input_repr="mel128")
    with pytest.raises(L3Error, match="Cannot tell the model from the file name"):
        openl3_import.import_openl3(tmp_path / "weights.h5", "x", root=tmp_path)
    unpaired = tmp_path / "openl3_image_mel256_env.h5"
    shutil.copy(image, unpaired)
    with pytest.raises(L3Error, match="come from different OpenL3 models"):
        openl3_import.import_openl3(good, "x", image_weights=unpaired, root=tmp_path)
    bad_gz = tmp_path / "openl3_audio_mel128_music.h5.gz"
    bad_gz.write_bytes(gzip.compress(good.read_bytes())[:5000])
    with pytest.raises(L3Error, match="truncated or corrupt"):
        openl3_import.build_openl3(bad_gz)
    # A bad image file after a good audio one: nothing is written.
    rc = cli.main(["import-openl3", str(good), "--image", str(truncated), "--name", "bad",
                   "--root", str(tmp_path / "exports")])
    assert rc == 2
    assert not (tmp_path / "exports").exists() or not any((tmp_path / "exports").iterdir())


@pytest.mark.slow
def test_import_openl3_export_matches_openl3(oracle, weights, tmp_path):
    """`l3 import-openl3` (gzipped weights): .keras files in a fresh process and the SavedModel
    signatures reproduce OpenL3's embeddings; export.json records the files and their SHA-256."""
    audio_h5 = fx.weight_file(weights, "audio", "mel128")
    gz = tmp_path / (audio_h5.name + ".gz")
    gz.write_bytes(gzip.compress(audio_h5.read_bytes()))
    image_h5 = fx.weight_file(weights, "image", "mel128")  # the fixtures' image weights, paired
    rc = cli.main(["import-openl3", str(gz), "--image", str(image_h5), "--name", "openl3_mel128",
                   "--root", str(tmp_path / "exports"), "--hop-size", str(fx.HOP)])
    assert rc == 0
    folder = tmp_path / "exports" / "openl3_mel128"
    info = json.loads((folder / "export.json").read_text())
    assert info["openl3"]["input_repr"] == "mel128" and info["openl3"]["content_type"] == "music"
    assert info["openl3"]["files"]["audio"]["sha256"] == openl3_import.sha256(gz)
    assert info["untrained"] == ["fusion"]
    # OpenL3 has no AVC head: embedding signatures only, each with a warm-up request.
    served = sorted(row["name"] for row in info["signatures"])
    assert served == ["audio_embedding", "audio_embedding_bytes", "audio_embedding_file",
                      "audio_embedding_file_bytes", "image_embedding", "image_embedding_bytes",
                      "serving_default"]
    warmup = folder / "serving" / "1" / "assets.extra" / "tf_serving_warmup_requests"
    assert sum(1 for _ in tf.data.TFRecordDataset(str(warmup))) == 7

    cfg = get_preset("openl3-mel128")
    windows, _ = embed.frame_audio(fx.noise_audio(), cfg, fx.HOP, center=True)
    windows = np.ascontiguousarray(windows)
    images = np.stack(list(image_inputs().values()))
    want_audio = oracle["audio/mel128/512/noise"]
    want_image = np.stack([oracle[f"image/512/{n}"] for n in image_inputs()])
    # The audio .keras holds our DecibelSpectrogram layer: it loads after `import l3_keras`.
    (got,) = predict_in_fresh_process(folder / "audio_embedding.keras", windows, tmp_path, True)
    assert relative_error(got, want_audio) <= RTOL
    (got,) = predict_in_fresh_process(folder / "image_embedding.keras", images / np.float32(255),
                                      tmp_path)
    assert relative_error(got, want_image) <= RTOL
    # The SavedModel needs nothing of ours (checked in a process without l3_keras by
    # test_export.py's saved_model_cli test for our own models; here: its signatures' numbers).
    sigs = tf.saved_model.load(str(folder / "serving" / "1")).signatures
    got = sigs["audio_embedding"](audio=tf.constant(windows))["embedding"].numpy()
    assert relative_error(got, want_audio) <= RTOL
    got = sigs["image_embedding"](image=tf.constant(images))["embedding"].numpy()
    assert relative_error(got, want_image) <= RTOL
    # The whole-file signature frames a waveform of any length as OpenL3 does (hop from the CLI).
    got = sigs["audio_embedding_file"](waveform=tf.constant(fx.noise_audio()))
    np.testing.assert_allclose(got["timestamps"].numpy(), oracle["timestamps/noise"])
    assert relative_error(got["embeddings"].numpy(), want_audio) <= RTOL
    # The embedding API reads the export's OpenL3 framing.
    emb, ts = embed.get_audio_embedding(fx.noise_audio(), 48000, str(folder), hop_size=fx.HOP)
    np.testing.assert_allclose(ts, oracle["timestamps/noise"])
    assert relative_error(emb, want_audio) <= RTOL


ORACLE_PYTHON = os.environ.get("L3_OPENL3_ORACLE_PYTHON", "/tmp/openl3-oracle/bin/python")
ORACLE_SOURCE = REPO.parent / "shared" / "oracles" / "openl3"


@pytest.mark.slow
def test_live_openl3_matches(weights, tmp_path):
    """OpenL3's own code, run now in its venv (built if registries are reachable), on one model."""
    if not ORACLE_SOURCE.is_dir():
        pytest.skip(f"OpenL3's source not found at {ORACLE_SOURCE}")
    python = pathlib.Path(ORACLE_PYTHON)
    if not python.exists():
        venv = python.parents[1]
        made = subprocess.run(
            f"{sys.executable} -m venv {venv} && {venv}/bin/pip install -q 'tensorflow-cpu==2.20.*' "
            "'kapre==0.3.7' h5py resampy soundfile scikit-learn", shell=True, capture_output=True,
            text=True,
        )
        if made.returncode != 0:
            pytest.skip(f"cannot build the OpenL3 venv at {venv}: {made.stderr[-300:]}")
    ready = subprocess.run([str(python), "-c", "import kapre, h5py, resampy, sklearn"],
                           capture_output=True, text=True)
    if ready.returncode != 0:
        pytest.skip(f"the OpenL3 venv of {python} is incomplete: {ready.stderr[-300:]}")
    out = tmp_path / "live.npz"
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_openl3_fixtures.py"),
                    "--oracle-python", str(python), "--openl3", str(ORACLE_SOURCE),
                    "--reprs", "mel128", "--noise-only", "--out", str(out)], check=True)
    live = dict(np.load(out))
    l3, cfg = openl3_import.build_openl3(fx.weight_file(weights, "audio", "mel128"))
    emb, ts = embed.get_audio_embedding(fx.noise_audio(), 48000, embed.EmbeddingModels.from_l3(l3, cfg),
                                        hop_size=fx.HOP)
    np.testing.assert_allclose(ts, live["timestamps/noise"])
    assert relative_error(emb, live["audio/mel128/512/noise"]) <= RTOL


@pytest.mark.slow
def test_audio_only_import_serves_audio_only(weights, tmp_path):
    """Without --image: no image tower anywhere (files, signatures, embedding API)."""
    folder = openl3_import.import_openl3(fx.weight_file(weights, "audio", "mel128"), "a",
                                         root=tmp_path)
    info = json.loads((folder / "export.json").read_text())
    assert sorted(r["name"] for r in info["signatures"]) == [
        "audio_embedding", "audio_embedding_bytes", "audio_embedding_file",
        "audio_embedding_file_bytes", "serving_default"]
    assert info["untrained"] == ["fusion", "vision"]
    assert not (folder / "image_embedding.keras").exists()
    with pytest.raises(L3Error, match="no image tower"):
        embed.get_image_embedding(fx.noise_image(), str(folder))
    emb, _ = embed.get_audio_embedding(fx.noise_audio(), 48000, str(folder), hop_size=fx.HOP)
    assert emb.shape == (3, 512)


@pytest.mark.slow
def test_openl3_tflite_matches_keras(weights, tmp_path):
    """OpenL3's towers (our dB front-end layer included) convert to builtin-op TFLite."""
    from l3_keras import export_tflite

    l3, cfg = openl3_import.build_openl3(fx.weight_file(weights, "audio", "mel128"),
                                         fx.weight_file(weights, "image", "mel128"))
    paths = export_tflite.write_tflite(l3, cfg, tmp_path, ("audio", "image"))
    towers = embed.EmbeddingModels.from_l3(l3, cfg)
    windows, _ = embed.frame_audio(fx.noise_audio(), cfg, fx.HOP, center=True)
    windows = np.ascontiguousarray(windows)
    images = embed.prepare_images(fx.noise_image(), cfg)
    for kind, x in (("audio", windows), ("image", images)):
        want = getattr(towers, kind).predict(x, verbose=0)
        got = export_tflite.run_tflite(paths[kind], x)
        print(f"OpenL3 mel128 {kind} TFLite vs Keras: {relative_error(got, want):.1e}")
        assert relative_error(got, want) <= 1e-4, kind
