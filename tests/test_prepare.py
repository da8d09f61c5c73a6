"""Checks `l3_keras.data.prepare` and the `l3 prepare` / `l3 merge-manifests` commands: the outcome
of every file in ../shared/data/fixtures against a table, a run over the real av-clips, records
parsed back, labels from folders, resuming after a stray temp file / a lost shard / a SIGKILL, and a
2-machine split merged into the same kept set as one machine.
"""
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from l3_keras import cli
from l3_keras.config import DataConfig
from l3_keras.data import records, video
from l3_keras.data.prepare import decode_all, list_jobs, merge_manifests, prepare
from l3_keras.data.video import iter_video_paths
from l3_keras.errors import L3Error
from tests.clips import decode_or_crash, write_clip
from tests.helpers import kill_after_first_shard

CFG = DataConfig(sample_rate=16000, fps=2, frame_short_side=72, max_seconds=None)

# Fixture outcomes: ("kept", audio seconds) or ("skipped", reason kind). video_with_failing_audio's
# MP3 decodes cleanly with PyAV 18's FFmpeg; nasa's first default audio stream is the 8 kHz one.
FIXTURES = {
    "openl3/bento.mp4": ("kept", 1.1),  # 0.998 s of AAC, padded to the video's 1.1 s
    "bbb_1s.webm": ("kept", 1.006),
    "no_duration.webm": ("kept", 4.923),
    "mmaction2_test.avi": ("kept", 6.6),
    "nasa_13013_two_audio_streams.mp4": ("kept", 13.056),
    "video_with_failing_audio.mp4": ("kept", 11.234),
    "av1_video_no_audio.mkv": ("skipped", "no audio stream"),
    "tiny_no_audio.mp4": ("skipped", "no audio stream"),
    "truncated_bento.mp4": ("skipped", "truncated"),
    "zero_bytes.mp4": ("skipped", "empty file"),
    "not_a_video.mp4": ("skipped", "unreadable container"),
}


def outcomes(manifest):
    table = {e["video_id"]: ("kept", e["duration"]) for e in manifest["kept"]}
    for e in manifest["skipped"]:
        table[e["video_id"]] = ("skipped", e["reason"].split(":")[0])
    return table


def read_records(out_dir, manifest):
    files = [os.path.join(out_dir, s["file"]) for s in manifest["shards"]]
    dataset = tf.data.TFRecordDataset(files)
    return [{k: v.numpy() for k, v in records.parse_example(x).items()} for x in dataset]


def check_records(out_dir, manifest, cfg):
    """Every kept video has one record with the manifest's duration and well-formed frames."""
    parsed = {r["video_id"].decode(): r for r in read_records(out_dir, manifest)}
    assert sorted(parsed) == sorted(e["video_id"] for e in manifest["kept"])
    for entry in manifest["kept"]:
        r = parsed[entry["video_id"]]
        assert r["sample_rate"] == cfg.sample_rate
        assert len(r["audio"]) == round(entry["duration"] * cfg.sample_rate)
        times = r["frame_times"]
        assert len(times) == len(r["frames"]) == entry["frames"] > 0
        assert np.all(np.diff(times) > 0) and times[0] >= 0
        assert times[-1] <= entry["duration"] + 1 / cfg.fps
        shape = tf.io.decode_jpeg(r["frames"][0]).shape
        assert min(shape[:2]) == cfg.frame_short_side
    return parsed


def strip_time(manifest):
    return {k: v for k, v in manifest.items() if k != "created"}


@pytest.fixture(scope="module")
def fixture_run(real_media, tmp_path_factory):
    out = tmp_path_factory.mktemp("fixtures")
    return out, prepare(real_media / "fixtures", out, CFG, videos_per_shard=4, progress=False)


def test_every_fixture_has_its_expected_outcome(fixture_run):
    _, manifest = fixture_run
    got = outcomes(manifest)
    assert sorted(got) == sorted(FIXTURES)
    for name, (status, value) in FIXTURES.items():
        assert got[name][0] == status, (name, got[name])
        if status == "kept":
            assert got[name][1] == pytest.approx(value, abs=0.02), name
        else:
            assert got[name][1] == value, name
    assert manifest["totals"]["kept"] == 6 and manifest["totals"]["skipped"] == 5


def test_fixture_records_parse_back(fixture_run):
    out, manifest = fixture_run
    parsed = check_records(out, manifest, CFG)
    # nasa has two default audio streams; the first (8 kHz) is taken: nothing above 4 kHz.
    audio = parsed["nasa_13013_two_audio_streams.mp4"]["audio"].astype(np.float64)
    power = np.abs(np.fft.rfft(audio)) ** 2
    assert power[np.fft.rfftfreq(len(audio), 1 / CFG.sample_rate) > 4100].sum() < 1e-4 * power.sum()
    assert manifest["versions"]["av"] and manifest["data_config"] == CFG.to_dict()


