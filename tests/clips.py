"""Tiny test clips written with PyAV with one known event: a white frame and a tone burst.

Unlike `l3_keras.data.synthetic` (H.264 + mono AAC mp4 for training), these vary what the decoder
must cope with: containers, sample rates, channel counts, several or no audio streams.
"""
import os
from fractions import Fraction

import av
import numpy as np

from l3_keras.data.video import decode_or_reason

BURST_HZ = 1000.0
BURST_SECONDS = 0.1


def tone_track(seconds, sample_rate, channels=1, flash_at=None, hz=BURST_HZ):
    """float32 [channels, samples]: silence with a BURST_SECONDS sine burst starting at flash_at."""
    x = np.zeros((channels, int(round(seconds * sample_rate))), np.float32)
    if flash_at is not None:
        start = int(round(flash_at * sample_rate))
        t = np.arange(int(BURST_SECONDS * sample_rate)) / sample_rate
        x[:, start : start + len(t)] = 0.5 * np.sin(2 * np.pi * hz * t)
    return x


def write_clip(
    path,
    seconds=3.0,
    *,
    fps=25,
    size=(48, 64),
    flash_at=1.5,
    audio=((48000, 1),),
    default_audio=None,
    video=True,
    vcodec="libx264",
    acodec="aac",
):
    """Writes a clip: black frames except a white one at `flash_at`, silence except a burst there.

    Args:
        path: output file; the extension picks the container (.mp4, .mkv, ...).
        seconds: length of both streams.
        fps: video frame rate.
        size: (height, width), even.
        flash_at: time of the white frame and of the burst onset, seconds (None: no event).
        audio: one (sample_rate, channels) per audio stream; stream j's burst is at
            1000 * (j + 1) Hz so a test can tell which stream was decoded.
        default_audio: index of the only audio stream marked default (None: leave as muxed).
        video: False writes an audio-only file.
        vcodec, acodec: encoder names.

    Returns:
        `path` as a str.
    """
    path = str(path)
    with av.open(path, "w") as out:
        streams = []
        if video:
            vs = out.add_stream(vcodec, rate=Fraction(fps))
            vs.height, vs.width, vs.pix_fmt = size[0], size[1], "yuv420p"
            streams.append((vs, _video_frames(seconds, fps, size, flash_at)))
        for j, (rate, channels) in enumerate(audio):
            layout = "mono" if channels == 1 else "stereo"
            stream = out.add_stream(acodec, rate=rate, layout=layout)
            if default_audio is not None:
                stream.disposition = av.stream.Disposition.default if j == default_audio else 0
            track = tone_track(seconds, rate, channels, flash_at, BURST_HZ * (j + 1))
            streams.append((stream, _audio_frames(track, rate, layout)))
        for stream, frames in streams:
            for frame in frames:
                out.mux(stream.encode(frame))
            out.mux(stream.encode())
    return path


def _video_frames(seconds, fps, size, flash_at):
    flash = None if flash_at is None else int(round(flash_at * fps))
    for i in range(int(round(seconds * fps))):
        pixels = np.full((*size, 3), 255 if i == flash else 0, np.uint8)
        frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
        frame.pts = i
        yield frame


def _audio_frames(track, rate, layout, chunk=4096):
    for start in range(0, track.shape[1], chunk):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(track[:, start : start + chunk]),
                                           format="fltp", layout=layout)
        frame.sample_rate, frame.pts = rate, start
        yield frame


def decode_or_crash(path, data_config):
    """`video.decode_or_reason`, except that the process dies on files named crash*: a segfault."""
    if os.path.basename(path).startswith("crash"):
        os._exit(11)
    return decode_or_reason(path, data_config)
