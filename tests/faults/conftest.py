"""The fault-injection tier (marker `faults`): each test injects one fault into a real component and checks
that nothing is lost, nothing is duplicated, and the final message is clear. See README.md here.

Every test in this folder gets the `faults` marker; the run ends with one line `faults survived P/N`
(P passed of the N that ran; skipped ones are counted apart, with their reasons above).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from registry_helpers import use_store  # tests/ is on sys.path
from servers import MlflowProcess, PostgresCluster

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.faults)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    outcome: dict[str, str] = {}  # nodeid -> passed | failed | skipped (a failure in any phase wins)
    for key in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(key, []):
            if "faults" not in getattr(report, "keywords", {}):
                continue
            state = {"error": "failed"}.get(key, key)
            if state == "passed" and report.when != "call":
                continue
            if outcome.get(report.nodeid) != "failed":
                outcome[report.nodeid] = state
    if not outcome:
        return
    survived = sum(v == "passed" for v in outcome.values())
    ran = sum(v in ("passed", "failed") for v in outcome.values())
    skipped = sum(v == "skipped" for v in outcome.values())
    line = f"faults survived {survived}/{ran}" + (f" ({skipped} skipped)" if skipped else "")
    terminalreporter.write_line(line, bold=True, green=survived == ran, red=survived != ran)


@pytest.fixture
def killable_mlflow(
    postgres: PostgresCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[MlflowProcess]:
    """An MLflow server of this test only (its own PostgreSQL database and artifacts), started, with the
    registry and MLflow's fluent API pointed at it; the test may `kill()` and `start()` it again."""
    pytest.importorskip("mlflow")
    backend = postgres.create_database(f"faults_{uuid.uuid4().hex[:12]}")
    server = MlflowProcess(backend, tmp_path / "mlflow-artifacts", tmp_path / "mlflow.log")
    try:
        server.start()
        use_store(server.url, monkeypatch)
        yield server
    finally:
        server.stop()
