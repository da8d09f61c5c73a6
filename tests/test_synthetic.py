"""Synthetic clips: real H.264 + AAC files whose JSON ground truth matches what is drawn and heard."""
import os

import av
import numpy as np
import pytest

from l3_keras.data import synthetic
from l3_keras.errors import L3Error

SR = 16000


def _decode(path):
    """(frames uint8 [F, H, W, 3], frame times [F], audio float32 [N] at SR, codec names)."""
    with av.open(str(path)) as c:
        codecs = (c.streams.video[0].codec_context.name, c.streams.audio[0].codec_context.name)
        frames, times = zip(*((f.to_ndarray(format="rgb24"), float(f.time))
                              for f in c.decode(video=0)))
    with av.open(str(path)) as c:
        audio = np.concatenate([f.to_ndarray()[0] for f in c.decode(audio=0)])
    return np.stack(frames), np.array(times), audio, codecs


def _band_energy(audio, freq, rel=0.08):
    """Spectral energy of `audio` (a Hann-windowed segment) within freq * (1 +- rel)."""
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio)))) ** 2
    f = np.fft.rfftfreq(len(audio), 1.0 / SR)
    return spectrum[(f > freq * (1 - rel)) & (f < freq * (1 + rel))].sum()


def _mean_colour(frame, kind, box):
    """Mean RGB over the kind's mask shrunk away from its edges (chroma is subsampled there)."""
    x0, y0, x1, y1 = box
    mask = synthetic.shape_mask(synthetic.KINDS[kind].shape, y1 - y0, x1 - x0)
    inner = mask & np.roll(mask, 2, 0) & np.roll(mask, -2, 0) & np.roll(mask, 2, 1) & np.roll(mask, -2, 1)
    return frame[y0:y1, x0:x1][inner].mean(axis=0)


@pytest.fixture(scope="module")
def all_kinds_clip(tmp_path_factory):
    """One clip with every kind once: 1 s events separated by 0.4 s gaps, with distractors."""
    events = [{"kind": k, "name": synthetic.KINDS[k].name, "start": 1.4 * k + 0.4,
               "end": 1.4 * k + 1.4, "quadrant": k % 4,
               "box": synthetic.random_box(k % 4, (128, 128), np.random.default_rng(k))}
              for k in range(len(synthetic.KINDS))]
    path = tmp_path_factory.mktemp("kinds") / "kinds.mp4"
    synthetic.make_clip(str(path), events, seconds=14.4, sample_rate=SR, distractor=True)
    return path


def test_kinds_are_distinct():
    kinds = synthetic.KINDS
    assert len({k.name for k in kinds}) == len({k.colour for k in kinds}) == len(kinds) == 10
    freqs = sorted(k.freq for k in kinds)
    assert min(b / a for a, b in zip(freqs, freqs[1:])) > 1.3  # several mel bands apart
    assert max(freqs) < 0.5 * SR


def test_clip_is_h264_aac_with_ground_truth(all_kinds_clip):
    frames, times, audio, codecs = _decode(all_kinds_clip)
    meta = synthetic.read_sidecar(all_kinds_clip)
    assert codecs == ("h264", "aac")
    assert frames.shape[1:] == (128, 128, 3) and meta["size"] == [128, 128]
    assert len(frames) == round(meta["seconds"] * meta["fps"])
    np.testing.assert_allclose(times, np.arange(len(frames)) / meta["fps"], atol=1e-3)
    # AAC pads the last packet; the decoder drops the encoder's priming samples.
    assert abs(len(audio) - meta["seconds"] * SR) < 1024
    assert [e["kind"] for e in meta["events"]] == list(range(10))


