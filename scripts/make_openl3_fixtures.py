"""Writes tests/data/openl3_embeddings.npz: OpenL3's own embeddings of fixed inputs.

Run from the repository root with our venv; it calls OpenL3's code (the oracle, never part of
l3_keras) in the oracle venv as a subprocess:

    python3 -m venv /tmp/openl3-oracle
    /tmp/openl3-oracle/bin/pip install "tensorflow-cpu==2.20.*" "kapre==0.3.7" h5py resampy \
        soundfile scikit-learn
    PYTHONPATH=$PWD .venv/bin/python scripts/make_openl3_fixtures.py \
        [--oracle-python /tmp/openl3-oracle/bin/python] [--openl3 ../shared/oracles/openl3]

Steps: seeded random weights in OpenL3's published layout (tests/openl3_fixtures.py) for the
linear / mel128 / mel256 audio networks and one image network; fixed inputs (seeded noise, and the
chirp / bento / daisy fixtures of ../shared/data); OpenL3's `get_audio_embedding` (hop 0.5 s,
center=True, 512 and 6144 dimensions) and image network (512 and 8192) on them. Only the
embeddings and timestamps are stored (6144 / 8192-D for each input's first window to keep the
file small); the weights are re-created from the seed by the tests.
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_ORACLE_PYTHON = "/tmp/openl3-oracle/bin/python"
DEFAULT_OPENL3 = REPO.parent / "shared" / "oracles" / "openl3"


def oracle_embeddings(work):
    """Runs in the ORACLE venv: OpenL3's own networks and framing on the inputs in `work`."""
    import warnings

    warnings.simplefilter("ignore")
    from openl3 import core, models

    from tests import openl3_fixtures as fx

    plan = json.loads((work / "plan.json").read_text())
    audio = dict(np.load(work / "audio.npz"))
    images = dict(np.load(work / "images.npz"))
    out = {}
    for repr_ in plan["audio_reprs"]:
        path = str(fx.weight_file(work, "audio", repr_))
        for size in (512, 6144):
            model = models.load_audio_embedding_model_from_path(path, repr_, size)
            for name, x in audio.items():
                emb, ts = core.get_audio_embedding(x, 48000, model=model, hop_size=fx.HOP,
                                                   center=True, verbose=0)
                out[f"audio/{repr_}/{size}/{name}"] = emb if size == 512 else emb[:1]
                out[f"timestamps/{name}"] = ts
    path = str(fx.weight_file(work, "image", fx.IMAGE_REPR))
    batch = np.stack(list(images.values())).astype(np.float32) / 255 * 2 - 1  # OpenL3's uint8 scaling
    for size in (512, 8192):
        emb = models.load_image_embedding_model_from_path(path, size).predict(batch, verbose=0)
        for name, e in zip(images, emb):
            out[f"image/{size}/{name}"] = e
    np.savez(work / "oracle.npz", **out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--oracle-python", default=DEFAULT_ORACLE_PYTHON)
    parser.add_argument("--openl3", default=str(DEFAULT_OPENL3), help="OpenL3 source folder")
    parser.add_argument("--media", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--out", default=None, help="default: tests/data/openl3_embeddings.npz")
    parser.add_argument("--reprs", nargs="+", default=None, help="audio networks (default: all)")
    parser.add_argument("--noise-only", action="store_true", help="only the generated inputs")
    args = parser.parse_args()

    from tests import openl3_fixtures as fx

    audio = {"noise": fx.noise_audio(), **({} if args.noise_only else fx.real_audio(args.media))}
    images = {"noise": fx.noise_image(), **({} if args.noise_only else fx.real_images(args.media))}
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        np.savez(work / "audio.npz", **audio)
        np.savez(work / "images.npz", **images)
        (work / "plan.json").write_text(json.dumps({"audio_reprs": args.reprs or fx.AUDIO_REPRS}))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([args.openl3, str(REPO)]),
                   TF_CPP_MIN_LOG_LEVEL="2")
        subprocess.run([args.oracle_python, __file__, "--in-oracle", str(work)], check=True, env=env)
        oracle = dict(np.load(work / "oracle.npz"))
    out = pathlib.Path(args.out) if args.out else fx.FIXTURES
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **oracle)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KB, {len(oracle)} arrays)")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--in-oracle":
        oracle_embeddings(pathlib.Path(sys.argv[2]))
    else:
        main()
