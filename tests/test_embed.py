"""Embedding API and `l3 embed`: time axis, edge cases (empty, short, silence, stereo, odd rates,
any image size, grayscale / RGBA), batching, and the per-file CLI. Tiny preset, random weights."""
import json

import keras
import numpy as np
import pytest

from l3_keras import embed, models
from l3_keras.cli import main
from l3_keras.config import get_preset
from l3_keras.errors import L3Error

TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def tiny():
    cfg = get_preset("tiny")
    keras.utils.set_random_seed(0)  # tolerances below were measured on these weights
    return embed.EmbeddingModels.from_l3(models.build_l3(cfg), cfg)


@pytest.fixture(scope="module")
def export_dir(tiny, tmp_path_factory):
    """The parts of an export that `load_embedding_models` reads (no SavedModel: fast)."""
    path = tmp_path_factory.mktemp("saved_models") / "tiny"
    path.mkdir()
    (path / "config.json").write_text(tiny.config.to_json())
    tiny.audio.save(path / "audio_embedding.keras")
    tiny.image.save(path / "image_embedding.keras")
    return path


def tone(seconds, sr, freq=440.0, channels=None):
    t = np.arange(int(round(seconds * sr))) / sr
    x = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return x if channels is None else np.stack([x] * channels, axis=1)


def test_audio_windows_share_the_video_time_axis(tiny):
    emb, ts = embed.get_audio_embedding(tone(2.05, 16000), 16000, tiny, hop_size=0.1)
    assert emb.shape == (21, tiny.config.embedding_dim)  # 1 + floor(2.05 / 0.1)
    np.testing.assert_allclose(ts, np.arange(21) * 0.1, atol=1e-9)  # window centres
    emb, ts = embed.get_audio_embedding(tone(2.05, 16000), 16000, tiny, hop_size=0.5, center=False)
    np.testing.assert_allclose(ts, [0.5, 1.0, 1.5], atol=1e-9)  # 1 + floor(1.05 / 0.5) windows


def test_empty_audio_is_a_clear_error(tiny):
    with pytest.raises(L3Error, match="empty"):
        embed.get_audio_embedding(np.zeros(0, np.float32), 16000, tiny)


@pytest.mark.parametrize("center", [True, False])
def test_short_audio_is_one_zero_padded_window(tiny, center):
    emb, ts = embed.get_audio_embedding(tone(0.01, 16000), 16000, tiny, center=center)
    assert emb.shape == (1, tiny.config.embedding_dim)
    assert ts.tolist() == [0.0 if center else 0.5]
    windows, _ = embed.frame_audio(tone(0.01, 16000), tiny.config, 0.1, center)
    assert windows.shape == (1, 16000) and not windows[0, 8160:].any()


def test_silence_is_finite(tiny):
    emb, _ = embed.get_audio_embedding(np.zeros(16000 * 2, np.float32), 16000, tiny)
    assert np.isfinite(emb).all()


def test_stereo_and_int16_are_down_mixed(tiny):
    mono, _ = embed.get_audio_embedding(tone(1.2, 16000), 16000, tiny)
    stereo, _ = embed.get_audio_embedding(tone(1.2, 16000, channels=2), 16000, tiny)
    np.testing.assert_allclose(stereo, mono, **TOL)
    pcm = np.round(tone(1.2, 16000, channels=2) * 32767).astype(np.int16)
    from_int = embed.prepare_audio(pcm, 16000, tiny.config)
    np.testing.assert_allclose(from_int, tone(1.2, 16000), atol=2 / 32768)


@pytest.mark.parametrize("sr", [8000, 44100])
def test_other_rates_are_resampled_onto_the_same_axis(tiny, sr):
    """The same 440 Hz tone recorded at another rate embeds like the 16 kHz recording; at 44.1 kHz
    it carries a 12 kHz tone above the model's Nyquist, which band-limited resampling removes and
    a naive one folds down to 4 kHz. Measured: within 1.4% of the embedding's scale (soxr), 9-43%
    (linear interpolation)."""
    x = tone(1.5, sr) + (0.5 * tone(1.5, sr, 12000.0) if sr > 16000 else 0)
    emb, ts = embed.get_audio_embedding(x, sr, tiny)
    ref, ref_ts = embed.get_audio_embedding(tone(1.5, 16000), 16000, tiny)
    assert emb.shape == ref.shape
    np.testing.assert_allclose(ts, ref_ts)
    assert np.abs(emb - ref).max() <= 0.03 * np.abs(ref).max()


