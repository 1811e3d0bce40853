"""Bad input at every front door: each `ncbi-retrain` command given a wrong value answers with one sentence
on stderr naming what is wrong, a non-zero exit, and writes nothing.

Orchestration commands run in this process (`tasks.cli.run`). Train / evaluate / predict run in the
training env: in its pytest process (`tests/train/test_training_front_door.py`, one NeMo import for all
rows), except the wrong-password row, which needs the auth server only this env can start, and so runs
the training env's CLI (`.venv-train/bin/python -m tasks.cli`) here. The config override rows assert the
key's name and the exit code, not the wording.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from dag_helpers import small_slice
from registry_helpers import empty_sqlite_store_fixture, use_store  # noqa: F401  (a fixture)
from servers import MlflowProcess

from tasks.cli import run

ROOT = Path(__file__).resolve().parents[1]
NO_RUN = "0" * 32


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]  # {tmp} this case's empty folder, {out} a path in it, {data} a valid data slice,
    #                        {repo} a git repo without data.dvc, {bad_repo} one whose data.dvc is broken
    names: str  # what the sentence must name (a file, key, value, URI)
    code: int | None = None  # the exit code, where the contract fixes it
    store: str = "sqlite"  # sqlite: an empty local store; auth: a basic-auth server, wrong password
    unchanged: tuple[str, ...] = field(default=())  # folders whose bytes must not change


ORCHESTRATION = {
    "import-missing-sources": Case(
        (
            "data",
            "import",
            "--pubtator",
            "{tmp}/nope",
            "--iob",
            "{tmp}/nope",
            "--mesh",
            "{tmp}/mesh.txt",
            "--out",
            "{out}",
        ),
        "{tmp}/nope",
    ),
    "add-missing-file": Case(
        ("data", "add", "--pubtator", "{tmp}/new.txt", "--data", "{data}"), "new.txt", unchanged=("{data}",)
    ),
    "compare-missing-sources": Case(
        ("data", "compare", "--pubtator", "{tmp}/nope", "--iob", "{tmp}/nope"), "nope"
    ),
    "publish-nothing": Case(("data", "publish", "--repo", "{tmp}"), "{tmp}/data", 2),
    "pull-unknown-revision": Case(
        ("data", "pull", "--rev", "no-such-rev", "--repo", "{repo}"), "no-such-rev", 2, unchanged=("{repo}",)
    ),
    "materialize-unknown-revision": Case(
        ("data", "materialize", "--rev", "no-such-rev", "--repo", "{repo}", "--out", "{out}"),
        "no-such-rev",
        2,
        unchanged=("{repo}",),
    ),
    "version-broken-dvc-file": Case(("data", "version", "--repo", "{bad_repo}"), "data.dvc", 1),
    "drift-missing-dir": Case(("data", "drift", "{data}", "{tmp}/nope", "--out", "{out}"), "{tmp}/nope", 2),
    "evolve-missing-release": Case(
        ("evolve", "--profile", "tiny", "--dir", "{out}", "--release", "{tmp}/nope"), "{tmp}/nope", 2
    ),
    "evolve-unknown-profile": Case(("evolve", "--profile", "huge", "--dir", "{out}"), "huge", 2),
    "validate-missing-dir": Case(("validate", "{tmp}/nope", "--report", "{out}"), "{tmp}/nope", 2),
    "gate-unknown-model": Case(
        ("gate", "regressor", "--candidate", "{tmp}/c.json", "--champion", "none", "--out", "{out}"),
        "regressor",
        2,
    ),
    "gate-missing-candidate": Case(
        ("gate", "classifier", "--candidate", "{tmp}/c.json", "--champion", "none", "--out", "{out}"),
        "c.json",
    ),
    "register-unknown-run": Case(("register", "classifier", "--run-id", NO_RUN), NO_RUN, 2),
    "promote-unknown-version": Case(("promote", "classifier", "99", "--reason", "why not"), "version 99", 2),
    "rollback-without-champion": Case(
        ("rollback", "classifier", "--reason", "why not"), "ncbi-disease-classifier", 2
    ),
    "lineage-bad-reference": Case(("lineage", "classifier"), "'classifier'", 2),
    "models-list-wrong-password": Case(("models", "list"), "password", 3, store="auth"),
    "register-wrong-password": Case(
        ("register", "classifier", "--run-id", NO_RUN), "password", 3, store="auth"
    ),
    "promote-wrong-password": Case(
        ("promote", "classifier", "1", "--reason", "x"), "password", 3, store="auth"
    ),
}

TRAINING = {  # the other training-env rows run in-process there: tests/train/test_training_front_door.py
    "evaluate-wrong-password": Case(
        (
            "evaluate",
            "classifier",
            "--model",
            "models:/ncbi-disease-classifier@champion",
            "--data",
            "{data}",
            "--out",
            "{out}",
        ),
        "password",
        3,
        store="auth",
    ),
}


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ROOT with its bytes (None for a folder)."""
    return {
        p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture(scope="module")
def places(imported_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The fixed places the rows refer to: a valid data slice, a git repo without data.dvc, a broken one."""
    base = tmp_path_factory.mktemp("front-door")
    data = small_slice(imported_data, base / "data")
    repo = base / "repo"
    repo.mkdir()
    for args in (
        ("init", "-q"),
        ("-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q", "--allow-empty", "-m", "x"),
    ):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    bad = base / "bad-repo"
    bad.mkdir()
    (bad / "data.dvc").write_text("outs: [unclosed\n")
    return {"data": str(data), "repo": str(repo), "bad_repo": str(bad)}


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowProcess]:
    """MLflow with basic auth (an admin whose password the rows get wrong), on SQLite."""
    pytest.importorskip("mlflow")
    base = tmp_path_factory.mktemp("mlflow-auth")
    ini = base / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{base}/auth.db\n"
        "admin_username = admin\nadmin_password = the-right-password-1234\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    server = MlflowProcess(
        f"sqlite:///{base}/mlflow.db", base / "artifacts", base / "server.log", auth_ini=ini
    )
    try:
        yield server.start()
    finally:
        server.stop()


def store_env(case: Case, request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """MLflow settings for the row: an empty SQLite store, or the auth server with a wrong password."""
    if case.store == "auth":
        server = request.getfixturevalue("auth_server")
        return {
            "MLFLOW_TRACKING_URI": server.url,
            "MLFLOW_TRACKING_USERNAME": "admin",
            "MLFLOW_TRACKING_PASSWORD": "a-wrong-password",
        }
    db = tmp_path.parent / f"{tmp_path.name}-mlflow.db"  # outside the row's folder, which must stay empty
    shutil.copy(request.getfixturevalue("empty_sqlite_store"), db)
    return {"MLFLOW_TRACKING_URI": f"sqlite:///{db}"}


def fill(case: Case, tmp: Path, places: dict[str, str]) -> tuple[list[str], str, list[Path]]:
    values = {**places, "tmp": str(tmp), "out": str(tmp / "out")}
    return (
        [a.format(**values) for a in case.argv],
        case.names.format(**values),
        [Path(u.format(**values)) for u in case.unchanged],
    )


def check(case: Case, code: int, stderr: str, names: str) -> None:
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert code != 0, stderr[-2000:]
    if case.code is not None:
        assert code == case.code, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert len(errors) == 1 and stderr.rstrip().endswith(errors[0]), stderr[-2000:]  # one sentence, last
    assert names in errors[0], errors[0]


@pytest.mark.parametrize("row", list(ORCHESTRATION))
def test_orchestration_commands_refuse_bad_input(
    row: str, places: dict[str, str], tmp_path: Path, request, monkeypatch, capsys
) -> None:
    case = ORCHESTRATION[row]
    env = store_env(case, request, tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    use_store(env["MLFLOW_TRACKING_URI"], monkeypatch)
    argv, names, unchanged = fill(case, tmp_path, places)
    before = {p: tree(p) for p in unchanged}
    capsys.readouterr()
    code = run(argv)
    check(case, code, capsys.readouterr().err, names)
    assert not list(tmp_path.iterdir())  # nothing written
    assert {p: tree(p) for p in unchanged} == before


@pytest.mark.parametrize("row", list(TRAINING))
def test_training_commands_refuse_bad_input(
    row: str, places: dict[str, str], train_python: Path, tmp_path: Path, request
) -> None:
    case = TRAINING[row]
    argv, names, _ = fill(case, tmp_path, places)
    env = {**os.environ, "PYTHONPATH": str(ROOT), **store_env(case, request, tmp_path)}
    proc = subprocess.run(
        [str(train_python), "-m", "tasks.cli", *argv],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    check(case, proc.returncode, proc.stderr, names)
    assert not list(tmp_path.iterdir())  # nothing written (not even a staging folder)
