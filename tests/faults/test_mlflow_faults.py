"""MLflow faults: the server SIGKILLed in the middle of `register` and started again; the server down when
the champion is looked up (orchestration and training env); `promote` and `rollback` racing."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fault_helpers import assert_history_replays, versions_of
from registry_helpers import classifier_metrics, log_candidate, noisy_preds, use_store
from servers import MlflowProcess

from tasks import registry
from tasks.errors import ServiceError
from tasks.gates import decide

GOLD = [i % 3 for i in range(150)]
GOOD = classifier_metrics(noisy_preds(GOLD, 0.92, 1), GOLD)
ROOT = Path(__file__).resolve().parents[2]


def champion_of(name: str) -> str | None:
    from tasks.registry.service import client

    champion = client().get_registered_model(name).aliases.get("champion")
    return None if champion is None else str(champion)


@pytest.mark.parametrize("crash_after", ["create_model_version", "set_registered_model_alias"])
def test_server_killed_during_register_then_retried_gives_one_version(
    crash_after: str, killable_mlflow: MlflowProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server dies right after it committed a step of `register` (the version; the challenger alias),
    before the client hears back. The call fails at once with a clear error; after a restart the retry
    finds the run's version instead of making a second one, and the history records the move once."""
    from mlflow import MlflowClient

    name = f"faults-register-{crash_after.replace('_', '-')}"
    decision = decide("classifier", GOOD, None, "cpu")
    first = registry.register_run(name, log_candidate(metrics=GOOD, experiment=name), decision)
    registry.promote(name, first.version, "first champion", actor="alice")
    run_id = log_candidate(metrics=GOOD, experiment=name, payload=b"second")

    real = getattr(MlflowClient, crash_after)

    def then_crash(self, *args, **kwargs):
        result = real(self, *args, **kwargs)
        killable_mlflow.kill()  # the step is committed; the answer never matters
        return result

    with monkeypatch.context() as patch:
        patch.setattr(MlflowClient, crash_after, then_crash)
        with pytest.raises(ServiceError, match=f"MLflow at {killable_mlflow.url} is unreachable") as err:
            registry.register_run(name, run_id, decision)
    assert "\n" not in str(err.value)

    killable_mlflow.start()
    assert champion_of(name) == "1"  # the champion never moved
    retry = registry.register_run(name, run_id, decision)
    assert (retry.version, retry.aliases) == ("2", ["challenger"])
    assert versions_of(name) == {"1": first.run_id, "2": run_id}  # one version per run
    moves = assert_history_replays(name)
    assert [(m["alias"], m["from"], m["to"]) for m in moves] == [
        ("challenger", None, "1"),
        ("champion", None, "1"),
        ("challenger", "1", None),
        ("challenger", None, "2"),
    ]
    assert registry.register_run(name, run_id, decision).created is False  # and again: still one


