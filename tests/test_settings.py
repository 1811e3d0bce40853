"""Settings that Airflow itself calls (the host name a worker records for its task instances), and the
approval step's: the nightly promote mode and the approval timeout (a duration)."""

from __future__ import annotations

import socket

import pytest

from tasks.settings import get_settings, worker_hostname


@pytest.fixture(autouse=True)
def _fresh_settings():
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_worker_hostname_is_the_configured_worker_name(monkeypatch):
    monkeypatch.setenv("NCBI_RETRAIN_WORKER_NAME", "worker-gpu")
    assert worker_hostname() == "worker-gpu"


def test_worker_hostname_falls_back_to_the_fqdn(monkeypatch):
    monkeypatch.delenv("NCBI_RETRAIN_WORKER_NAME", raising=False)
    assert worker_hostname() == socket.getfqdn()


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(None, 86400), ("30", 30), ("86400", 86400), ("PT2H", 7200), ("P1D", 86400), ("00:10:00", 600)],
)
def test_the_approval_timeout_is_a_duration(monkeypatch, value, seconds):
    """NCBI_RETRAIN_APPROVAL_TIMEOUT: plain seconds, ISO 8601 or HH:MM:SS; 24 h when unset."""
    if value is None:
        monkeypatch.delenv("NCBI_RETRAIN_APPROVAL_TIMEOUT", raising=False)
    else:
        monkeypatch.setenv("NCBI_RETRAIN_APPROVAL_TIMEOUT", value)
    assert get_settings().approval_timeout.total_seconds() == seconds


@pytest.mark.parametrize("value", ["0", "soon", "-5"])
def test_a_bad_approval_timeout_is_refused(monkeypatch, value):
    from pydantic import ValidationError

    monkeypatch.setenv("NCBI_RETRAIN_APPROVAL_TIMEOUT", value)
    with pytest.raises(ValidationError, match="approval_timeout"):
        get_settings()


def test_the_nightly_promote_mode_defaults_to_auto_and_is_configurable(monkeypatch):
    monkeypatch.delenv("NCBI_RETRAIN_PROMOTE", raising=False)
    assert get_settings().promote == "auto"
    get_settings.cache_clear()
    monkeypatch.setenv("NCBI_RETRAIN_PROMOTE", "approve")
    assert get_settings().promote == "approve"


@pytest.mark.parametrize("name", ["NCBI_SHARED_DATA", "NCBI_RETRAIN_SHARED_DATA"])
def test_the_shared_release_is_found_by_the_documented_variable(monkeypatch, tmp_path, name):
    """The README, `make demo` and the tests name NCBI_SHARED_DATA; `evolve` must honour it too."""
    for var in ("NCBI_SHARED_DATA", "NCBI_RETRAIN_SHARED_DATA"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(name, str(tmp_path))
    assert get_settings().shared_data == tmp_path