def test_batched_calls_equal_single_calls_paper():
    cfg = get_preset("paper")
    paper = embed.EmbeddingModels.from_l3(models.build_l3(cfg), cfg)
    clips = [tone(1.0, 48000), tone(1.5, 44100, 880.0, channels=2)]  # 1 + 2 windows
    kwargs = dict(model=paper, hop_size=0.5, center=False)
    batched, _ = embed.get_audio_embedding(clips, [48000, 44100], batch_size=2, **kwargs)
    for clip, sr, got in zip(clips, [48000, 44100], batched):
        single, _ = embed.get_audio_embedding(clip, sr, batch_size=1, **kwargs)
        np.testing.assert_allclose(got, single, **TOL)
    images = [np.full((100, 120, 3), 200, np.uint8), np.zeros((300, 200), np.uint8)]
    together = embed.get_image_embedding(images, paper, batch_size=2)
    for image, got in zip(images, together):
        np.testing.assert_allclose(got, embed.get_image_embedding(image, paper)[0], **TOL)


def test_batched_calls_equal_single_calls_mel(tiny):
    clips = [tone(1.0, 16000), np.zeros(16000, np.float32) + 1e-4]
    batched, _ = embed.get_audio_embedding(clips, 16000, tiny, batch_size=4)
    single, _ = embed.get_audio_embedding(clips[1], 16000, tiny, batch_size=1)
    np.testing.assert_allclose(batched[1], single, **TOL)


def test_transfer_features(tiny):
    cfg = tiny.config
    feats = embed.EmbeddingModels.from_l3(models.build_l3(cfg), cfg, transfer_features=True)
    emb, _ = embed.get_audio_embedding(tone(1.0, 16000), 16000, feats, center=False,
                                       transfer_features=True)
    assert emb.shape == (1, 4 * 3 * cfg.embedding_dim)
    with pytest.raises(L3Error, match="transfer_features"):
        embed.get_audio_embedding(tone(1.0, 16000), 16000, tiny, transfer_features=True)


def test_images_of_any_size_gray_and_rgba(tiny):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (37, 91, 3), np.uint8)
    d = tiny.config.embedding_dim
    assert embed.get_image_embedding(rgb, tiny).shape == (1, d)
    batch = embed.get_image_embedding([rgb, rgb[:, :, 0], np.dstack([rgb, rgb[:, :, :1]]), rgb / 255.0], tiny)
    assert batch.shape == (4, d) and np.isfinite(batch).all()
    np.testing.assert_allclose(batch[2], batch[0], **TOL)  # alpha dropped
    np.testing.assert_allclose(batch[3], batch[0], **TOL)  # float in [0, 1] == uint8 / 255
    x = embed.prepare_images(rgb[:, :, 0], tiny.config)
    assert x.shape == (1, 64, 64, 3) and np.array_equal(x[..., 0], x[..., 2])
    with pytest.raises(L3Error, match="image must be"):
        embed.get_image_embedding(np.zeros((5, 5, 2)), tiny)


def test_real_audio_and_image_fixtures(tiny, real_media):
    import soundfile
    from PIL import Image

    fixtures = real_media / "fixtures/openl3"
    for name in ("chirp_1s.wav", "chirp_44k.wav", "chirp_mono.wav", "chirp_stereo.wav",
                 "silence.wav", "short.wav"):
        audio, sr = soundfile.read(fixtures / name, dtype="float32")
        emb, ts = embed.get_audio_embedding(audio, sr, tiny)
        assert len(emb) == len(ts) == 1 + int(len(audio) / sr / 0.1 + 1e-9), name
        assert np.isfinite(emb).all(), name
    with pytest.raises(L3Error, match="empty"):
        embed.get_audio_embedding(soundfile.read(fixtures / "empty.wav")[0], 48000, tiny)
    for name in ("daisy.jpg", "smol.png", "blank.png"):
        emb = embed.get_image_embedding(np.asarray(Image.open(fixtures / name)), tiny)
        assert emb.shape == (1, tiny.config.embedding_dim) and np.isfinite(emb).all(), name


