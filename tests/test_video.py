"""Checks `l3_keras.data.video`: the one time axis (a white frame and a tone burst written at 1.5 s
decode at 1.5 s on both streams), resampling and down-mixing, the default-stream rule, early stop
at max_seconds, every failure reason on small generated files, and `iter_video_paths`.
"""
import io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from l3_keras.config import DataConfig
from l3_keras.data import video
from l3_keras.errors import L3Error
from tests.clips import BURST_HZ, write_clip

SR = 16000
CFG = DataConfig(sample_rate=SR, fps=4, frame_short_side=48, max_seconds=None)


def burst_onset(audio, threshold=0.05):
    """Seconds of the first sample louder than `threshold` of full scale."""
    return np.argmax(np.abs(audio) > threshold * 32767) / SR


def dominant_hz(audio, start):
    seg = audio[int(start * SR) : int((start + 0.1) * SR)].astype(np.float64)
    return np.argmax(np.abs(np.fft.rfft(seg))) * SR / len(seg)


def brightness(jpeg):
    return np.asarray(Image.open(io.BytesIO(jpeg))).mean()


@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_flash_and_burst_share_the_time_axis(tmp_path, container):
    fps = 20  # the white frame sits exactly at 1.5 s = frame 30
    path = write_clip(tmp_path / f"clip.{container}", fps=fps, flash_at=1.5, audio=((48000, 1),))
    v = video.decode_video(path, CFG.replace(fps=fps), video_id="clip", label="x")
    assert (v.video_id, v.label, v.sample_rate) == ("clip", "x", SR)
    onset = burst_onset(v.audio)
    flash = v.frame_times[np.argmax([brightness(j) for j in v.frames])]
    assert abs(onset - 1.5) < 0.02
    assert abs(flash - onset) <= 1.0 / fps
    assert np.all(np.diff(v.frame_times) > 0)
    assert abs(v.duration - 3.0) < 0.05


def test_stereo_odd_rate_is_resampled_and_downmixed(tmp_path):
    path = write_clip(tmp_path / "stereo.mkv", audio=((22050, 2),))
    v = video.decode_video(path, CFG)
    assert v.audio.dtype == np.int16 and v.audio.ndim == 1
    assert abs(v.duration - 3.0) < 0.05
    assert abs(burst_onset(v.audio) - 1.5) < 0.02
    # Both channels carry the 0.5-amplitude burst; a channel mean keeps 0.5 (no +3 dB).
    assert 0.45 < np.abs(v.audio).max() / 32767 < 0.55
    assert dominant_hz(v.audio, 1.51) == pytest.approx(BURST_HZ, abs=20)


def test_default_audio_stream_is_picked(tmp_path):
    path = write_clip(tmp_path / "two.mkv", audio=((44100, 1), (16000, 2)), default_audio=1)
    v = video.decode_video(path, CFG)
    assert dominant_hz(v.audio, 1.51) == pytest.approx(2 * BURST_HZ, abs=20)


def test_frames_keep_aspect_and_sample_rate(tmp_path):
    path = write_clip(tmp_path / "wide.mp4", size=(48, 96), fps=25)
    v = video.decode_video(path, CFG.replace(frame_short_side=32, fps=2))
    assert Image.open(io.BytesIO(v.frames[0])).size == (64, 32)
    np.testing.assert_allclose(v.frame_times, np.arange(6) / 2, atol=1 / 25)


def test_max_seconds_stops_before_a_damaged_tail(tmp_path):
    path = write_clip(tmp_path / "long.mkv", seconds=6.0, flash_at=None)
    data = open(path, "rb").read()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) * 2 // 3] + b"\xff" * 4000)  # garbage after ~4 s
    v = video.decode_video(cut, CFG.replace(max_seconds=1.5))
    assert len(v.audio) == int(1.5 * SR)
    assert v.frame_times.max() < 1.5


def reason_of(path, cfg=CFG):
    with pytest.raises(video.VideoError) as e:
        video.decode_video(path, cfg)
    assert str(path) in str(e.value)
    return e.value.bare_reason


def test_failure_reasons(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("not a video at all\n")
    assert reason_of(tmp_path / "missing.mp4") == video.MISSING
    assert reason_of(tmp_path / "empty.mp4") == video.EMPTY
    assert reason_of(tmp_path / "text.mp4") == video.UNREADABLE
    assert reason_of(write_clip(tmp_path / "mute.mp4", audio=())) == video.NO_AUDIO
    assert reason_of(write_clip(tmp_path / "sound.mkv", video=False)) == video.NO_VIDEO
    short = write_clip(tmp_path / "short.mp4", seconds=0.6, flash_at=None)
    assert reason_of(short) == video.TOO_SHORT
    # Matroska declares its duration up front and its demuxer ends a cut file without an error.
    whole = open(write_clip(tmp_path / "whole.mkv", seconds=6.0, flash_at=None), "rb").read()
    (tmp_path / "cut.mkv").write_bytes(whole[: len(whole) // 2])
    assert reason_of(tmp_path / "cut.mkv") == video.TRUNCATED


def test_decode_or_reason_never_raises(tmp_path):
    (tmp_path / "empty.mkv").write_bytes(b"")
    assert video.decode_or_reason(tmp_path / "empty.mkv", CFG) == video.EMPTY


def test_iter_video_paths(tmp_path):
    for name in ["b/x.MP4", "a/y.webm", "a/deep/z.mov", "c.mpg", "notes.txt", "img.jpg"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = video.iter_video_paths(tmp_path)
    relative = [os.path.relpath(p, tmp_path) for p in found]
    assert relative == ["a/deep/z.mov", "a/y.webm", "b/x.MP4", "c.mpg"]
    listing = tmp_path / "list.txt"
    listing.write_text("# two videos\nc.mpg\n\nb/x.MP4\n")
    assert video.iter_video_paths(listing) == [str(tmp_path / "b/x.MP4"), str(tmp_path / "c.mpg")]
    (tmp_path / "none").mkdir()
    with pytest.raises(L3Error, match="No videos found"):
        video.iter_video_paths(tmp_path / "none")
    with pytest.raises(L3Error, match="does not exist"):
        video.iter_video_paths(tmp_path / "nowhere")


def test_decoding_does_not_import_tensorflow():
    code = "import sys, l3_keras.data.video; assert 'tensorflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
