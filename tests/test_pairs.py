"""The AVC pair stream: alignment, balance, negatives, determinism, distribution, errors, real media."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from l3_keras.config import DataConfig, get_preset
from l3_keras.data import pairs, synthetic, video
from l3_keras.data import shards as shards_lib
from l3_keras.data.pairs import PairOptions
from l3_keras.data.prepare import prepare
from l3_keras.errors import L3Error

TINY = get_preset("tiny")
DATA = DataConfig.for_model(TINY)  # 16 kHz, 73 px short side (the 64 px crop is the model's)
HOP = 160  # 10 ms at 16 kHz: the time step of this test's own frequency tracking


def _prepare(inputs, out_dir, videos_per_shard, data_config=DATA):
    """Prepares the videos under `inputs` into shards of `videos_per_shard`; returns the files."""
    prepare(inputs, out_dir, data_config, videos_per_shard=videos_per_shard, progress=False)
    return shards_lib.list_shards(str(out_dir))


def _take(ds, n):
    return list(ds.take(n).as_numpy_iterator())


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    spec = synthetic.ClipSpec(seconds=4, kinds=4, size=(96, 96), seed=1)
    return synthetic.make_collection(str(tmp_path_factory.mktemp("clips")), 8, spec)


@pytest.fixture(scope="module")
def shards(clips, tmp_path_factory):
    return _prepare(os.path.dirname(clips[0]), tmp_path_factory.mktemp("shards"), 2)


@pytest.fixture(scope="module")
def schedule_shards(tmp_path_factory):
    """Two schedule clips (brightness and tone change every 0.5 s) in one shard."""
    folder = tmp_path_factory.mktemp("schedule")
    paths = [synthetic.make_schedule_clip(str(folder / f"s{i}.mp4"), seconds=4.0, size=(96, 96),
                                          seed=i) for i in range(2)]
    return _prepare(folder, folder / "shards", 2), synthetic.read_sidecar(paths[0])


def test_element_spec_and_ranges(shards):
    ds = pairs.make_pair_dataset(shards, TINY, training=True, seed=0, batch_size=16,
                                 options=PairOptions(shuffle_buffer=64))
    assert ds.element_spec == (
        {"image": tf.TensorSpec([16, 64, 64, 3], tf.float32),
         "audio": tf.TensorSpec([16, 16000], tf.float32)},
        tf.TensorSpec([16], tf.int32))
    for inputs, label in _take(ds, 3):
        assert 0.0 <= inputs["image"].min() and inputs["image"].max() <= 1.0
        assert np.abs(inputs["audio"]).max() <= 1.0 and set(label) <= {0, 1}


def test_a_non_square_image_size_is_cropped_as_height_by_width(shards):
    # Crops come from the model's image_size (height, width), never from image_size[0] alone.
    tall = TINY.replace(name="tall", image_size=(64, 40))
    for training in (True, False):
        ds = pairs.make_pair_dataset(shards, tall, training=training, seed=0, batch_size=4,
                                     repeat=True, options=PairOptions(block_size=16))
        assert ds.element_spec[0]["image"].shape[1:] == [64, 40, 3]
        assert _take(ds, 1)[0][0]["image"].shape == (4, 64, 40, 3)
    wide = TINY.replace(name="wide", image_size=(64, 80))  # 80 px > the frames' 73 px short side
    with pytest.raises(L3Error, match=r"smaller than preset 'wide' crops \(64x80\)"):
        pairs.make_pair_dataset(shards, wide, training=True)


def _dominant_segments(audio, schedule):
    """Per hop: the schedule segment whose frequency dominates a 512-sample window around it."""
    frames = tf.signal.frame(audio, 512, HOP).numpy() * np.hanning(512)
    peak = np.fft.rfftfreq(512, 1 / 16000)[np.argmax(np.abs(np.fft.rfft(frames)), axis=1)]
    freqs = np.array([s["freq"] for s in schedule])
    return np.argmin(np.abs(peak[:, None] - freqs[None, :]), axis=1), np.arange(len(frames)) * HOP + 256


def test_positives_are_aligned_with_the_schedule(schedule_shards):
    files, meta = schedule_shards
    schedule, step = meta["schedule"], meta["step"]
    ds = pairs.make_pair_dataset(files, TINY, training=False, seed=0, repeat=True,
                                 with_metadata=True,
                                 options=PairOptions(block_size=16, pairs_per_video=8))
    positives = 0
    for inputs, label, m in _take(ds, 96):
        t, start = m["frame_time"], m["audio_start"]
        # The frame's brightness says when it was shown: the sampler's frame_time must agree.
        shown = int(np.argmin([abs(inputs["image"].mean() * 255 - s["brightness"]) for s in schedule]))
        assert shown == int(t / step + 1e-6)
        if not label:
            continue
        positives += 1
        assert start - 1e-6 <= t <= start + 1.0 + 1e-6
        # The tone in the window follows the schedule from `start` on, to within one audio frame.
        # A hop may disagree only when its centre is within one frame of a schedule boundary.
        segments, centres = _dominant_segments(inputs["audio"], schedule)
        when = start + centres / 16000  # seconds in the video
        expected = (when / step + 1e-9).astype(int)
        near_boundary = np.abs(when - np.round(when / step) * step) <= HOP / 16000
        assert np.all((segments == expected) | near_boundary), (t, start)
    assert positives >= 40


def test_negatives_come_from_other_videos_and_labels_balance(shards):
    ds = pairs.make_pair_dataset(shards, TINY, training=True, seed=3, with_metadata=True,
                                 options=PairOptions(block_size=64, pairs_per_video=4))
    ds = ds.map(lambda x, y, m: (y, m["video_id"], m["audio_video_id"]))  # skip image decoding
    labels, ids, audio_ids = map(np.array, zip(*_take(ds, 63 * 64)))
    assert np.all((labels == 1) == (ids == audio_ids))
    assert abs(labels[:4000].mean() - 0.5) <= 0.03
    # Exactly half of every block is positive.
    assert set(labels.reshape(-1, 64).sum(axis=1)) == {32}


def test_positives_only_stream_labels_each_pair_with_its_video_key(shards):
    """The stream of in-batch negatives: every pair a positive, its label its video's key."""
    ds = pairs.make_pair_dataset(shards, TINY, training=True, seed=3, with_metadata=True,
                                 options=PairOptions(pairs_per_video=4, positives_only=True))
    ds = ds.map(lambda x, y, m: (y, m))
    labels, meta = zip(*_take(ds, 400))
    ids = np.array([m["video_id"] for m in meta])
    assert all(m["audio_video_id"] == m["video_id"] for m in meta)
    assert all(m["audio_start"] - 1e-6 <= m["frame_time"] <= m["audio_start"] + 1 + 1e-6
               for m in meta)
    keys = pairs.video_key(tf.constant(ids)).numpy()
    np.testing.assert_array_equal(np.array(labels), keys)
    assert np.all(keys >= 0) and len(set(keys)) == len(set(ids)) == 8  # one key per video