def test_process_video_file_one_time_axis(tiny, real_media):
    out = embed.process_video_file(real_media / "fixtures/openl3/bento.mp4", tiny, hop_size=0.1)
    assert out["audio_embedding"].shape[0] == len(out["audio_timestamps"]) >= 11
    assert out["image_embedding"].shape[0] == len(out["image_timestamps"]) >= 10
    assert out["audio_timestamps"][0] == 0.0 and out["image_timestamps"][0] == 0.0
    assert abs(out["audio_timestamps"][-1] - out["image_timestamps"][-1]) < 0.15


def test_process_video_file_on_a_synthetic_clip(tiny, tmp_path):
    """`process_video_file` without ../shared: a 2 s mp4 (44.1 kHz stereo AAC, 10 fps) with a tone
    burst and a white frame at 1.2 s; both embeddings on one time axis."""
    from tests.clips import write_clip

    path = write_clip(tmp_path / "clip.mp4", seconds=2.0, fps=10, size=(48, 64), flash_at=1.2,
                      audio=((44100, 2),))
    out = embed.process_video_file(path, tiny, hop_size=0.1)
    assert out["audio_embedding"].shape == (len(out["audio_timestamps"]), 128)
    np.testing.assert_allclose(out["audio_timestamps"], np.arange(21) * 0.1, atol=1e-6)
    assert out["image_embedding"].shape == (len(out["image_timestamps"]), 128)
    np.testing.assert_allclose(out["image_timestamps"], np.arange(20) * 0.1, atol=0.011)
    assert np.isfinite(out["audio_embedding"]).all() and np.isfinite(out["image_embedding"]).all()
    # The white frame (1.2 s) embeds differently from the black ones around it.
    images = out["image_embedding"]
    assert not np.allclose(images[12], images[11], atol=1e-6)
    np.testing.assert_allclose(images[10], images[11], atol=1e-5)


def test_cli_embed_video_on_a_synthetic_clip(export_dir, tmp_path):
    from tests.clips import write_clip

    src = tmp_path / "videos"
    src.mkdir()
    write_clip(src / "clip.mp4", seconds=1.5, fps=10, size=(48, 64), flash_at=0.5, audio=((16000, 1),))
    (src / "broken.mp4").write_bytes(b"not a video")
    out = tmp_path / "out"
    code = main(["embed", "video", str(src), "-o", str(out), "--model", str(export_dir), "--no-progress"])
    assert code == 0
    with np.load(out / "clip.npz") as f:
        assert f["audio_embedding"].shape == (len(f["audio_timestamps"]), 128) == (16, 128)
        assert f["image_embedding"].shape == (len(f["image_timestamps"]), 128)
        assert f["image_timestamps"][0] == 0.0 and len(f["image_timestamps"]) >= 10
    assert not (out / "broken.npz").exists() and not list(out.rglob("*.tmp"))


def test_load_embedding_models_reads_an_export(export_dir, tiny, tmp_path):
    loaded = embed.load_embedding_models(export_dir)
    x = tone(1.3, 16000)
    np.testing.assert_allclose(
        embed.get_audio_embedding(x, 16000, loaded)[0], embed.get_audio_embedding(x, 16000, tiny)[0], **TOL
    )
    with pytest.raises(L3Error, match="not an export folder"):
        embed.load_embedding_models(tmp_path)


def test_cli_embed_writes_npz_and_skips_bad_files(export_dir, tmp_path, capsys):
    import soundfile
    from PIL import Image

    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    soundfile.write(src / "sub/a.wav", tone(1.5, 22050), 22050)
    (src / "broken.wav").write_bytes(b"not a wav")
    Image.fromarray(np.zeros((40, 30), np.uint8)).save(src / "g.png")
    out = tmp_path / "out"
    args = ["-o", str(out), "--model", str(export_dir), "--no-progress"]
    assert main(["embed", "audio", str(src), *args]) == 0
    with np.load(out / "sub/a.npz") as f:
        assert f["embedding"].shape == (16, 128) and f["timestamps"].shape == (16,)
    text = capsys.readouterr().out
    assert "skipped" in text and "broken.wav" in text and "embedded 1 file(s), skipped 1" in text
    assert main(["embed", "image", str(src / "g.png"), *args]) == 0
    assert np.load(out / "g.npz")["embedding"].shape == (1, 128)
    assert main(["embed", "audio", str(src / "broken.wav"), *args]) == 1  # nothing could be done
    assert main(["embed", "video", str(src / "sub"), *args]) == 2  # no videos: L3Error
    assert not list(out.rglob("*.tmp*"))
    assert json.loads((export_dir / "config.json").read_text())["name"] == "tiny"
