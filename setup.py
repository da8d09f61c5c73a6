"""Installs the l3_keras package and the `l3` command.

TensorFlow comes from an extra, so that exactly one build is installed:
    CPU machines:  pip install -e .[cpu]   (tensorflow-cpu)
    NVIDIA GPUs:   pip install -e .[gpu]   (tensorflow[and-cuda])
The TF Serving protos (for warm-up files) are installed separately with --no-deps, because the
package's own requirements would pull a second TensorFlow:
    pip install --no-deps "tensorflow-serving-api==2.21.*"
librosa is a test oracle only (extra "test", requirements-test.txt), never imported at run time.
Beam jobs (`l3 prepare|embed --runner beam`) need the "beam" extra, or "dataflow" to submit them to
Google Cloud Dataflow (apache-beam[gcp]: ~100 more packages, so it is not the default), plus Beam's
TF model handler's imports, tensorflow-hub and tf-keras, with --no-deps (tf-keras would pull a
second TensorFlow):
    pip install -e .[cpu,beam] && pip install --no-deps -r requirements-beam.txt
"""
import pathlib
import re

from setuptools import find_packages, setup

# The one version string lives in l3_keras/__init__.py.
VERSION = re.search(r'^__version__ = "([^"]+)"',
                    (pathlib.Path(__file__).parent / "l3_keras" / "__init__.py").read_text(),
                    re.M).group(1)

BEAM = "apache-beam==2.77.*"  # resolves with tensorflow 2.21 / keras 3.15 (protobuf 6, numpy 2)

setup(
    name="l3_keras",
    version=VERSION,
    description="Look, Listen and Learn (L3-Net) in TensorFlow / Keras 3",
    packages=find_packages(include=["l3_keras", "l3_keras.*"]),
    python_requires=">=3.10",
    install_requires=[
        "keras==3.15.*",
        "soxr>=0.3",
        "soundfile>=0.12",
        "av>=12",
        "keras-tuner==1.4.*",
        "tensorboard==2.21.*",
        "numpy>=1.26",
        "scipy>=1.11",
        "matplotlib>=3.8",
        "pillow>=10",
        "scikit-learn>=1.4",
        "threadpoolctl>=3.1",
        "tqdm>=4.66",
    ],
    extras_require={
        "cpu": ["tensorflow-cpu==2.21.*"],
        "gpu": ["tensorflow[and-cuda]==2.21.*"],
        "test": ["pytest>=8", "librosa>=0.10"],
        "beam": [BEAM],
        "dataflow": [BEAM.replace("apache-beam", "apache-beam[gcp]")],
    },
    entry_points={"console_scripts": ["l3=l3_keras.cli:main"]},
)