def _batches(files, seed, n=100):
    ds = pairs.make_pair_dataset(files, TINY, training=True, seed=seed, batch_size=4,
                                 options=PairOptions(block_size=16, shuffle_buffer=64))
    return _take(ds, n)


def test_same_seed_gives_same_batches(shards):
    first, again, other = _batches(shards, 7), _batches(shards, 7), _batches(shards, 8, n=5)
    for (x1, y1), (x2, y2) in zip(first, again):
        np.testing.assert_array_equal(x1["image"], x2["image"])
        np.testing.assert_array_equal(x1["audio"], x2["audio"])
        np.testing.assert_array_equal(y1, y2)
    assert any(not np.array_equal(a[0]["audio"], b[0]["audio"]) for a, b in zip(first, other))


def test_evaluation_pairs_are_fixed_and_finite(shards):
    ds = pairs.make_pair_dataset(shards, TINY, training=False, seed=0, batch_size=4,
                                 options=PairOptions(block_size=8, pairs_per_video=2))
    one, two = _take(ds, 1000), _take(ds, 1000)
    assert len(one) == 4  # 8 videos x 2 samples, one pass
    for (x1, y1), (x2, y2) in zip(one, two):
        np.testing.assert_array_equal(x1["image"], x2["image"])
        np.testing.assert_array_equal(x1["audio"], x2["audio"])
        np.testing.assert_array_equal(y1, y2)


