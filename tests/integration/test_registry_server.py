"""The registry against a real `mlflow server` over HTTP, backed by PostgreSQL.

Each test uses its own registered model name, so they share one server and stay independent.
"""

from __future__ import annotations

import multiprocessing as mp
import socket
import time
from pathlib import Path

import pytest
from registry_helpers import (
    classifier_metrics,
    log_candidate,
    noisy_preds,
    use_store,
)  # tests/ is on sys.path

from tasks import registry
from tasks.errors import GateFailed, ServiceError
from tasks.gates import decide, load_metrics

pytestmark = pytest.mark.integration
GOLD = [i % 3 for i in range(150)]
GOOD = classifier_metrics(noisy_preds(GOLD, 0.92, 1), GOLD)
WORSE = classifier_metrics(noisy_preds(GOLD, 0.55, 2), GOLD)


@pytest.fixture
def server(mlflow_server, monkeypatch) -> str:
    return use_store(mlflow_server.url, monkeypatch)


def test_register_promote_rollback_over_http(server, tmp_path: Path):
    name = "itest-flow"
    r1 = log_candidate(metrics=GOOD, experiment="itest-flow")
    first = registry.register_run(name, r1, decide("classifier", GOOD, None, "cpu"))
    retry = registry.register_run(name, r1, decide("classifier", GOOD, None, "cpu"))
    assert (first.version, first.created, retry.version, retry.created) == ("1", True, "1", False)
    registry.promote(name, "1", "first", actor="alice")

    champ = registry.champion_metrics(name, tmp_path)
    decision = decide("classifier", WORSE, load_metrics(champ), "cpu")
    assert not decision.passed
    second = registry.register_run(name, log_candidate(metrics=WORSE, experiment="itest-flow"), decision)
    with pytest.raises(GateFailed):
        registry.promote(name, second.version, "should not move")
    rows = {r["version"]: r["aliases"] for r in registry.list_versions(name)}
    assert rows == {"1": ["champion"], "2": ["challenger"]}

    third = registry.register_run(
        name, log_candidate(metrics=GOOD, experiment="itest-flow", payload=b"v3"), None
    )
    registry.promote(name, third.version, "by hand", actor="bob")
    back = registry.rollback(name, None, "regression", actor="carol")
    assert (back["from"], back["version"]) == ("3", "1")
    champion_moves = [
        (m["from"], m["to"], m["who"]) for m in registry.history(name) if m["alias"] == "champion"
    ]
    assert champion_moves == [(None, "1", "alice"), ("1", "3", "bob"), ("3", "1", "carol")]
    info = registry.lineage(f"{name}@champion")
    assert info["run"]["run_id"] == r1 and info["gate"]["gate"] == "passed" and info["chain"][0] == "data d1"
    assert info["model"]["source"].startswith("models:/m-")


def _racer(uri: str, name: str, run_ids: list[str], barrier, results) -> None:
    """One of two processes registering the same runs at the same moment."""
    import os

    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ["NCBI_RETRAIN_MLFLOW_TRACKING_URI"] = uri
    from tasks import registry as reg
    from tasks.registry.service import client

    client()  # import MLflow and connect before the start line, so both really race
    for run_id in run_ids:
        barrier.wait(timeout=60)
        rv = reg.register_run(name, run_id, None)
        results.put((os.getpid(), run_id, rv.version, rv.created))


def test_two_processes_racing_on_the_same_run_get_one_version(server):
    name = "itest-race"
    run_ids = [log_candidate(metrics=GOOD, experiment="itest-race", payload=bytes([i])) for i in range(4)]
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_racer, args=(server, name, run_ids, barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in range(2 * len(run_ids))]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    versions = registry.list_versions(name)
    for run_id in run_ids:
        answers = {v for _, r, v, _ in got if r == run_id}
        assert len(answers) == 1, (run_id, got)  # both processes returned the same version
        assert [v["version"] for v in versions if v["run_id"] == run_id] == list(answers)
        assert sum(created for _, r, _, created in got if r == run_id) <= 1
    assert len(versions) == len(run_ids)
    assert all(v["gate"] == "none" and v["data_version"] == "d1" and v["git_commit"] for v in versions)
    # The last run's version holds challenger; duplicates (if a race created one) were deleted unaliased.
    latest = max(versions, key=lambda v: int(v["version"]))
    assert latest["aliases"] == ["challenger"]
    numbers = sorted(int(v["version"]) for v in versions)
    print(f"versions left {numbers}: at least {numbers[-1] - len(numbers)} racing duplicate(s) removed")


def test_down_server_fails_fast_with_a_clear_error(monkeypatch):
    # Nothing listening: refused at once, bounded retries.
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    refused = port.getsockname()[1]
    port.close()
    use_store(f"http://127.0.0.1:{refused}", monkeypatch)
    start = time.monotonic()
    with pytest.raises(ServiceError, match=f"MLflow at http://127.0.0.1:{refused} is unreachable"):
        registry.list_versions()
    assert time.monotonic() - start < 15

    # A hung server (accepts connections, never answers): the request timeout bounds it.
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)
    try:
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        use_store(f"http://127.0.0.1:{hung.getsockname()[1]}", monkeypatch)
        start = time.monotonic()
        with pytest.raises(ServiceError, match="is unreachable"):
            registry.register_run("itest-down", "0" * 32, None)
        assert time.monotonic() - start < 20
    finally:
        hung.close()
