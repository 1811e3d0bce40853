#!/usr/bin/env bash
# Podman as this project's container engine where there is no Docker (CI, this machine).
# Idempotent steps, each safe to re-run; `all` does install + base + build + start.
#
#   scripts/podman.sh install    apt-get install podman runc debootstrap ... (only what is missing; root)
#   scripts/podman.sh base       debootstrap a Debian bookworm rootfs (cached) and import it as $BASE_IMAGE
#   scripts/podman.sh build      build docker/trainer.Dockerfile on that base as $TRAINER_IMAGE
#   scripts/podman.sh start      Docker-compatible API on unix://$SOCK (PID in $PIDFILE); prints DOCKER_HOST=...
#   scripts/podman.sh stop       stop that API server (by its PID)
#   scripts/podman.sh env        print the variables a client needs (eval "$(scripts/podman.sh env)")
#   scripts/podman.sh podman ... run podman with this project's engine config
#
# Why the settings (../shared/STACK.md, "Containers"): crun fails on this machine's cgroups, so runc;
# cgroupfs (no systemd); ulimits below the hard limits; no registry is reachable, so the base image comes
# from Debian's packages via debootstrap. Storage: kernel overlay when this host can mount it (then a
# container starts in ~1 s), else vfs, which copies the whole 2.5 GB image for every build step and
# every container (~1.5 min each here): set PODMAN_STORAGE_DRIVER to force one.
# Engine config and storage live under $CACHE (not /etc, not /var/lib/containers), so this never changes
# the machine's own podman set-up; the API socket and its PID live under .stack/ of this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

CACHE=${NCBI_RETRAIN_PODMAN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ncbi-retrain/podman}
BASE_IMAGE=${BASE_IMAGE:-localhost/debian-base:bookworm}
TRAINER_IMAGE=${NCBI_RETRAIN_TRAINER_IMAGE:-localhost/ncbi-retrain-trainer:latest}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# The local CPU torch wheel (a bare `pip install torch` in the image would pull a multi-GB CUDA build).
TORCH_WHEEL_DIR=${TORCH_WHEEL_DIR:-/opt/wheels}
STACK=$ROOT/.stack
SOCK=$STACK/podman.sock
PIDFILE=$STACK/podman.pid
PACKAGES=(podman runc debootstrap uidmap slirp4netns fuse-overlayfs containernetworking-plugins
  netavark aardvark-dns catatonit curl)

log() { echo "podman.sh: $*" >&2; }

storage_driver() {  # overlay if a kernel overlay mount works here, else vfs
  if [[ -n ${PODMAN_STORAGE_DRIVER:-} ]]; then echo "$PODMAN_STORAGE_DRIVER"; return; fi
  local t; t=$(mktemp -d) && mkdir "$t"/{l,u,w,m}
  if mount -t overlay overlay -o "lowerdir=$t/l,upperdir=$t/u,workdir=$t/w" "$t/m" 2>/dev/null; then
    umount "$t/m"; echo overlay
  else
    echo vfs
  fi
  rm -rf "$t"
}

write_config() {  # engine + storage config of our own, picked up through CONTAINERS_CONF/_STORAGE_CONF
  mkdir -p "$CACHE/tmp"
  local driver; driver=$(storage_driver)
  # One store per driver: podman refuses a store that another driver created.
  mkdir -p "$CACHE/storage-$driver"
  cat >"$CACHE/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
image_copy_tmp_dir = "$CACHE/tmp"
EOF
  cat >"$CACHE/storage.conf" <<EOF
[storage]
driver = "$driver"
graphroot = "$CACHE/storage-$driver"
runroot = "/run/ncbi-retrain-podman-$driver"
EOF
}
export CONTAINERS_CONF=$CACHE/containers.conf CONTAINERS_STORAGE_CONF=$CACHE/storage.conf TMPDIR=${TMPDIR:-/var/tmp}
pm() { podman --runtime runc --cgroup-manager cgroupfs "$@"; }