def test_input_context_shards_files_and_batches_per_replica(shards):
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1,
                                         num_replicas_in_sync=4)
    assert shards_lib.for_pipeline(sorted(shards), context) == sorted(shards)[1::2]
    ds = pairs.make_pair_dataset(shards, TINY, training=True, seed=0, batch_size=32,
                                 input_context=context)
    assert ds.element_spec[1].shape == [8]
    too_many = tf.distribute.InputContext(num_input_pipelines=5, input_pipeline_id=0)
    with pytest.raises(L3Error, match="4 shard file.*5 input pipelines"):
        pairs.make_pair_dataset(shards, TINY, training=True, input_context=too_many)


def test_clear_errors(shards, tmp_path):
    with pytest.raises(L3Error, match="No record files"):
        pairs.make_pair_dataset([], TINY, training=True)
    paper = get_preset("paper")
    # The shards' manifest says 16 kHz; decoding settings for direct mode are checked alike.
    with pytest.raises(L3Error, match="16000 Hz but preset 'paper' takes 48000 Hz"):
        pairs.make_pair_dataset(shards, paper, training=True)
    with pytest.raises(L3Error, match="16000 Hz but preset 'paper' takes 48000 Hz"):
        pairs.make_pair_dataset_from_videos(shards, paper, DATA, training=True)
    with pytest.raises(L3Error, match="at least 2 distinct videos"):
        pairs.make_pair_dataset([_one_video_shard(tmp_path)], TINY, training=True)


def _one_video_shard(tmp_path):
    clip = synthetic.make_schedule_clip(str(tmp_path / "one.mp4"), seconds=2.0, size=(96, 96))
    return _prepare(clip, tmp_path / "shards", 1)[0]