def test_real_av_clips_prepare_in_parallel(real_media, tmp_path):
    cfg = CFG.replace(max_seconds=3.0, frame_short_side=64)
    manifest = prepare(real_media / "av-clips", tmp_path, cfg, workers=2, videos_per_shard=16,
                       progress=False)
    assert manifest["totals"]["skipped"] == 0, manifest["skipped"]
    videos = len(iter_video_paths(real_media / "av-clips"))  # 34 at the time of writing
    assert manifest["totals"]["kept"] == videos == manifest["inputs"]["videos"]
    shards = -(-videos // 16)
    names = [f"part-000-{k:05d}.tfrecord" for k in range(shards)]
    assert [s["file"] for s in manifest["shards"]] == names
    check_records(tmp_path, manifest, cfg)


def test_synthetic_bad_files_are_skipped_with_their_reasons(tmp_path):
    """The fixture table's cases made here, so a clone without ../shared/data runs them too."""
    src = tmp_path / "in"
    src.mkdir()
    write_clip(src / "good.mp4", seconds=2.0, fps=10, size=(32, 48), audio=((44100, 2),))
    write_clip(src / "two_streams.mkv", seconds=2.5, fps=10, size=(32, 48),
               audio=((8000, 1), (22050, 2)), default_audio=1)
    (src / "empty.mp4").write_bytes(b"")
    (src / "text.mp4").write_text("not a video at all\n")
    write_clip(src / "mute.mp4", seconds=2.0, fps=10, size=(32, 48), audio=())
    write_clip(src / "sound.mkv", seconds=2.0, video=False)
    write_clip(src / "short.mp4", seconds=0.6, fps=10, size=(32, 48), flash_at=None)
    whole = open(write_clip(tmp_path / "whole.mkv", seconds=6.0, flash_at=None), "rb").read()
    (src / "cut.mkv").write_bytes(whole[: len(whole) // 2])
    manifest = prepare(src, tmp_path / "out", CFG, videos_per_shard=4, progress=False)
    assert outcomes(manifest) == {
        "good.mp4": ("kept", pytest.approx(2.0, abs=0.03)),
        "two_streams.mkv": ("kept", pytest.approx(2.5, abs=0.03)),
        "empty.mp4": ("skipped", video.EMPTY),
        "text.mp4": ("skipped", video.UNREADABLE),
        "mute.mp4": ("skipped", video.NO_AUDIO),
        "sound.mkv": ("skipped", video.NO_VIDEO),
        "short.mp4": ("skipped", video.TOO_SHORT),
        "cut.mkv": ("skipped", video.TRUNCATED),
    }
    assert manifest["totals"]["kept"] == 2 and manifest["totals"]["skipped"] == 6
    check_records(tmp_path / "out", manifest, CFG)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """A labelled folder: cat/ and dog/ with four short clips and one broken file."""
    root = tmp_path_factory.mktemp("clips")
    lengths = {"cat/a.mp4": 2.0, "cat/b.mkv": 3.0, "dog/c.mp4": 2.5, "dog/d.mp4": 2.0}
    for name, seconds in lengths.items():
        (root / name).parent.mkdir(exist_ok=True)
        write_clip(root / name, seconds=seconds, fps=10, size=(32, 48), audio=((22050, 2),))
    (root / "dog/broken.mp4").write_text("oops")
    return root


SMALL = DataConfig(sample_rate=8000, fps=2, frame_short_side=32, max_seconds=None)


def test_labels_come_from_folders(clips, tmp_path):
    manifest = prepare(clips, tmp_path, SMALL, videos_per_shard=2, label_from="folder",
                       progress=False)
    assert [e["reason"] for e in manifest["skipped"]] == ["unreadable container"]
    parsed = check_records(tmp_path, manifest, SMALL)
    assert {k: r["label"].decode() for k, r in parsed.items()} == {
        "cat/a.mp4": "cat", "cat/b.mkv": "cat", "dog/c.mp4": "dog", "dog/d.mp4": "dog",
    }
    with pytest.raises(L3Error, match="another data_config"):
        prepare(clips, tmp_path, SMALL.replace(fps=4), videos_per_shard=2, label_from="folder")


def test_resume_redoes_only_lost_shards(clips, tmp_path):
    first = prepare(clips, tmp_path, SMALL, videos_per_shard=2, progress=False)
    kept_shard = tmp_path / "part-000-00000.tfrecord"
    stamp = kept_shard.stat().st_mtime_ns
    os.remove(tmp_path / "part-000-00001.tfrecord")  # a lost shard file
    os.remove(tmp_path / "part-000-00002.tfrecord.json")  # killed between rename and sidecar
    (tmp_path / "part-000-00002.tfrecord.tmp-999").write_bytes(b"half a shard")  # killed mid-write
    (tmp_path / "manifest.json").unlink()
    second = prepare(clips, tmp_path, SMALL, videos_per_shard=2, progress=False)
    assert strip_time(second) == strip_time(first)
    assert kept_shard.stat().st_mtime_ns == stamp
    assert not list(tmp_path.glob("*.tmp*"))


def test_resume_redoes_shards_whose_videos_changed(clips, tmp_path):
    videos, out = tmp_path / "videos", tmp_path / "out"
    shutil.copytree(clips, videos)
    first = prepare(videos, out, SMALL, videos_per_shard=2, progress=False)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tfrecord")}
    changed = "dog/c.mp4"  # same name, new content: 1.5 s instead of 2.5 s
    write_clip(videos / changed, seconds=1.5, fps=10, size=(32, 48), audio=((22050, 2),),
               flash_at=0.5)
    second = prepare(videos, out, SMALL, videos_per_shard=2, progress=False)

    def durations(manifest):
        return {e["video_id"]: e["duration"] for e in manifest["kept"]}

    assert durations(first)[changed] > 2.4 and durations(second)[changed] < 1.6
    assert {k: v for k, v in durations(second).items() if k != changed} == {
        k: v for k, v in durations(first).items() if k != changed}
    redone = next(e["shard"] for e in second["kept"] if e["video_id"] == changed)
    for name, stamp in stamps.items():
        assert ((out / name).stat().st_mtime_ns != stamp) == (name == redone), name


def test_resume_after_sigkill_matches_an_uninterrupted_run(clips, tmp_path):
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    code = (
        "import sys; from l3_keras.config import DataConfig;"
        "from l3_keras.data.prepare import prepare;"
        f"prepare(sys.argv[1], sys.argv[2], DataConfig.from_json({SMALL.to_json()!r}),"
        " videos_per_shard=1, progress=False)"
    )
    kill_after_first_shard(code, [clips, killed], killed)
    finished = len(list(killed.glob("part-*.tfrecord.json")))
    assert 1 <= finished < 5 and not (killed / "manifest.json").exists()
    resumed = prepare(clips, killed, SMALL, videos_per_shard=1, progress=False)
    full = prepare(clips, reference, SMALL, videos_per_shard=1, progress=False)
    assert strip_time(resumed) == strip_time(full)


def test_a_crashing_decoder_costs_one_video(clips, tmp_path):
    for name in ("a.mp4", "crash.mp4", "z.mp4"):
        shutil.copy(clips / "cat/a.mp4", tmp_path / name)
    outcomes = decode_all(list_jobs(tmp_path, None), SMALL, 2, decode=decode_or_crash)
    results = {job.video_id: result for job, result in outcomes}
    assert results["crash.mp4"] == "decoder crashed"
    assert len(results["a.mp4"]["audio"]) == len(results["z.mp4"]["audio"]) > 2 * 8000 - 1


def kept_set(manifest):
    return {(e["video_id"], e["duration"], e["frames"]) for e in manifest["kept"]}


def test_two_machine_split_merges_to_the_single_run(clips, tmp_path):
    whole = prepare(clips, tmp_path / "whole", SMALL, videos_per_shard=1, progress=False)
    common = [str(clips), "--sample-rate", "8000", "--fps", "2", "--short-side", "32",
              "--max-seconds", "0", "--videos-per-shard", "1", "--num-shards", "2", "--no-progress"]
    for i in (0, 1):
        out = str(tmp_path / f"m{i}")
        assert cli.main(["prepare", *common, "--shard-index", str(i), "--out", out]) == 0
    part0 = json.loads((tmp_path / "m0" / "manifest-part-000.json").read_text())
    assert part0["inputs"]["shard_indices"] == [0] and part0["data_config"] == SMALL.to_dict()
    out = tmp_path / "merged" / "manifest.json"
    out.parent.mkdir()
    parts = [str(tmp_path / "m0"), str(tmp_path / "m1")]
    assert cli.main(["merge-manifests", *parts, "--out", str(out)]) == 0
    merged = json.loads(out.read_text())
    assert kept_set(merged) == kept_set(whole)
    assert merged["totals"] == whole["totals"] and merged["inputs"]["missing_parts"] == []
    for entry in merged["kept"]:
        assert (out.parent / entry["shard"]).exists()
    assert len(read_records(out.parent, merged)) == merged["totals"]["kept"]
    with pytest.raises(L3Error, match="is in both"):
        merge_manifests([tmp_path / "m0", tmp_path / "m0"], tmp_path / "bad.json")
    with pytest.raises(L3Error, match="another number of parts"):
        merge_manifests([tmp_path / "whole", tmp_path / "m1"], tmp_path / "bad.json")


def test_preset_sets_rate_and_frame_size(clips, tmp_path):
    args = ["prepare", str(clips), "--out", str(tmp_path), "--preset", "tiny", "--no-progress"]
    assert cli.main(args) == 0
    config = json.loads((tmp_path / "manifest.json").read_text())["data_config"]
    sizes = (config["sample_rate"], config["frame_short_side"])
    assert sizes == (16000, 73)  # the 64 px crop is the model's image_size
