"""Small shared test helpers (keras-hub style): build inputs, reload in a fresh process, compare."""
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np

from l3_keras.config import ModelConfig


def random_inputs(cfg: ModelConfig, batch=2, seed=0):
    """{"image": [b, H, W, 3] in [0, 1], "audio": [b, samples] in [-1, 1]} as float32."""
    rng = np.random.default_rng(seed)
    return {
        "image": rng.random((batch, *cfg.image_size, 3), dtype=np.float32),
        "audio": (rng.random((batch, cfg.audio_samples), dtype=np.float32) * 2 - 1) * 0.5,
    }


def predict_in_fresh_process(model_path, inputs, tmp_path, import_l3_keras=False):
    """Loads `model_path` with tf.keras.models.load_model in a new Python WITHOUT importing
    l3_keras, runs it on `inputs` (an array or a dict of arrays) and returns its outputs.

    import_l3_keras=True imports it first, for models holding our registered layers
    (`audio.DecibelSpectrogram`), and checks that nothing else of ours is needed.
    """
    tmp_path = pathlib.Path(tmp_path)
    np.savez(tmp_path / "inputs.npz", **(inputs if isinstance(inputs, dict) else {"x": inputs}))
    script = textwrap.dedent(
        f"""
        import sys, numpy as np, tensorflow as tf
        assert "l3_keras" not in sys.modules
        if {import_l3_keras!r}:
            import l3_keras.audio
        model = tf.keras.models.load_model({str(model_path)!r})
        data = dict(np.load({str(tmp_path / "inputs.npz")!r}))
        x = data["x"] if list(data) == ["x"] else data
        out = model.predict(x, verbose=0)
        out = out if isinstance(out, (list, tuple)) else [out]
        assert {import_l3_keras!r} or "l3_keras" not in sys.modules, "loading needed l3_keras"
        np.savez({str(tmp_path / "outputs.npz")!r}, *out)
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path)
    out = np.load(tmp_path / "outputs.npz")
    return [out[f"arr_{i}"] for i in range(len(out.files))]


def as_list(outputs):
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def kill_after_first_shard(code, args, out_dir, timeout=300):
    """Runs `python -c code *args` and SIGKILLs it as soon as the first shard under `out_dir` is
    finished (its sidecar exists), while the others are still to do."""
    out_dir = pathlib.Path(out_dir)
    repo = pathlib.Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=repo)
    try:
        deadline = time.time() + timeout
        while not list(out_dir.glob("part-*.json")) and proc.poll() is None:
            assert time.time() < deadline
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
