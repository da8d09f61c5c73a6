"""Long recordings: windows cut across chunks, files decoded in chunks, flat peak memory, the
shared mode's alignment and block invariance, and shared vs exact linear probes (printed)."""
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import soundfile

from l3_keras import embed, embed_stream, models
from l3_keras.cli import main
from l3_keras.config import get_preset
from l3_keras.errors import L3Error

TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def tiny():
    cfg = get_preset("tiny")
    return embed.EmbeddingModels.from_l3(models.build_l3(cfg), cfg)


def noise(seconds, sr, channels=None, seed=0):
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    x = 0.3 * np.sin(2 * np.pi * 220 * t * (1 + t / 10)) + 0.05 * rng.standard_normal(n)
    x = x.astype(np.float32)
    return x if channels is None else np.stack([x, 0.5 * x][:channels], axis=1)


@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("n", [1, 7000, 16000, 51234, 90001])
@pytest.mark.parametrize("context", [0, 37])
@pytest.mark.parametrize("hop", [0.1, 1.7])  # 1.7 s: hops longer than the chunks
def test_windows_cut_across_chunks_equal_the_whole(n, center, context, hop):
    cfg = get_preset("tiny")
    x = noise(n / cfg.sample_rate, cfg.sample_rate)
    whole, ts = embed_stream.frame(x, cfg, hop, center, context)
    stream = embed_stream.WindowStream(cfg, hop, center, context)
    rng = np.random.default_rng(n)
    cuts = np.sort(rng.integers(0, n, 9))
    blocks = [stream.push(part) for part in np.split(x, cuts)] + [stream.push([], last=True)]
    got = np.concatenate([b.windows() for b in blocks])
    assert [b.first for b in blocks] == list(np.cumsum([0] + [b.count for b in blocks[:-1]]))
    np.testing.assert_array_equal(got, whole.windows())
    np.testing.assert_array_equal(stream.timestamps(0, len(got)), ts)
    ref = embed.frame_audio(x, cfg, hop, center)[0]  # the plain window sits inside each context window
    np.testing.assert_array_equal(got[:, context : context + cfg.audio_samples], ref)


def test_empty_stream_is_a_clear_error():
    stream = embed_stream.WindowStream(get_preset("tiny"), 0.1)
    stream.push(np.zeros(0))
    with pytest.raises(L3Error, match="empty"):
        stream.push(np.zeros(0), last=True)


@pytest.mark.parametrize("mode", ["exact", "shared"])
def test_file_decoded_in_chunks_equals_the_array(tiny, tmp_path, mode):
    """A 25 s stereo 44.1 kHz WAV in 3 s chunks (soxr streaming) == the whole array (soxr)."""
    x = noise(25.3, 44100, channels=2)
    soundfile.write(tmp_path / "a.wav", x, 44100, subtype="FLOAT")
    got, ts = embed_stream.embed_audio_file(tmp_path / "a.wav", tiny, 0.1, mode=mode, chunk_seconds=3)
    ref, ref_ts = embed.get_audio_embedding(x, 44100, tiny, 0.1, mode=mode)
    assert got.shape == ref.shape == (254, 128)
    np.testing.assert_allclose(ts, ref_ts)
    np.testing.assert_allclose(got, ref, **TOL)
    via_api, _ = embed.get_audio_embedding(str(tmp_path / "a.wav"), model=tiny, mode=mode)
    np.testing.assert_allclose(via_api, ref, **TOL)


