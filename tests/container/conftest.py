"""The container tier: the trainer image built with podman and jobs run through its Docker-compatible API.

Runs when podman is installed, or when `NCBI_RETRAIN_CONTAINER_TESTS=1` asks this tier to install it
(root: apt-get). `scripts/podman.sh build` is idempotent and cached (debootstrap rootfs, image layers),
so a session that already built the image only re-checks it; the API socket is started on this
checkout's `.stack/podman.sock` and stopped at the end if this session started it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "podman.sh"
SOCK = ROOT / ".stack" / "podman.sock"
IMAGE = os.environ.get("NCBI_RETRAIN_TRAINER_IMAGE", "localhost/ncbi-retrain-trainer:latest")
ASKED = os.environ.get("NCBI_RETRAIN_CONTAINER_TESTS") == "1"


def _sh(*args: str, timeout: float = 1200) -> str:
    proc = subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    if proc.returncode != 0:
        pytest.fail(f"scripts/podman.sh {' '.join(args)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


@pytest.fixture(scope="session")
def engine() -> str:
    """The Docker API URL of a podman service with the trainer image built (skips without podman)."""
    if shutil.which("podman") is None and not ASKED:
        pytest.skip("podman is not installed: set NCBI_RETRAIN_CONTAINER_TESTS=1 to install it (as root)")
    if os.geteuid() != 0:
        pytest.skip("the container tier runs rootful podman (runc, cgroupfs): run it as root")
    _sh("build")  # installs what is missing, debootstraps once, rebuilds only changed layers
    was_up = SOCK.exists() and (ROOT / ".stack" / "podman.pid").exists()
    _sh("start", timeout=60)
    url = f"unix://{SOCK}"
    yield url
    if not was_up:
        _sh("stop", timeout=60)


@pytest.fixture
def settings_env(engine: str, monkeypatch: pytest.MonkeyPatch):
    """Point Settings at the podman API and the trainer image; `setenv(**kw)` adds more, cache cleared."""
    from tasks.settings import get_settings

    def setenv(**kw: str) -> None:
        for k, v in kw.items():
            monkeypatch.setenv(k, v)
        get_settings.cache_clear()

    setenv(NCBI_RETRAIN_DOCKER_URL=engine, NCBI_RETRAIN_TRAINER_IMAGE=IMAGE, NCBI_RETRAIN_LAUNCHER="docker")
    yield setenv
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.fixture
def client(engine: str):
    import docker

    c = docker.DockerClient(base_url=engine, timeout=120)
    yield c
    c.close()


@pytest.fixture
def leftovers(client):
    """`leftovers(name)`: the containers (any state) that a job named `name` left behind."""
    return lambda name: client.containers.list(all=True, filters={"label": f"ncbi-retrain.job={name}"})
