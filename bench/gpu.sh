#!/usr/bin/env bash
# GPU readiness: one epoch of each model with the `gpu` profile (bf16-mixed, seq 128, batch 32) and a
# randomly initialised encoder of the profile's shape (bert-base: no weights can be downloaded), then
# samples/s, MFU and peak GPU memory for each (bench/gpu_train.py). Meant to end within 8 minutes on one
# H200, preparation included.
#
#   bash bench/gpu.sh pack         here (PyPI reachable): put what a machine without PyPI needs into
#                                  .gpu-carry/ (gitignored): Python 3.12 wheels of bench/gpu-overlay.txt
#                                  and the NCBI release packed; carry that folder along (~57 MiB)
#   bash bench/gpu.sh [KEY=VALUE]  on the GPU machine: prepare, import the data, train, print the table
#   bash bench/gpu.sh --dry-run    the same on a CPU with the tiny encoder and a few steps (no GPU needed)
#
# Preparation, only what is missing:
#   * Python: GPU_PYTHON, else .venv-train/bin/python or python3, the first whose torch sees CUDA; with
#     none, a venv build/gpu-venv with PyPI's torch (a CUDA build) and the train extra (needs PyPI).
#   * NeMo and the training env's pins: when that Python cannot import them, bench/gpu-overlay.txt is
#     installed (pip --no-deps --target) into build/gpu-site, first on PYTHONPATH; from .gpu-carry/wheels
#     when present, else from PyPI.
#   * Data: `ncbi-retrain data import` of the NCBI release (the first of NCBI_SHARED_DATA,
#     .gpu-carry/release.tar.gz, ../shared/data, shared/data that holds it) into build/gpu-data.
# Results: the table on stdout; gpu.json and gpu.log in GPU_OUT (default bench/results/gpu).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CARRY=$ROOT/.gpu-carry
OVERLAY=$ROOT/build/gpu-site
DATA=$ROOT/build/gpu-data
RESULTS=${GPU_OUT:-$ROOT/bench/results/gpu}
PYVER=${GPU_PYTHON_VERSION:-3.12}  # the lent H200 machines' python3 (device README)
started=$(date +%s)
say() { printf 'gpu.sh [%3ds] %s\n' $(($(date +%s) - started)) "$*"; }
die() { echo "gpu.sh: $*" >&2; exit 1; }
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONWARNINGS=ignore

release_dir() {  # the first folder that holds the NCBI release and the MeSH tree
  local d
  if [[ -f $CARRY/release.tar.gz && ! -d $ROOT/build/gpu-release ]]; then
    mkdir -p "$ROOT/build/gpu-release" && tar -xzf "$CARRY/release.tar.gz" -C "$ROOT/build/gpu-release"
  fi
  for d in ${NCBI_SHARED_DATA:-} "$ROOT/build/gpu-release" "$ROOT/../shared/data" "$ROOT/shared/data"; do
    [[ -f $d/ncbi_disease/original/NCBItrainset_corpus.txt && -f $d/mesh/2017MeshTree.txt ]] && {
      echo "$d"; return; }
  done
  return 1
}

pack() {
  local wheels=$CARRY/wheels req name src
  command -v "${PYTHON:-python3}" >/dev/null || die "pack needs python3 with pip"
  mkdir -p "$wheels"
  # One wheel per pin, for CPython $PYVER on manylinux x86_64; an sdist-only release is built here
  # into a wheel, which is then pure Python (py3-none-any) or refused.
  while read -r req; do
    name=${req%%==*}
    compgen -G "$wheels/$(echo "$name" | tr - _)-${req#*==}-*.whl" >/dev/null && continue  # packed before
    if ! "${PYTHON:-python3}" -m pip download -q --no-deps --only-binary=:all: -d "$wheels" \
      --python-version "$PYVER" --implementation cp --platform manylinux_2_28_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 "$req" 2>/dev/null; then
      "${PYTHON:-python3}" -m pip wheel -q --no-deps -w "$wheels" "$req" 2>/dev/null ||
        die "no wheel for $req"
      compgen -G "$wheels/$(echo "$name" | tr - _)-*-py3-none-any.whl" >/dev/null ||
        compgen -G "$wheels/${name}-*-py3-none-any.whl" >/dev/null || die "$req built a platform wheel"
    fi
  done < <(sed -E 's/#.*//; s/[[:space:]]+//g; /^$/d' bench/gpu-overlay.txt)
  src=$(release_dir) || die "no NCBI release found (set NCBI_SHARED_DATA)"
  tar -czf "$CARRY/release.tar.gz" --mode=u+w -C "$src" ncbi_disease mesh  # 5.6 MB of text, ~1.5 MB packed
  local mib=$(( ($(du -sb "$CARRY" | cut -f1) + $(git ls-files -z | xargs -0 cat | wc -c)) >> 20 ))
  say "packed $(find "$wheels" -name '*.whl' | wc -l) wheels and the release into $CARRY: ${mib} MiB with the tracked files"
  ((mib < 64)) || echo "gpu.sh: that is over the 64 MiB a device run carries" >&2
}