def test_drawn_colours_match_ground_truth(all_kinds_clip):
    frames, times, _, _ = _decode(all_kinds_clip)
    for event in synthetic.read_sidecar(all_kinds_clip)["events"]:
        frame = frames[np.argmin(np.abs(times - (event["start"] + event["end"]) / 2))]
        for obj in (event, event["distractor"]):
            colour = _mean_colour(frame, obj["kind"], obj["box"])
            np.testing.assert_allclose(colour, synthetic.KINDS[obj["kind"]].colour, atol=25)
        assert event["distractor"]["kind"] != event["kind"]
        assert event["distractor"]["quadrant"] != event["quadrant"]
    # Between events nothing is drawn: the frame is the dim background.
    assert frames[np.argmin(np.abs(times - 0.2))].max() < 100


def test_heard_sound_matches_ground_truth(all_kinds_clip):
    _, _, audio, _ = _decode(all_kinds_clip)
    freqs = [k.freq for k in synthetic.KINDS]
    gap = audio[int(0.05 * SR):int(0.35 * SR)]
    for event in synthetic.read_sidecar(all_kinds_clip)["events"]:
        mid = (event["start"] + event["end"]) / 2
        segment = audio[int((mid - 0.3) * SR):int((mid + 0.3) * SR)]
        energies = [_band_energy(segment, f) for f in freqs]
        assert int(np.argmax(energies)) == event["kind"], (event["name"], energies)
        # The sound sits >= 30 dB above the quiet background in its band.
        assert energies[event["kind"]] > 1000 * _band_energy(gap, freqs[event["kind"]])


def test_random_events_fill_duration():
    events = synthetic.random_events(10.0, 4, np.random.default_rng(0), distractor=True)
    assert len(events) >= 3
    for a, b in zip(events, events[1:]):
        assert a["end"] <= b["start"]
    for e in events:
        assert 0 <= e["start"] and e["end"] <= 10.0 and 0 <= e["kind"] < 4
        x0, y0, x1, y1 = e["box"]
        assert (y0 >= 64) == (e["quadrant"] >= 2) and (x0 >= 64) == (e["quadrant"] % 2 == 1)
        assert x1 <= 128 and y1 <= 128
        assert e["distractor"]["kind"] < 4
    with pytest.raises(L3Error, match="kinds"):
        synthetic.random_events(10.0, 11, np.random.default_rng(0))


def test_schedule_clip_brightness_and_tone_follow_time(tmp_path):
    path = str(tmp_path / "schedule.mp4")
    synthetic.make_schedule_clip(path, seconds=3.0, step=0.5)
    frames, times, audio, _ = _decode(path)
    schedule = synthetic.read_sidecar(path)["schedule"]
    assert len(schedule) == 6
    for frame, t in zip(frames, times):
        assert abs(frame.mean() - schedule[int(t / 0.5 + 1e-6)]["brightness"]) < 4
    for seg in schedule:
        middle = audio[int((seg["start"] + 0.1) * SR):int((seg["end"] - 0.1) * SR)]
        peak = np.fft.rfftfreq(len(middle), 1 / SR)[np.argmax(np.abs(np.fft.rfft(middle)))]
        assert abs(peak - seg["freq"]) < 5


def test_collection_is_cached_and_independent_of_workers(tmp_path):
    SPEC = synthetic.ClipSpec(seconds=3, kinds=4, seed=5)
    paths = synthetic.make_collection(str(tmp_path / "a"), 3, SPEC)
    assert [os.path.basename(p) for p in paths] == [f"clip_0000{i}.mp4" for i in range(3)]
    stamps = [os.stat(p).st_mtime_ns for p in paths]
    assert synthetic.make_collection(str(tmp_path / "a"), 3, SPEC) == paths
    assert [os.stat(p).st_mtime_ns for p in paths] == stamps  # nothing was rewritten
    assert not [f for f in os.listdir(tmp_path / "a") if ".tmp" in f]
    other = synthetic.make_collection(str(tmp_path / "b"), 3, SPEC, workers=2)
    for p, q in zip(paths, other):
        assert synthetic.read_sidecar(p)["events"] == synthetic.read_sidecar(q)["events"]
    # Other parameters regenerate the cached clips.
    synthetic.make_collection(str(tmp_path / "a"), 3, SPEC.replace(seconds=2))
    assert synthetic.read_sidecar(paths[0])["seconds"] == 2.0
