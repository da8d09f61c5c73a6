#!/usr/bin/env bash
# Creates ./.venv (if missing) and installs l3_keras with everything it needs, from the project's
# own files. CPU build by default; L3_GPU=1 installs tensorflow[and-cuda] instead of tensorflow-cpu.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if [ "${L3_GPU:-0}" = "1" ]; then
  grep -v '^tensorflow-cpu' requirements.txt > .venv/requirements-gpu.txt
  .venv/bin/python -m pip install -q -r .venv/requirements-gpu.txt -r requirements-test.txt -e ".[gpu,beam]"
else
  .venv/bin/python -m pip install -q -r requirements.txt -r requirements-test.txt -e ".[beam]"
fi
# The serving protos' and Beam's TF handler's imports' own requirements would pull a second
# TensorFlow: install them alone.
.venv/bin/python -m pip install -q --no-deps -r requirements-serving.txt -r requirements-beam.txt
.venv/bin/python -c "import tensorflow as tf, keras, apache_beam; print('l3_keras env: tensorflow', tf.__version__, 'keras', keras.__version__, 'apache-beam', apache_beam.__version__)"
