"""`l3 prepare` and `l3 embed` on Apache Beam's local runner against the local commands: the same
shards (records byte for byte), manifests and skip reasons on synthetic clips, broken files and the
real fixtures; a crashing decoder; a rerun after SIGKILL; training reading Beam's shards; embeddings
within 1e-5. Skipped when apache-beam is not installed (the `beam` extra), except the check that
nothing outside l3_keras/beam imports it.
"""
import importlib.util
import json
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from l3_keras import cli
from l3_keras.config import DataConfig, get_preset
from l3_keras.data import pairs, synthetic
from l3_keras.data.prepare import prepare
from tests.clips import write_clip
from tests.helpers import kill_after_first_shard
from tests.test_prepare import CFG, read_records, strip_time

REPO = pathlib.Path(__file__).resolve().parents[1]
requires_beam = pytest.mark.skipif(importlib.util.find_spec("apache_beam") is None,
                                   reason="apache-beam not installed (pip install -e .[beam])")
TINY = get_preset("tiny")
DATA = DataConfig.for_model(TINY)  # what `--preset tiny` prepares with
ONE_WORKER = ["direct_num_workers=1"]


def test_only_the_beam_package_imports_apache_beam():
    package = REPO / "l3_keras"
    imports = re.compile(r"^\s*(import|from)\s+apache_beam\b", re.M)
    users = [str(p.relative_to(REPO)) for p in package.rglob("*.py")
             if imports.search(p.read_text()) and p.parent != package / "beam"]
    assert users == []
    modules = [".".join(p.relative_to(REPO).with_suffix("").parts) for p in package.rglob("*.py")
               if p.parent != package / "beam"]
    code = (f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
            "from l3_keras import cli\n"
            "cli.build_parser().parse_args(['prepare', 'x', '--out', 'y'])\n"
            "assert 'apache_beam' not in sys.modules, 'apache_beam imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Labelled folders: odd containers and rates (tests.clips), synthetic training clips
    (data.synthetic) and a broken file."""
    root = tmp_path_factory.mktemp("videos")
    for name, seconds in {"cat/a.mp4": 2.0, "cat/b.mkv": 3.0, "dog/c.mp4": 2.5}.items():
        (root / name).parent.mkdir(exist_ok=True)
        write_clip(root / name, seconds=seconds, fps=10, size=(32, 48), audio=((22050, 2),))
    spec = synthetic.ClipSpec(seconds=3.0, kinds=3, size=(96, 96), sample_rate=16000)
    synthetic.make_collection(str(root / "synthetic"), 3, spec)
    (root / "dog/broken.mp4").write_text("oops")
    return root


def assert_same_records(beam_dir, beam_manifest, local_dir, local_manifest):
    """Same manifest (but its time) and, per video, the same record bytes."""
    assert strip_time(beam_manifest) == strip_time(local_manifest)
    for name in [s["file"] for s in local_manifest["shards"]]:
        assert (beam_dir / name).read_bytes() == (local_dir / name).read_bytes(), name
    got = {r["video_id"]: r for r in read_records(beam_dir, beam_manifest)}
    want = {r["video_id"]: r for r in read_records(local_dir, local_manifest)}
    assert sorted(got) == sorted(want) and len(got) == local_manifest["totals"]["kept"]
    for video_id, r in want.items():
        assert got[video_id]["audio"].tobytes() == r["audio"].tobytes(), video_id
        np.testing.assert_array_equal(got[video_id]["frame_times"], r["frame_times"])
        assert list(got[video_id]["frames"]) == list(r["frames"])
        assert got[video_id]["label"] == r["label"]
    assert not [p.name for p in beam_dir.iterdir() if ".tmp" in p.name or "todo" in p.name]


@requires_beam
def test_cli_beam_prepare_equals_local_and_trains(videos, tmp_path):
    local = prepare(videos, tmp_path / "local", DATA, videos_per_shard=2, label_from="folder",
                    progress=False)
    args = ["prepare", str(videos), "--out", str(tmp_path / "beam"), "--preset", "tiny",
            "--videos-per-shard", "2", "--label-from", "folder", "--runner", "beam",
            "--beam-option", "direct_num_workers=2"]
    assert cli.main(args) == 0
    beam = json.loads((tmp_path / "beam" / "manifest.json").read_text())
    assert beam["totals"]["kept"] == 6 and beam["skipped"][0]["reason"] == "unreadable container"
    assert_same_records(tmp_path / "beam", beam, tmp_path / "local", local)

    ds = pairs.make_pair_dataset(str(tmp_path / "beam"), TINY, training=True, seed=0,
                                 batch_size=4, options=pairs.PairOptions(shuffle_buffer=16))
    for inputs, label in ds.take(2).as_numpy_iterator():
        assert inputs["audio"].shape == (4, TINY.audio_samples) and label.shape == (4,)
        assert inputs["image"].shape == (4, *TINY.image_size, 3)

    assert cli.main([*args, "--workers", "2"]) == 2  # Beam splits the work itself
    assert cli.main(["prepare", str(videos), "--out", str(tmp_path / "x"),
                     "--beam-option", "runner=DataflowRunner"]) == 2  # needs --runner beam


@requires_beam
def test_real_fixtures_as_local(real_media, tmp_path):
    from l3_keras.beam.prepare import prepare_beam

    local = prepare(real_media / "fixtures", tmp_path / "local", CFG, videos_per_shard=4,
                    progress=False)
    beam = prepare_beam(real_media / "fixtures", tmp_path / "beam", CFG, videos_per_shard=4)
    assert beam["totals"] == local["totals"] and beam["totals"]["skipped"] == 5
    assert_same_records(tmp_path / "beam", beam, tmp_path / "local", local)


@requires_beam
def test_a_crashing_decoder_costs_one_video(videos, tmp_path):
    from l3_keras.beam.prepare import prepare_beam
    from tests.clips import decode_or_crash

    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.mp4", "crash.mp4", "z.mp4"):
        shutil.copy(videos / "cat/a.mp4", src / name)
    manifest = prepare_beam(src, tmp_path / "out", CFG, videos_per_shard=2, beam_options=ONE_WORKER,
                            decode=decode_or_crash)
    assert manifest["skipped"] == [{"video_id": "crash.mp4", "path": str(src / "crash.mp4"),
                                    "reason": "decoder crashed"}]
    assert [e["video_id"] for e in manifest["kept"]] == ["a.mp4", "z.mp4"]


@requires_beam
def test_rerun_after_sigkill_ends_with_the_same_manifest(videos, tmp_path):
    from l3_keras.beam.prepare import TODO_FILE, prepare_beam

    killed = tmp_path / "killed"
    code = (
        "import sys; from l3_keras.config import DataConfig;"
        "from l3_keras.beam.prepare import prepare_beam;"
        f"prepare_beam(sys.argv[1], sys.argv[2], DataConfig.from_json({CFG.to_json()!r}),"
        f" videos_per_shard=1, beam_options={ONE_WORKER!r})"
    )
    kill_after_first_shard(code, [videos, killed], killed)
    finished = {p.name: p.stat().st_mtime_ns for p in killed.glob("part-*.tfrecord")
                if (killed / (p.name + ".json")).exists()}
    assert 1 <= len(finished) < 7 and not (killed / "manifest.json").exists()
    assert (killed / TODO_FILE).exists()

    resumed = prepare_beam(videos, killed, CFG, videos_per_shard=1, beam_options=ONE_WORKER)
    full = prepare(videos, tmp_path / "reference", CFG, videos_per_shard=1, progress=False)
    assert_same_records(killed, resumed, tmp_path / "reference", full)
    for name, stamp in finished.items():  # finished shards were kept, not written again
        assert (killed / name).stat().st_mtime_ns == stamp, name
    again = prepare_beam(videos, killed, CFG, videos_per_shard=1, beam_options=ONE_WORKER)
    assert strip_time(again) == strip_time(full)


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    """The parts of a tiny export that `l3 embed` reads (random weights)."""
    from l3_keras import embed, models

    path = tmp_path_factory.mktemp("saved_models") / "tiny"
    path.mkdir()
    tiny = embed.EmbeddingModels.from_l3(models.build_l3(TINY), TINY)
    (path / "config.json").write_text(TINY.to_json())
    tiny.audio.save(path / "audio_embedding.keras")
    tiny.image.save(path / "image_embedding.keras")
    return path


@requires_beam
@pytest.mark.parametrize("kind", ["audio", "image", "video"])
def test_beam_embed_equals_local_embed(kind, videos, export_dir, tmp_path):
    import soundfile
    from PIL import Image

    from l3_keras.beam.embed import embed_beam
    from l3_keras.embed_files import embed_files

    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    t = np.arange(int(1.7 * 22050)) / 22050
    soundfile.write(src / "sub/a.wav", 0.3 * np.sin(2 * np.pi * 440 * t), 22050)
    soundfile.write(src / "b.flac", np.stack([np.sin(t * 900), np.cos(t * 300)], 1) * 0.2, 22050)
    Image.fromarray(np.arange(40 * 30 * 3, dtype=np.uint8).reshape(40, 30, 3)).save(src / "g.png")
    Image.fromarray(np.zeros((90, 60), np.uint8)).save(src / "sub/h.jpg")
    shutil.copy(videos / "cat/b.mkv", src / "sub/b.mkv")
    shutil.copy(videos / "synthetic/clip_00000.mp4", src / "v.mp4")
    for name in ("broken.wav", "broken.png", "broken.mp4"):
        (src / name).write_bytes(b"not a real file")

    local, beam = tmp_path / "local", tmp_path / "beam"
    done = embed_files(kind, [src], local, export_dir, batch_size=8, progress=False)
    manifest = embed_beam(kind, [src], beam, export_dir, batch_size=8, beam_options=ONE_WORKER)
    outputs = sorted(p.relative_to(local) for p in local.rglob("*.npz"))
    assert len(outputs) == done == manifest["totals"]["embedded"] == 2
    assert sorted(p.relative_to(beam) for p in beam.rglob("*.npz")) == outputs
    broken = {"audio": "broken.wav", "image": "broken.png", "video": "broken.mp4"}[kind]
    assert [e["input"] for e in manifest["skipped"]] == [str(src / broken)]
    for rel in outputs:
        with np.load(local / rel) as want, np.load(beam / rel) as got:
            assert got.files == want.files
            for key in want.files:
                assert got[key].shape == want[key].shape and got[key].dtype == want[key].dtype
                np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-5)


@requires_beam
def test_remote_folder_and_glob(videos, tmp_path):
    """Inputs and outputs on another TF filesystem (ram://, as gs:// would be): same records."""
    import tensorflow as tf

    from l3_keras.beam.prepare import prepare_beam

    root = f"ram://{tmp_path.name}"
    for path in videos.rglob("*.*"):
        tf.io.gfile.makedirs(f"{root}/videos/{path.parent.relative_to(videos)}")
        tf.io.gfile.copy(str(path), f"{root}/videos/{path.relative_to(videos)}")
    local = prepare(videos, tmp_path / "local", DATA, videos_per_shard=2, label_from="folder",
                    progress=False)
    beam = prepare_beam(f"{root}/videos", f"{root}/out", DATA, videos_per_shard=2,
                        label_from="folder", beam_options=ONE_WORKER)

    def without_paths(manifest):
        strip = lambda entries: [{k: v for k, v in e.items() if k != "path"} for e in entries]
        return {**strip_time(manifest), "inputs": {**manifest["inputs"], "source": None},
                "kept": strip(manifest["kept"]), "skipped": strip(manifest["skipped"])}

    assert without_paths(beam) == without_paths(local)
    assert beam["kept"][0]["path"].startswith(f"{root}/videos/")
    got = {r["video_id"]: r for r in read_records(f"{root}/out", beam)}
    for video_id, r in {r["video_id"]: r for r in read_records(tmp_path / "local", local)}.items():
        assert got[video_id]["audio"].tobytes() == r["audio"].tobytes(), video_id
        np.testing.assert_array_equal(got[video_id]["frame_times"], r["frame_times"])

    globbed = prepare_beam(f"{root}/videos/*/*.mp4", f"{root}/out-glob", DATA,
                           beam_options=ONE_WORKER)
    assert [e["video_id"] for e in globbed["kept"]] == [
        "cat/a.mp4", "dog/c.mp4", *(f"synthetic/clip_{i:05d}.mp4" for i in range(3))]
    assert [e["video_id"] for e in globbed["skipped"]] == ["dog/broken.mp4"]


@requires_beam
def test_beam_embed_needs_the_tower_it_runs(export_dir, videos, tmp_path):
    from l3_keras.beam.embed import embed_beam
    from l3_keras.errors import L3Error

    audio_only = tmp_path / "audio-only"
    shutil.copytree(export_dir, audio_only)
    (audio_only / "image_embedding.keras").unlink()
    with pytest.raises(L3Error, match="no image tower"):
        embed_beam("video", [videos / "cat"], tmp_path / "out", audio_only)
