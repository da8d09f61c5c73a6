"""A non-editable install (`pip install .` into a fresh venv) runs the main job from another folder
and writes runs/, .cache/ and saved_models/ there, never beside the installed package."""
import json
import os
import pathlib
import shutil
import site
import subprocess
import sys
import sysconfig
import textwrap

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

# The main job's code path (`recipes/train_flickr.py` with no --data: synthetic clips -> prepare ->
# train -> export), shortened: 24 clips of 2 s and 2 training steps.
MAIN_JOB = textwrap.dedent("""
    import json, logging
    import l3_keras
    from l3_keras.train import recipe
    recipe.SYNTHETIC_CLIPS = 24
    recipe.SYNTHETIC = recipe.SYNTHETIC.replace(seconds=2.0, event_seconds=(0.5, 1.0))
    results = recipe.run_recipe(steps_per_epoch=2, epochs=1, batch_per_replica=8,
                                validation_pairs=16, checkpoint_every=0, log_every=1, workers=1)
    print("RESULT", json.dumps({"package": l3_keras.__file__, "run_dir": results["run_dir"],
                                "export": results["export"]}))
""")


def _fresh_venv(folder: pathlib.Path) -> pathlib.Path:
    """A new venv that sees this environment's packages (TensorFlow & co.) through a .pth file.

    `--system-site-packages` would expose the base interpreter's packages, not this venv's; a .pth
    line adds our site-packages after the new venv's own, so the new install wins, and the
    editable-install hook of our site-packages (a .pth of its own) is not run.
    """
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=300)
    python = folder / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
    pathlib.Path(purelib, "shared_env.pth").write_text("\n".join(sorted(ours)) + "\n")
    return python


@pytest.mark.slow
def test_pip_installed_main_job_writes_under_the_working_directory(tmp_path):
    src = tmp_path / "src"  # build from a copy: pip leaves build/ and *.egg-info in the source
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".venv", ".git", "runs", ".cache", "saved_models", "build", "*.egg-info", "__pycache__",
        ".pytest_cache"))
    python = _fresh_venv(tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # never the repo's code
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps",
                              "--no-build-isolation", str(src)], env=env, capture_output=True,
                             text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    assert (tmp_path / "venv" / "bin" / "l3").exists()  # the console script

    work = tmp_path / "work"
    work.mkdir()
    out = subprocess.run([str(python), "-c", MAIN_JOB], cwd=work, env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.split("RESULT", 1)[1])
    package = pathlib.Path(result["package"]).parent
    assert package.is_relative_to(tmp_path / "venv")  # the installed copy ran, not the repo
    assert pathlib.Path(result["run_dir"]) == work / "runs" / "tiny-synthetic"
    assert pathlib.Path(result["export"]) == work / "saved_models" / "l3-tiny-synthetic"
    assert (work / "runs" / "tiny-synthetic" / "model.keras").exists()
    assert (work / "saved_models" / "l3-tiny-synthetic" / "serving" / "1").is_dir()
    assert list((work / ".cache").glob("synthetic-*/clip_00023.mp4"))
    site_dir = package.parent
    for name in ("runs", ".cache", "saved_models"):
        assert not (site_dir / name).exists() and not (package / name).exists(), name
