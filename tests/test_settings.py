"""Settings that Airflow itself calls: the host name a worker records for its task instances."""

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