def test_shared_map_cells_align_with_per_window_cells():
    """A 2-block tower with a small receptive field has interior cells that no padding reaches:
    there the shared map must equal each window's own map, at both pooling phases."""
    cfg = get_preset("tiny").replace(filters=(8, 16), convs_per_block=1)
    audio = models.audio_embedding_model(models.build_l3(cfg), cfg)
    shared = embed_stream.SharedTower(audio, cfg)
    per_window = keras.Model(audio.input, audio.get_layer(models.last_conv_name(cfg, "audio")).output)
    x = noise(3.0, cfg.sample_rate)
    block, _ = embed_stream.frame(x, cfg, 0.1, True, shared.context)
    starts = [(i * block.hop + shared.context) // cfg.hop_length for i in range(block.count)]
    maps = shared.maps(shared.spectrogram(block.signal), {s % shared.stride for s in starts})
    assert set(maps) == {0, 1}  # 5-frame hop, stride 2
    own = np.asarray(per_window(embed.frame_audio(x, cfg, 0.1, True)[0]))
    edge = 4  # cells within the receptive field of a window edge
    for i, s in enumerate(starts):
        p = s % shared.stride
        cells = np.asarray(maps[p][0])[:, (s - p) // shared.stride :][:, : shared.cells]
        np.testing.assert_allclose(cells[:, edge:-edge], own[i][:, edge:-edge], **TOL)


def test_shared_blocks_equal_one_pass(tiny):
    shared = embed_stream.SharedTower(tiny.audio, tiny.config)
    block, _ = embed_stream.frame(noise(6.0, 16000), tiny.config, 0.1, True, shared.context)
    whole = shared.embed(block)
    parts = np.concatenate([shared.embed(b) for b in embed_stream.split(block, 7)])
    np.testing.assert_allclose(parts, whole, **TOL)
    with pytest.raises(L3Error, match="whole number of spectrogram frames"):
        embed.get_audio_embedding(noise(2.0, 16000), 16000, tiny, hop_size=0.101, mode="shared")


def test_cli_embed_batches_small_files_and_shared_mode(tiny, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    clips = {f"c{i}.wav": noise(0.4 + 0.7 * i, 22050, seed=i) for i in range(4)}
    for name, x in clips.items():
        soundfile.write(src / name, x, 22050, subtype="FLOAT")
    export = tmp_path / "export"
    export.mkdir()
    (export / "config.json").write_text(tiny.config.to_json())
    tiny.audio.save(export / "audio_embedding.keras")
    tiny.image.save(export / "image_embedding.keras")
    args = ["embed", "audio", str(src), "--model", str(export), "--no-progress", "--batch-size", "8"]
    assert main([*args, "-o", str(out / "exact")]) == 0
    assert main([*args, "-o", str(out / "shared"), "--mode", "shared"]) == 0
    for name, x in clips.items():
        for mode in ("exact", "shared"):
            ref, ts = embed.get_audio_embedding(x, 22050, tiny, mode=mode)
            with np.load(out / mode / name.replace(".wav", ".npz")) as f:
                np.testing.assert_allclose(f["embedding"], ref, **TOL)
                np.testing.assert_allclose(f["timestamps"], ts)


def test_video_streamed_equals_the_decoded_arrays(tiny, real_media):
    """process_video_file (chunked) vs decode_streams (whole) on a 16.6 s, 8 kHz-audio video:
    the same samples up to decode_streams' int16 rounding, the same frames and times."""
    from l3_keras.config import DataConfig
    from l3_keras.data.video import decode_streams, stream_streams, tail_pad_seconds
    from l3_keras.preprocess import decode_images

    path = real_media / "fixtures/nasa_13013_two_audio_streams.mp4"
    data = DataConfig.for_model(tiny.config, fps=4.0, max_seconds=None)
    got = embed.process_video_file(path, tiny, hop_size=0.25)
    decoded = decode_streams(path, data)
    parts = []
    chunks = embed_stream.ChunkedAudio(tiny.config.sample_rate, parts.append, chunk_seconds=2)
    info = stream_streams(path, chunks, lambda jpeg, t: None, data)
    chunks.finish(tail_pad_seconds(info["samples"] / info["rate"], info["video_end"]))
    audio = np.concatenate(parts)
    np.testing.assert_allclose(audio, decoded["audio"] / 32768, atol=1.5 / 32768)
    emb, ts = embed.get_audio_embedding(audio, tiny.config.sample_rate, tiny, 0.25)
    np.testing.assert_allclose(got["audio_timestamps"], ts)
    np.testing.assert_allclose(got["audio_embedding"], emb, **TOL)
    np.testing.assert_allclose(got["image_timestamps"], decoded["frame_times"], atol=1e-6)
    frames = decode_images(np.array(decoded["frames"], object), tiny.config.image_size).numpy()
    np.testing.assert_allclose(got["image_embedding"], np.asarray(tiny.image(frames)), **TOL)


# VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across fork + exec, so a child of a
# large pytest process would report the parent's peak.
PEAK_SCRIPT = textwrap.dedent(
    """
    import sys, warnings
    warnings.filterwarnings("ignore")
    from l3_keras import embed
    emb, _ = embed.get_audio_embedding(sys.argv[1], model="tiny", hop_size=1.0, batch_size=16,
                                       mode=sys.argv[2])
    hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
    print(len(emb), int(hwm.split()[1]) // 1024)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["exact", "shared"])
def test_peak_memory_does_not_grow_with_duration(tmp_path, mode):
    """60 s vs 600 s of stereo 44.1 kHz audio: the whole longer file as float32 would be 212 MB
    (plus its mono and resampled copies); streamed, peak RSS may grow by at most 60 MB."""
    peaks = {}
    for seconds in (60, 600):
        path = tmp_path / f"{seconds}.wav"
        with soundfile.SoundFile(path, "w", 44100, 2, subtype="PCM_16") as f:
            for i in range(seconds // 20):
                f.write(noise(20, 44100, channels=2, seed=i))
        out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(path), mode], check=True,
                             capture_output=True, text=True).stdout.split()
        assert int(out[0]) == seconds + 1
        peaks[seconds] = int(out[1])
    print(f"peak RSS {mode}: 60 s -> {peaks[60]} MB, 600 s -> {peaks[600]} MB")
    assert peaks[600] - peaks[60] < 60, peaks


@pytest.mark.slow
def test_shared_vs_exact_probe_on_real_labelled_sets(real_media):
    """Linear probes (conv4 features, 5 folds) of the main job's model on DCASE and FSDD, exact vs
    shared mode: accuracies and the embedding time ratio are printed; shared must stay far
    above chance. Clips are about 1 s, so shared mode pays its context for few windows here."""
    from l3_keras.evaluate import linear_probe as lp
    from tests.trained_tiny import trained_tiny

    trained = trained_tiny()
    sets = {
        "dcase": lp.list_labelled(real_media / "audio-labeled/dcase2016_task2", "pattern",
                                  lp.DCASE_PATTERN),
        "fsdd": lp.subset(lp.list_labelled(real_media / "audio-labeled/fsdd", "pattern",
                                           lp.FSDD_PATTERN), 20, seed=0),
    }
    for name, items in sets.items():
        labels = [item.label for item in items]
        folds = lp.fold_ids(labels, k=5, seed=0)
        acc, secs = {}, {}
        for mode in ("exact", "shared"):
            t0 = time.perf_counter()
            feats = lp.audio_features(trained.model, trained.config, items, "conv4", 0.5, mode=mode)
            secs[mode] = time.perf_counter() - t0
            acc[mode] = lp.cross_validate(feats, labels, folds)["mean"]
        print(f"{name}: {len(items)} clips, probe accuracy exact {acc['exact']:.3f} shared "
              f"{acc['shared']:.3f} (diff {acc['shared'] - acc['exact']:+.3f}); embedding time "
              f"exact {secs['exact']:.1f} s shared {secs['shared']:.1f} s "
              f"(speed-up {secs['exact'] / secs['shared']:.2f}x)")
        assert acc["shared"] > 3 / len(set(labels)), (name, acc)


@pytest.mark.parametrize("preset,context", [("tiny", 0.8), pytest.param("paper", 0.2, marks=pytest.mark.slow)])
def test_edge_free_model_shared_equals_exact(preset, context):
    """With audio context the pooled cells never see padding: shared == exact (max diff printed)."""
    cfg = get_preset(preset).replace(audio_context_seconds=context)
    towers = embed.EmbeddingModels.from_l3(models.build_l3(cfg), cfg)
    assert towers.audio.input.shape[1] == cfg.audio_samples + 2 * int(context * cfg.sample_rate)
    x = noise(3.3, cfg.sample_rate)
    exact, ts = embed.get_audio_embedding(x, cfg.sample_rate, towers, 0.1)
    shared, ts2 = embed.get_audio_embedding(x, cfg.sample_rate, towers, 0.1, mode="shared")
    diff = np.abs(shared - exact).max()
    print(f"edge-free {preset}: shared vs exact max abs diff {diff:.2e} (embedding max {exact.max():.2f})")
    np.testing.assert_array_equal(ts, ts2)
    np.testing.assert_allclose(shared, exact, rtol=1e-4, atol=1e-4)


def test_edge_free_context_is_checked():
    with pytest.raises(L3Error, match="multiple of the last map's cell"):
        get_preset("tiny").replace(audio_context_seconds=0.1)
    with pytest.raises(L3Error, match="receptive field"):
        models.build_l3(get_preset("tiny").replace(audio_context_seconds=0.32))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_inference(tiny, precision):
    """Same weights, mixed precision: convolutions in 16 bits, front end float32; the relative
    difference to float32 is printed and must stay small."""
    low = tiny.with_precision(precision)
    assert low.audio.get_layer("audio_block1_conv1").compute_dtype == {"bf16": "bfloat16", "fp16": "float16"}[precision]
    assert low.audio.get_layer("audio_spectrogram").compute_dtype == "float32"
    x = noise(3.0, 16000)
    ref, _ = embed.get_audio_embedding(x, 16000, tiny)
    got, _ = embed.get_audio_embedding(x, 16000, low)
    assert got.dtype == np.float32
    rel = np.linalg.norm(got - ref, axis=1) / np.linalg.norm(ref, axis=1)
    print(f"{precision}: audio embeddings relative L2 difference median {np.median(rel):.2e}, max {rel.max():.2e}")
    assert rel.max() < 0.05
