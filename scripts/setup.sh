#!/usr/bin/env bash
# Create both virtual environments; re-running only installs what changed (a stamp per environment: the
# hash of pyproject.toml and of this script).
#   .venv        the `airflow` extra + the dev group (Airflow, MLflow, DVC, GX)
#   .venv-train  the `train` extra + the dev group (torch from the local CPU wheel, NeMo, MLflow)
# Two envs because the pins conflict: NeMo 2.4.1's lightning needs packaging<25, Airflow 3.3 needs >=25.
#
# Installer: uv (default; 3-4x faster than pip: docs/setup.md has the measurements), installed into
# .tools with pip when no uv 0.13 is on PATH; pip with SETUP_INSTALLER=pip, and as the fallback when
# uv cannot be installed. uv does not read pip's config, so what it needs from it is passed explicitly:
# the find-links folder holding the CPU torch wheel, the constraint file and the CA bundle.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
INSTALLER=${SETUP_INSTALLER:-uv}
UV_SPEC='uv>=0.13,<0.14'
TOOLS=.tools
stamp_of() { cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16; }  # what builds an env
started=$SECONDS
say() { echo "setup: [$((SECONDS - started))s] $*"; }
die() { echo "setup: $*" >&2; exit 1; }

pip_conf() {  # pip_conf KEY: pip's own setting (environment first, then its config files), or nothing
  local env=PIP_${1^^}
  env=${env//-/_}
  if [[ -n ${!env:-} ]]; then echo "${!env}"; else "$PYTHON" -m pip config get "global.$1" 2>/dev/null || true; fi
}

# The torch release the train extra pins (pyproject.toml is the one source) and its local CPU wheel.
TORCH=$("$PYTHON" -c 'import re, tomllib
extra = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["train"]
print(next(re.sub(r"\s", "", r).split("==")[1] for r in extra if re.match(r"torch\s*==", r)))')
FIND_LINKS=${SETUP_FIND_LINKS:-$(pip_conf find-links)}
torch_wheel() {
  local dir
  for dir in $FIND_LINKS; do
    compgen -G "${dir#file://}/torch-$TORCH+cpu-*.whl" >/dev/null && { echo "${dir#file://}"; return; }
  done
  return 1
}

uv_bin() {  # the uv to use: on PATH, in .tools, or installed there now with pip (--target: no venv)
  if command -v uv >/dev/null && [[ $(uv --version) =~ ^uv\ 0\.13\. ]]; then command -v uv; return; fi
  if [[ ! -x $TOOLS/bin/uv ]]; then
    say "installing $UV_SPEC into $TOOLS with pip ..." >&2
    local out
    if ! out=$("$PYTHON" -m pip install -q --disable-pip-version-check --target "$TOOLS" "$UV_SPEC" 2>&1); then
      echo "$out" >&2
      return 1
    fi
  fi
  echo "$TOOLS/bin/uv"
}

check() {  # check DIR COMMAND...: the dependency check, its report shown only when it fails
  local dir=$1 out
  shift
  out=$("$@" 2>&1) || { echo "$out" >&2; die "$dir has broken requirements (above)"; }
}

up_to_date() { [[ -f $1/.ncbi-retrain-setup && $(cat "$1/.ncbi-retrain-setup") == "$(stamp_of)" ]]; }

uv_env() {  # uv_env DIR EXTRA [uv pip install options...]
  local dir=$1 extra=$2; shift 2
  [[ -x $dir/bin/python ]] || "$UV" venv -q --seed --python "$PYTHON" "$dir"
  "$UV" pip install -q --python "$dir/bin/python" "${UV_COMMON[@]}" "$@" -e ".[$extra]" --group dev
  check "$dir" "$UV" pip check --python "$dir/bin/python"
}

pip_env() {  # pip_env DIR EXTRA [pre-install...]
  local dir=$1 extra=$2; shift 2
  [[ -x $dir/bin/python ]] || "$PYTHON" -m venv "$dir"
  "$dir/bin/pip" install -q --disable-pip-version-check -U 'pip>=25.1'
  if (($#)); then "$dir/bin/pip" install -q "$@"; fi
  "$dir/bin/pip" install -q -e ".[$extra]" --group dev
  # PyPI's torchvision does not import beside the CPU torch; NeMo runs without it.
  "$dir/bin/pip" uninstall -q -y torchvision 2>/dev/null || true
  check "$dir" "$dir/bin/pip" check
}

[[ $INSTALLER == uv || $INSTALLER == pip ]] || die "SETUP_INSTALLER must be uv or pip (got '$INSTALLER')"
if up_to_date .venv && up_to_date .venv-train; then
  say ".venv and .venv-train are up to date"
  exit 0
fi
if [[ $INSTALLER == uv ]]; then
  UV=$(uv_bin) || { say "uv could not be installed: falling back to pip (slower)"; INSTALLER=pip; }
fi
case $INSTALLER in
  uv)
    UV_COMMON=()
    constraint=$(pip_conf constraint)
    [[ -n $constraint && -f $constraint ]] && UV_COMMON+=(--constraint "$constraint")
    cert=$(pip_conf cert)
    [[ -n $cert && -f $cert && -z ${SSL_CERT_FILE:-} ]] && export SSL_CERT_FILE=$cert
    # A bare `torch==X` would let uv take PyPI's CUDA build (several GB): pin the local CPU build
    # exactly, which only the find-links folder has.
    wheels=$(torch_wheel) || die "no torch-$TORCH+cpu wheel in '$FIND_LINKS' (pip's find-links); \
put it in a folder and run with SETUP_FIND_LINKS=FOLDER, or use SETUP_INSTALLER=pip"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    echo "torch==$TORCH+cpu" >"$tmp/torch.txt"
    echo torchvision >"$tmp/exclude.txt"
    build() {
      if up_to_date "$1"; then say "$1 is up to date"; return; fi
      say "building $1 ($2) with $("$UV" --version) ..."
      if [[ $2 == train ]]; then
        # torchvision is excluded: PyPI's build does not import beside the CPU torch; NeMo runs without it.
        uv_env "$1" "$2" --find-links "$wheels" --constraint "$tmp/torch.txt" --excludes "$tmp/exclude.txt"
        # Bytecode, as pip compiles by default: each train job imports NeMo's chain in a new process, and
        # without .pyc files compiles it from source (~20 s more per job on 2 cores), on every job where
        # PYTHONDONTWRITEBYTECODE is set (docs/setup.md). Not uv's --compile-bytecode: it compiles only
        # the packages one install adds, never an env built before. compileall's one error (exit 1) is a file
        # torch ships for Python 3.12 only. The other env stays lazy: its compile would take setup past 2 min.
        say "compiling $1's bytecode ..."
        "$1/bin/python" -m compileall -qq -j 0 "$("$1/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" || true
      else
        uv_env "$1" "$2"
      fi
      stamp_of >"$1/.ncbi-retrain-setup"
    }
    ;;
  pip)
    build() {
      if up_to_date "$1"; then say "$1 is up to date"; return; fi
      say "building $1 ($2) with pip ..."
      # torch first, from the local CPU wheel (a bare `torch` would pull a multi-GB CUDA build).
      if [[ $2 == train ]]; then pip_env "$1" "$2" "torch==$TORCH"; else pip_env "$1" "$2"; fi
      stamp_of >"$1/.ncbi-retrain-setup"
    }
    ;;
esac
build .venv airflow
build .venv-train train
say "done (.venv: Airflow/MLflow/DVC/GX; .venv-train: torch/NeMo/MLflow)"
