#!/usr/bin/env bash
# Create both virtual environments with pip; re-running only installs what changed.
# Two envs because the pins conflict: NeMo 2.4.1's lightning needs packaging<25, Airflow 3.3 needs >=25.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
stamp_of() { sha256sum pyproject.toml | cut -c1-16; }

make_env() {  # make_env DIR EXTRA [pre-install...]
  local dir=$1 extra=$2; shift 2
  local stamp="$dir/.ncbi-retrain-setup"
  if [[ -f $stamp && $(cat "$stamp") == "$(stamp_of)" ]]; then
    echo "setup: $dir is up to date"; return
  fi
  echo "setup: building $dir ($extra) ..."
  [[ -x $dir/bin/python ]] || "$PYTHON" -m venv "$dir"
  "$dir/bin/pip" install -q --disable-pip-version-check -U 'pip>=25.1'
  if (($#)); then "$dir/bin/pip" install -q "$@"; fi
  "$dir/bin/pip" install -q -e ".[$extra]" --group dev
  stamp_of >"$stamp"
}

make_env .venv airflow
# torch first, from the local CPU wheel (a bare `torch` would pull a multi-GB CUDA build).
make_env .venv-train train torch==2.13.0
# PyPI's torchvision does not import beside the CPU torch; NeMo runs without it.
.venv-train/bin/pip uninstall -q -y torchvision 2>/dev/null || true
echo "setup: done (.venv: Airflow/MLflow/DVC/GX; .venv-train: torch/NeMo/MLflow)"