def test_server_down_at_champion_lookup_fails_in_seconds_and_registers_nothing(
    killable_mlflow: MlflowProcess, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """What the DAG's evaluate and gate steps ask the registry (the champion, its metrics), and the training
    env's `evaluate --model models:/...@champion`, with the server gone: one clear sentence, exit 3,
    nothing written, nothing registered."""
    from tasks.cli import run

    name = "ncbi-disease-classifier"
    first = registry.register_run(
        name, log_candidate(metrics=GOOD, experiment="faults-down"), decide("classifier", GOOD, None, "cpu")
    )
    registry.promote(name, first.version, "first champion", actor="alice")
    killable_mlflow.kill()

    for call in (
        lambda: registry.champion_version("classifier"),
        lambda: registry.champion_metrics("classifier", tmp_path / "champion"),
    ):
        with pytest.raises(ServiceError, match=f"MLflow at {killable_mlflow.url} is unreachable"):
            call()
    assert not (tmp_path / "champion").exists()
    capsys.readouterr()
    assert run(["lineage", "classifier@champion"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"error: MLflow at {killable_mlflow.url} is unreachable" in err

    train_python = Path(os.environ.get("NCBI_RETRAIN_TRAIN_VENV", ROOT / ".venv-train")) / "bin" / "python"
    if train_python.exists():  # the product's own retry bounds, not the test suite's
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_REQUEST_")}
        env |= {"MLFLOW_TRACKING_URI": killable_mlflow.url, "PYTHONPATH": str(ROOT)}
        data = tmp_path / "data" / "tc3"
        data.mkdir(parents=True)
        (data / "test.tsv").write_text("an abstract about a tumour\t0\n")
        out = tmp_path / "champion-metrics.json"
        argv = ["evaluate", "classifier", "--model", f"models:/{name}@champion", "--data", str(data.parent)]
        start = time.monotonic()
        proc = subprocess.run(
            [str(train_python), "-m", "tasks.cli", *argv, "--out", str(out)],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=180,
        )  # fmt: skip
        print(f"evaluate against a dead server failed after {time.monotonic() - start:.0f} s")
        assert proc.returncode == 3, proc.stderr[-2000:]
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: MLflow at {killable_mlflow.url} is unreachable"), proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr and not out.exists()

    killable_mlflow.start()
    assert versions_of(name) == {"1": first.run_id} and champion_of(name) == "1"
    assert_history_replays(name)


def _racer(uri: str, name: str, action: str, rounds: int, barrier, results) -> None:
    """One process that promotes (or rolls back) at the same moment as another, `rounds` times."""
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ["NCBI_RETRAIN_MLFLOW_TRACKING_URI"] = uri
    from tasks import registry as reg
    from tasks.registry.service import client

    client().get_registered_model(name)  # import MLflow and connect before the start line
    for _ in range(rounds):
        barrier.wait(timeout=120)
        try:
            if action == "promote":
                res = reg.promote(name, "3", "race: promote v3", actor="promoter")
            else:
                res = reg.rollback(name, "1", "race: roll back to v1", actor="roller")
            results.put((action, res["from"], res["version"], None))
        except Exception as exc:
            results.put((action, None, None, f"{type(exc).__name__}: {exc}"))


def test_promote_and_rollback_racing_end_on_one_and_record_both(mlflow_server, monkeypatch) -> None:
    """Two processes move `champion` at once (v2 -> v3 and v2 -> v1), several rounds: it ends on one of
    the two targets, both moves are in the history, in the order they happened, chained."""
    uri = use_store(mlflow_server.url, monkeypatch)
    name = "faults-race"
    decision = decide("classifier", GOOD, None, "cpu")
    for i in (1, 2, 3):
        payload = bytes([i])
        registry.register_run(name, log_candidate(metrics=GOOD, experiment=name, payload=payload), decision)
    rounds = 4
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(3), ctx.Queue()
    procs = [
        ctx.Process(target=_racer, args=(uri, name, action, rounds, barrier, results))
        for action in ("promote", "rollback")
    ]
    for p in procs:
        p.start()
    try:
        for i in range(rounds):
            registry.promote(name, "2", f"round {i}: reset", actor="referee")
            before = len(registry.history(name))
            barrier.wait(timeout=120)
            got = sorted(results.get(timeout=120) for _ in range(2))
            assert [g[3] for g in got] == [None, None], got
            final = champion_of(name)
            assert final in ("1", "3")
            moves = assert_history_replays(name)
            race = [(m["from"], m["to"], m["who"]) for m in moves[before:] if m["alias"] == "champion"]
            first, second = ("3", "1") if final == "1" else ("1", "3")
            assert race == [
                ("2", first, "promoter" if first == "3" else "roller"),
                (first, second, "promoter" if second == "3" else "roller"),
            ], moves[before:]
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in procs)
    assert not [m for m in registry.list_versions() if m["name"].endswith(".alias-lock")]


def test_a_lock_left_by_a_dead_process_is_taken_over(mlflow_server, monkeypatch) -> None:
    """A process killed while it held the alias lock does not block the next move."""
    uri = use_store(mlflow_server.url, monkeypatch)
    name = "faults-dead-holder"
    decision = decide("classifier", GOOD, None, "cpu")
    registry.register_run(name, log_candidate(metrics=GOOD, experiment=name), decision)
    code = (
        "import os, sys\n"
        "from tasks.registry.aliases import alias_lock\n"
        "from tasks.registry.service import client\n"
        f"with alias_lock(client(), {name!r}):\n"
        "    print('locked', flush=True)\n"
        "    os.kill(os.getpid(), 9)\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == -9 and "locked" in proc.stdout
    from mlflow.exceptions import MlflowException

    from tasks.registry.service import client

    assert client().get_registered_model(f"{name}.alias-lock")  # left behind
    registry.promote(name, "1", "after a crash", actor="alice")
    assert champion_of(name) == "1"
    with pytest.raises(MlflowException, match="not found"):
        client().get_registered_model(f"{name}.alias-lock")  # freed