cmd_install() {
  local missing=()
  for p in "${PACKAGES[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
  if ((${#missing[@]} == 0)); then log "packages present"; return; fi
  log "installing ${missing[*]}"
  ((EUID == 0)) || { log "error: installing packages needs root (apt-get)"; exit 2; }
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

cmd_base() {
  write_config
  if pm image exists "$BASE_IMAGE"; then log "$BASE_IMAGE present"; return; fi
  local rootfs=$CACHE/debian-bookworm.tar
  if [[ ! -f $rootfs ]]; then
    local dir; dir=$(mktemp -d "$CACHE/debootstrap.XXXXXX")
    log "debootstrap bookworm (minbase + python3, python3-venv, ca-certificates) ..."
    local t0=$SECONDS
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
      bookworm "$dir" "$DEBIAN_MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
      || { log "error: debootstrap failed, see $CACHE/debootstrap.log"; rm -rf "$dir"; exit 1; }
    rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb
    tar -C "$dir" -cf "$rootfs.tmp" . && mv "$rootfs.tmp" "$rootfs"  # never a half-written rootfs
    rm -rf "$dir"
    log "debootstrap took $((SECONDS - t0)) s"
  fi
  pm import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' "$rootfs" "$BASE_IMAGE" >/dev/null
  log "imported $BASE_IMAGE"
}

cmd_build() {
  cmd_base
  # A small, explicit build context: tracked + new (not ignored) files of the package only, never .venv*.
  ctx=$(mktemp -d "$CACHE/context.XXXXXX")
  trap 'rm -rf "$ctx"' EXIT
  git ls-files -co --exclude-standard -- pyproject.toml README.md tasks docker/trainer.Dockerfile \
    | tar -cf - -T - | tar -C "$ctx" -xf -
  local mounts=() args=()
  if compgen -G "$TORCH_WHEEL_DIR/torch-*.whl" >/dev/null; then
    mounts+=(-v "$TORCH_WHEEL_DIR:/wheels:ro"); args+=(--build-arg PIP_FIND_LINKS=/wheels)
  fi
  # The host pip's CA bundle (a TLS-re-signing network) and local file:// mirrors, read-only, build-time only.
  local cert extra url extras=()
  cert=${PIP_CERT:-$(python3 -m pip config get global.cert 2>/dev/null || true)}
  if [[ -n $cert && -f $cert ]]; then
    mounts+=(-v "$cert:/opt/build-ca.crt:ro"); args+=(--build-arg PIP_CA_BUNDLE=/opt/build-ca.crt)
  fi
  extra=${PIP_EXTRA_INDEX_URL:-$(python3 -m pip config get global.extra-index-url 2>/dev/null || true)}
  for url in $extra; do
    if [[ $url == file://* ]]; then
      local dir=${url#file://}; dir=$(dirname "${dir%/}")  # file:///opt/pypi/simple -> /opt/pypi
      [[ -d $dir ]] || continue
      mounts+=(-v "$dir:$dir:ro")
    fi
    extras+=("$url")
  done
  ((${#extras[@]})) && args+=(--build-arg "PIP_EXTRA_INDEXES=${extras[*]}")
  log "building $TRAINER_IMAGE from $BASE_IMAGE ..."
  local t0=$SECONDS
  pm build --isolation=chroot --pull=never --network=host "${mounts[@]}" "${args[@]}" \
    --build-arg BASE_IMAGE="$BASE_IMAGE" -f "$ctx/docker/trainer.Dockerfile" -t "$TRAINER_IMAGE" "$ctx"
  log "built $TRAINER_IMAGE in $((SECONDS - t0)) s ($(pm image inspect --format '{{.Size}}' "$TRAINER_IMAGE") bytes)"
}

running() { [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

cmd_start() {
  write_config
  mkdir -p "$STACK"
  if running && curl -sf --unix-socket "$SOCK" http://d/_ping >/dev/null; then
    log "API already up (PID $(cat "$PIDFILE"))"
  else
    rm -f "$SOCK"
    # setsid: the server outlives this script but not `stop`; --time=0: no idle exit.
    # cwd = the state dir: conmon drops files (e.g. `oom` after an OOM kill) into its working directory.
    pushd "$STACK" >/dev/null
    setsid podman --runtime runc --cgroup-manager cgroupfs system service --time=0 "unix://$SOCK" >"$STACK/podman.log" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
    popd >/dev/null
    for _ in $(seq 100); do
      curl -sf --unix-socket "$SOCK" http://d/_ping >/dev/null 2>&1 && break
      running || { log "error: podman system service exited, see $STACK/podman.log"; exit 1; }
      sleep 0.2
    done
    curl -sf --unix-socket "$SOCK" http://d/_ping >/dev/null || { log "error: API not answering on $SOCK"; exit 1; }
    log "API up on unix://$SOCK (PID $(cat "$PIDFILE"))"
  fi
  echo "DOCKER_HOST=unix://$SOCK"
}

cmd_stop() {
  if running; then
    local pid; pid=$(cat "$PIDFILE")
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    log "stopped API (PID $pid)"
  fi
  rm -f "$PIDFILE" "$SOCK"
}

cmd_env() {
  echo "export CONTAINERS_CONF=$CONTAINERS_CONF CONTAINERS_STORAGE_CONF=$CONTAINERS_STORAGE_CONF"
  echo "export NCBI_RETRAIN_DOCKER_URL=unix://$SOCK NCBI_RETRAIN_TRAINER_IMAGE=$TRAINER_IMAGE"
}

case ${1:-} in
  install) cmd_install ;;
  base) cmd_install; cmd_base ;;
  build) cmd_install; cmd_build ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  env) cmd_env ;;
  podman) shift; write_config; pm "$@" ;;
  all) cmd_install; cmd_build; cmd_start ;;
  *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