def test_direct_mode_skips_bad_files(clips, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    skipped = []
    ds = pairs.make_pair_dataset_from_videos(
        [str(broken)] + clips, TINY, DATA, training=True, seed=0, batch_size=8, skipped=skipped,
        with_metadata=True, options=PairOptions(block_size=16, pairs_per_video=4, shuffle_buffer=16))
    batches = _take(ds, 6)
    assert [p for p, _ in skipped] == [str(broken)]
    ids = {i for _, _, m in batches for i in m["video_id"]}
    assert len(ids) >= 2 and all(os.path.basename(i).startswith(b"clip_") for i in ids)
    # One usable video cannot give negatives: an error, not an endless wait for a usable block.
    lonely = pairs.make_pair_dataset_from_videos([str(broken), clips[0]], TINY, DATA, training=True)
    with pytest.raises(Exception, match="need at least 2"):
        _take(lonely, 1)


@pytest.mark.slow
def test_real_media_prepared_shards(real_media, tmp_path):
    files = _prepare(real_media / "av-clips", tmp_path, 8)
    ds = pairs.make_pair_dataset(files, TINY, training=True, seed=0, batch_size=16,
                                 with_metadata=True, options=PairOptions(pairs_per_video=4))
    for inputs, label, meta in _take(ds, 20):
        assert np.isfinite(inputs["audio"]).all() and inputs["image"].shape == (16, 64, 64, 3)
        assert np.all((label == 1) == (meta["video_id"] == meta["audio_video_id"]))


MIRRORED_SCRIPT = textwrap.dedent("""
    import sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from l3_keras.config import get_preset
    from l3_keras.data import pairs
    model = get_preset("tiny")
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    ds = pairs.distributed_pair_dataset(strategy, sys.argv[1:], model, global_batch=8,
                                        training=True, seed=0,
                                        options=pairs.PairOptions(block_size=16, shuffle_buffer=32))
    for step, (inputs, label) in zip(range(2), ds):
        parts = strategy.experimental_local_results(inputs["audio"])
        assert [p.shape.as_list() for p in parts] == [[4, 16000]] * 2, parts
        total = strategy.reduce("SUM", strategy.run(lambda y: tf.reduce_sum(tf.ones_like(y)),
                                                    args=(label,)), axis=None)
        assert int(total) == 8
    print("OK", strategy.num_replicas_in_sync)
""")


def test_mirrored_strategy_two_cpu_replicas(shards):
    # Logical devices must be configured before TensorFlow initialises: use a fresh process.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(_repo()), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT, *shards], capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 0 and "OK 2" in out.stdout, out.stderr[-3000:]


def _repo():
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_real_media_direct_mode(real_media):
    paths = video.iter_video_paths(real_media / "av-clips")
    skipped = []
    ds = pairs.make_pair_dataset_from_videos(
        paths, TINY, DATA, training=False, seed=0, batch_size=8, skipped=skipped,
        options=PairOptions(block_size=16, pairs_per_video=4))
    for inputs, label in _take(ds, 6):
        assert inputs["image"].shape == (8, 64, 64, 3) and np.isfinite(inputs["audio"]).all()


def _marker_frame(h=73, w=96):
    """A JPEG frame: a mid-tone coloured background (luma L, R - G known) with a white 4x4 block
    at rows 35-38, columns 44-47 and a black one 8 columns to its right, inside every 64 crop."""
    frame = np.zeros((h, w, 3), np.uint8) + np.array([160, 96, 128], np.uint8)
    frame[35:39, 44:48] = 255
    frame[35:39, 52:56] = 0
    return tf.io.encode_jpeg(frame, quality=100, chroma_downsampling=False)


def test_training_augmentation_follows_its_distributions():
    """Per element: crop offset uniform over every position, flip with probability 1/2,
    brightness delta uniform in +-BRIGHTNESS_DELTA, saturation uniform in SATURATION_RANGE, gain
    uniform in +-GAIN_DB, each recovered from the output and tested (KS / chi-square, p > 1e-3;
    the keys are fixed, so the outcome is deterministic)."""
    from scipy import stats

    jpeg, n = _marker_frame(), 600
    crop = TINY.image_size[0]  # square: 64
    background = np.array([160, 96, 128]) / 255.0
    luma = np.array([0.299, 0.587, 0.114])
    rows, cols, flips, deltas, factors, gains = [], [], [], [], [], []
    tone = np.round(0.25 * 32767 * np.sin(np.arange(16000) / 5.0)).astype(np.int16)
    for i in range(n):
        key = tf.constant([i, 17], tf.int64)
        image = pairs.decode_image(jpeg, key, TINY.image_size, training=True).numpy()
        level = image.mean(axis=2)
        white = np.argwhere(level > 0.85).mean(axis=0)
        black = np.argwhere(level < 0.15).mean(axis=0)
        flipped = black[1] < white[1]
        col = (crop - 1 - white[1]) if flipped else white[1]  # unflipped column of the block
        rows.append(int(round(36.5 - white[0])))
        cols.append(int(round(45.5 - col)))
        flips.append(flipped)
        pixels = image[:8, :8].reshape(-1, 3).mean(axis=0)  # background corner
        deltas.append(pixels @ luma - background @ luma)  # saturation keeps luma
        factors.append((pixels[0] - pixels[1]) / (background[0] - background[1]))
        audio = pairs.to_float_audio(tf.constant(tone), key, training=True).numpy()
        gains.append(20 * np.log10(np.abs(audio).max() / 0.25))
    assert stats.chisquare(np.bincount(rows, minlength=73 - crop + 1)).pvalue > 1e-3
    assert stats.chisquare(np.bincount(cols, minlength=96 - crop + 1)).pvalue > 1e-3
    assert min(rows) == 0 and max(rows) == 73 - crop and min(cols) == 0 and max(cols) == 96 - crop
    assert stats.binomtest(int(np.sum(flips)), n, 0.5).pvalue > 1e-3
    d = pairs.BRIGHTNESS_DELTA
    assert stats.kstest(deltas, stats.uniform(-d, 2 * d).cdf).pvalue > 1e-3
    lo, hi = pairs.SATURATION_RANGE
    assert stats.kstest(factors, stats.uniform(lo, hi - lo).cdf).pvalue > 1e-3
    g = pairs.GAIN_DB
    assert stats.kstest(gains, stats.uniform(-g, 2 * g).cdf).pvalue > 1e-3