has_torch() {  # has_torch PYTHON: torch imports (and sees CUDA unless this is a dry run)
  local want=${DRY_RUN:+any}
  "$1" -c "import sys, torch; sys.exit(0 if '$want' == 'any' or torch.cuda.is_available() else 1)" 2>/dev/null
}

pick_python() {
  local p
  for p in ${GPU_PYTHON:-} "$ROOT/.venv-train/bin/python" "$(command -v python3 || true)"; do
    [[ -n $p && -x $p ]] && has_torch "$p" && { echo "$p"; return; }
  done
  # No CUDA torch here: a venv with PyPI's (its Linux wheels are CUDA builds) and the train extra.
  local venv=$ROOT/build/gpu-venv torch
  torch=$(python3 -c 'import tomllib; print(next(r for r in tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["train"] if r.startswith("torch")))')
  say "no Python with a CUDA torch: building $venv from PyPI ($torch) ..." >&2
  [[ -x $venv/bin/python ]] || python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q --index-url https://pypi.org/simple "$torch" >&2 &&
    "$venv/bin/pip" install -q -e ".[train]" >&2 || die "could not install torch and the train extra from PyPI"
  has_torch "$venv/bin/python" || die "$venv: torch does not see a CUDA device"
  echo "$venv/bin/python"
}

ready() {  # the training path's imports at the pinned versions; prints those versions
  "$PY" - <<'EOF' 2>/dev/null
import importlib.metadata as md, re, sys
pins = dict(re.match(r"([\w.-]+)==([\w.]+)", l).groups() for l in open("bench/gpu-overlay.txt")
            if re.match(r"[\w.-]+==", l))
bad = [n for n in ("nemo-toolkit", "lightning", "transformers", "megatron-core") if md.version(n) != pins[n]]
from nemo.collections.nlp.models import TextClassificationModel, TokenClassificationModel  # noqa: F401
import pyab3p, pydantic_settings, seqeval, torchcrf, typer  # noqa: F401
import tasks.training.train  # noqa: F401
print(" ".join(f"{n} {md.version(n)}" for n in ("nemo-toolkit", "lightning", "transformers", "torch")))
sys.exit(1 if bad else 0)
EOF
}

run() {
  local dry=() src
  [[ -n ${DRY_RUN:-} ]] && dry=(--dry-run)
  mkdir -p "$RESULTS"
  exec > >(tee "$RESULTS/gpu.log") 2>&1
  say "start on ${HOSTNAME:-this machine} ($(nproc) cores)${DRY_RUN:+, dry run on the CPU}"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  PY=$(pick_python) || die "no Python with torch (set GPU_PYTHON)"
  export PYTHONPATH=$ROOT
  say "python: $PY ($("$PY" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__)'))"
  local stamp versions
  stamp=$(sha256sum bench/gpu-overlay.txt | cut -c1-16)
  versions=$(ready) || versions=
  if [[ -z $versions && -f $OVERLAY/.stamp && $(cat "$OVERLAY/.stamp") == "$stamp" ]]; then
    # installed by an earlier run
    if versions=$(PYTHONPATH=$OVERLAY:$ROOT ready); then export PYTHONPATH=$OVERLAY:$ROOT; else versions=; fi
  fi
  if [[ -z $versions ]]; then
    local from=(--no-index --find-links "$CARRY/wheels") where="$CARRY/wheels"
    [[ -d $CARRY/wheels ]] || { from=(); where=PyPI; }  # no carried wheels: PyPI
    say "installing bench/gpu-overlay.txt into $OVERLAY from $where ..."
    rm -rf "$OVERLAY"
    "$PY" -m pip install -q --disable-pip-version-check --no-deps --no-compile --target "$OVERLAY" \
      "${from[@]}" -r bench/gpu-overlay.txt || die "could not install bench/gpu-overlay.txt"
    echo "$stamp" >"$OVERLAY/.stamp"
    export PYTHONPATH=$OVERLAY:$ROOT
    versions=$(ready) || { "$PY" -c 'from nemo.collections.nlp.models import TextClassificationModel' || true
      die "NeMo's NLP models still do not import with $OVERLAY"; }
  fi
  say "ready: $versions"
  # The whole release: the test fixtures' slice is too small to score (one test abstract).
  src=$(release_dir) || die "no NCBI release in NCBI_SHARED_DATA, $CARRY, ../shared/data or shared/data"
  local args=(--pubtator "$src/ncbi_disease/original" --iob "$src/ncbi_disease/iob" --mesh "$src/mesh/2017MeshTree.txt")
  "$PY" -m tasks.cli data import "${args[@]}" --out "$DATA" --force >/dev/null
  say "data imported from $src into $DATA"
  "$PY" bench/gpu_train.py --data "$DATA" --json "$RESULTS/gpu.json" "${dry[@]}" "$@"
  local took=$(($(date +%s) - started))
  say "done in ${took}s (budget 480 s)$( ((took > 480)) && echo ': OVER BUDGET')"
}

case ${1:-} in
  pack) pack ;;
  --dry-run) shift; DRY_RUN=1 run "$@" ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
  *) run "$@" ;;
esac
