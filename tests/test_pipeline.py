"""Pipeline pieces that need no training: the Params form, the job spec the three launchers run (argv,
env, the local script, result parsing, failure messages), failure summaries and the webhook."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from tasks.errors import UsageError
from tasks.pipeline.failures import post_json, record_task_failure, report_run_failure
from tasks.pipeline.rundir import run_dir
from tasks.vocab import RunParams


@pytest.mark.parametrize(
    ("params", "overrides"),
    [
        ({}, []),
        ({"epochs": None, "learning_rate": None, "encoder": "", "max_seq_length": None}, []),
        ({"epochs": 4}, ["trainer.max_epochs=4"]),
        ({"learning_rate": 5e-5}, ["model.optim.lr=5e-05"]),
        (
            {"encoder": "minilm", "max_seq_length": 64},
            ["model.language_model.pretrained_model_name=minilm", "model.dataset.max_seq_length=64"],
        ),
    ],
)
def test_params_become_training_overrides(params, overrides):
    assert RunParams.from_params(params).overrides() == overrides


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"models": "both-ish"}, "param models is 'both-ish'"),
        ({"profile": "huge"}, "param profile is 'huge'"),
        ({"promote": "maybe"}, "param promote is 'maybe'"),
        ({"epochs": 0}, "param epochs is 0"),
        ({"learning_rate": 3}, "param learning_rate is 3"),
    ],
)
def test_bad_params_are_usage_errors(params, message):
    with pytest.raises(UsageError, match=message):
        RunParams.from_params(params)


def test_model_selection():
    both, ner = RunParams.from_params({}), RunParams.from_params({"models": "ner"})
    assert both.selected("classifier") and both.selected("ner")
    assert ner.selected("ner") and not ner.selected("classifier")


@pytest.fixture
def project_dir(tmp_path, monkeypatch):
    from tasks.settings import get_settings

    monkeypatch.setenv("NCBI_RETRAIN_PROJECT_DIR", str(tmp_path))
    monkeypatch.delenv("NCBI_RETRAIN_WEBHOOK_URL", raising=False)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_failure_summary_collects_task_errors_and_posts_once(project_dir, monkeypatch):
    got: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        from tasks.settings import get_settings

        monkeypatch.setenv("NCBI_RETRAIN_WEBHOOK_URL", f"http://127.0.0.1:{server.server_port}/")
        get_settings.cache_clear()
        record_task_failure("ncbi_retrain", "manual__1", "ner.train", 3, "JobFailed: train-ner exited 137")
        path = report_run_failure("ncbi_retrain", "manual__1", "task_failure", "ner.train")
    finally:
        server.shutdown()
        server.server_close()
    assert path == run_dir("manual__1") / "failure.md"
    text = path.read_text()
    assert (
        "failed task: `ner.train`" in text and "`ner.train` (try 3): JobFailed: train-ner exited 137" in text
    )
    (doc,) = got
    assert doc["failed_task"] == "ner.train" and doc["error"] == "JobFailed: train-ner exited 137"
    assert json.loads((run_dir("manual__1") / "failure.json").read_text()) == doc


def test_a_webhook_that_is_down_is_logged_not_raised(caplog):
    assert post_json("http://127.0.0.1:9/nothing-listens-here", {"x": 1}, timeout_s=2) is False
    assert "webhook http://127.0.0.1:9/nothing-listens-here: post failed" in caplog.text


# ------------------------------------------------------------------------------------------- the job spec
@pytest.fixture
def settings(tmp_path, monkeypatch):
    from tasks.settings import get_settings

    monkeypatch.setenv("NCBI_RETRAIN_PROJECT_DIR", str(tmp_path / "project"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlruns/mlflow.db")  # relative: made absolute
    monkeypatch.delenv("NCBI_RETRAIN_MLFLOW_ARTIFACT_ROOT", raising=False)
    monkeypatch.delenv("NCBI_RETRAIN_WORK_DIR", raising=False)
    get_settings.cache_clear()

    def with_launcher(launcher: str = "local"):
        monkeypatch.setenv("NCBI_RETRAIN_LAUNCHER", launcher)
        get_settings.cache_clear()
        return get_settings()

    yield with_launcher
    get_settings.cache_clear()


def data_ref(settings):
    from tasks.vocab import DataRef

    return DataRef(data_dir=str(settings.project_dir / "data"), data_version="ab" * 16 + ".dir")


@pytest.mark.parametrize("launcher", ["local", "docker", "kubernetes"])
def test_train_job_is_one_command_for_every_launcher(settings, launcher):
    from tasks.pipeline.jobs import train_job

    s = settings(launcher)
    options = RunParams.from_params({"profile": "tiny", "epochs": 2})
    job = train_job("ner", options, data_ref(s), "manual__2026-01-01T00:00:00+00:00", "c0ffee", s)
    assert job.name == "train-ner"
    work = s.project_dir / "runs" / "manual__2026-01-01T00_00_00_00_00" / "ner"
    assert job.argv == [
        "train", "ner", "--data", str(s.project_dir / "data"), "--profile", "tiny",
        "--data-version", "ab" * 16 + ".dir", "--checkpoints", str(work / "checkpoints"),
        "--json", "trainer.max_epochs=2",
    ]  # fmt: skip
    # One folder per try: a retry never reuses a failed try's folder (nor its MLflow run), but every
    # try shares the checkpoint folder, so a retry resumes where the failed try's last epoch ended.
    assert job.out_dir == str(work)
    assert job.argv_for(3)[-2:] == ["--out", f"{job.out_dir}/try-3"]
    env = job.env
    assert env["MLFLOW_TRACKING_URI"] == f"sqlite:///{s.project_dir}/mlruns/mlflow.db"
    assert env["NCBI_RETRAIN_DAG_RUN_ID"] == "manual__2026-01-01T00:00:00+00:00"
    assert (
        env["NCBI_RETRAIN_GIT_COMMIT"] == "c0ffee" and env["NCBI_RETRAIN_DATA_VERSION"] == "ab" * 16 + ".dir"
    )
    assert env["NCBI_RETRAIN_MLFLOW_ARTIFACT_ROOT"] == str((s.project_dir / "mlruns" / "artifacts").resolve())
    assert ("NCBI_RETRAIN_IMAGE" in env) is (launcher != "local")
    assert (env.get("NCBI_RETRAIN_RESULT_FILE") == "/airflow/xcom/return.json") is (launcher == "kubernetes")


def test_rescore_job_scores_the_champion_by_alias(settings, tmp_path):
    from tasks.pipeline.jobs import rescore_job

    s = settings("docker")
    job = rescore_job("classifier", data_ref(s), "r1", tmp_path / "champion.json", "c0ffee", s)
    assert job.argv[:4] == ["evaluate", "classifier", "--model", "models:/ncbi-disease-classifier@champion"]
    assert job.argv_for(2) == job.argv and job.argv[-1] == "--json"  # one output file, no try folder


def test_mounts_cover_the_project_and_a_local_store_once(settings, tmp_path, monkeypatch):
    from tasks.pipeline.jobs import mount_paths
    from tasks.settings import get_settings

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/store/mlflow.db")
    monkeypatch.setenv("NCBI_RETRAIN_MLFLOW_ARTIFACT_ROOT", str(tmp_path / "store" / "artifacts"))
    monkeypatch.setenv("NCBI_RETRAIN_WORK_DIR", str(tmp_path / "elsewhere" / "runs"))
    get_settings.cache_clear()
    s = settings("docker")
    assert mount_paths(s) == [
        s.project_dir.resolve(),
        (tmp_path / "elsewhere" / "runs").resolve(),
        (tmp_path / "store").resolve(),  # the artifact root inside it is not mounted twice
    ]


@pytest.mark.parametrize("code", [0, 3])
def test_local_script_runs_the_venv_cli_with_the_env_and_ends_with_its_json_line(tmp_path, code):
    """The BashOperator pushes the last line of stdout+stderr: the job's JSON must be it, even when the
    job writes to stderr after printing it, and the job's exit code must be the script's."""
    import subprocess

    from tasks.pipeline.jobs import bash_script
    from tasks.vocab import JobSpec

    cli = tmp_path / "venv" / "bin" / "ncbi-retrain"
    cli.parent.mkdir(parents=True)
    cli.write_text(
        "#!/bin/bash\n"
        'echo "{\\"argv\\": \\"$*\\", \\"A\\": \\"$A\\"}"\n'
        "echo 'progress on stderr, after the result' >&2\n"
        f"exit {code}\n"
    )
    cli.chmod(0o755)
    r = tmp_path / "r"
    job = JobSpec(
        name="train-ner", argv=["train", "ner", "model.x='a b'"], env={"A": "1; rm -rf /"}, out_dir=str(r)
    )
    run = subprocess.run(
        ["bash", "-c", bash_script(job, 2, tmp_path / "venv")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    assert run.returncode == code
    last = json.loads(run.stdout.strip().splitlines()[-1])
    assert last == {
        "argv": f"train ner model.x='a b' --out {r}/try-2",
        "A": "1; rm -rf /",
    }  # quoted, never run


def _slow_cli(venv: Path, log: Path) -> None:
    """A stand-in for the training env's CLI that notes when it starts and ends, and takes a moment."""
    cli = venv / "bin" / "ncbi-retrain"
    cli.parent.mkdir(parents=True)
    cli.write_text(f'#!/bin/bash\necho "start $*" >> {log}\nsleep 2\necho "end $*" >> {log}\necho {{}}\n')
    cli.chmod(0o755)


def test_a_try_waits_until_the_earlier_trys_job_has_ended(tmp_path):
    """After a scheduler crash Airflow starts the next try while the reset try's job may still run: the
    next try's job starts only when the earlier one has ended, and the log says why it waited."""
    import subprocess
    import time

    from tasks.pipeline.jobs import bash_script
    from tasks.vocab import JobSpec

    log = tmp_path / "calls.log"
    _slow_cli(tmp_path / "venv", log)
    job = JobSpec(name="train-ner", argv=["train", "ner"], env={}, out_dir=str(tmp_path / "run" / "ner"))

    def start(try_number: int) -> subprocess.Popen:
        script = bash_script(job, try_number, tmp_path / "venv")
        return subprocess.Popen(
            ["bash", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    first = start(1)
    end = time.monotonic() + 60
    while not (log.exists() and log.read_text()):  # the first try's job is running
        assert first.poll() is None and time.monotonic() < end, first.communicate()
        time.sleep(0.05)
    second = start(2)
    out2, _ = second.communicate(timeout=60)
    out1, _ = first.communicate(timeout=60)
    assert first.returncode == second.returncode == 0, (out1, out2)
    out = str(tmp_path / "run" / "ner")
    assert log.read_text().splitlines() == [
        f"start train ner --out {out}/try-1",
        f"end train ner --out {out}/try-1",
        f"start train ner --out {out}/try-2",
        f"end train ner --out {out}/try-2",
    ]
    assert f"train-ner, try 2: waiting for an earlier try's job to end (it holds {out}/.job.lock)" in out2


def test_a_try_gives_up_on_an_earlier_job_that_does_not_end(tmp_path, monkeypatch):
    """An earlier try's job that outlives the wait: the try exits 75 (retried later) naming the lock, and
    never runs its job beside it."""
    import fcntl
    import subprocess

    from tasks.pipeline import jobs
    from tasks.vocab import JobSpec

    monkeypatch.setattr(jobs, "TRY_LOCK_WAIT_S", 1)
    log = tmp_path / "calls.log"
    _slow_cli(tmp_path / "venv", log)
    out = tmp_path / "run" / "ner"
    out.mkdir(parents=True)
    job = JobSpec(name="train-ner", argv=["train", "ner"], env={}, out_dir=str(out))
    with (out / ".job.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # an earlier try's job, still running
        run = subprocess.run(
            ["bash", "-c", jobs.bash_script(job, 2, tmp_path / "venv")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=60,
            check=False,
        )
    assert run.returncode == 75, run.stdout
    assert run.stdout.strip().splitlines()[-1] == (
        f"train-ner, try 2: an earlier try's job still holds {out}/.job.lock after 1 s; "
        "not starting beside it (exit 75: retry later)"
    )
    assert not log.exists()


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ('{"run_id": "abc"}', {"run_id": "abc"}),  # Bash / Docker operators: the last output line
        ('loading\n{"run_id": "abc"}\n', {"run_id": "abc"}),
        ({"run_id": "abc"}, {"run_id": "abc"}),  # the pod's result file, parsed by the sidecar
    ],
)
def test_a_jobs_result_is_its_json_line(output, expected):
    from tasks.pipeline.jobs import job_result

    assert job_result(output, "train-ner") == expected


@pytest.mark.parametrize("output", [None, "", "Traceback ...\nKeyError: 'x'", "[1, 2]"])
def test_no_json_result_is_a_clear_error(output):
    from tasks.errors import JobFailed
    from tasks.pipeline.jobs import job_result

    with pytest.raises(JobFailed, match="train-ner: the job's last output line is not its --json result"):
        job_result(output, "train-ner")


@pytest.mark.parametrize(
    ("code", "mem_limit", "expected"),
    [
        (2, None, "train-ner exited with code 2 in img; last log lines: a | b"),
        (137, "64m", "train-ner was killed by SIGKILL (exit 137) under its memory limit 64m: out of memory"),
        (137, None, "train-ner was killed by SIGKILL (exit 137: out of memory, or stopped by the engine)"),
    ],
)
def test_container_failures_name_their_cause(code, mem_limit, expected):
    from tasks.pipeline.jobs import explain_exit

    assert expected in explain_exit(
        "train-ner", code, image="img", mem_limit=mem_limit, log_lines=["a", "", "b"]
    )


def test_containers_get_the_workers_credentials_but_not_its_host_choices():
    from tasks.pipeline.jobs import forwarded_env

    environ = {
        "MLFLOW_TRACKING_PASSWORD": "s3cret",
        "AWS_SECRET_ACCESS_KEY": "k",
        "MLFLOW_TRACKING_URI": "http://worker-view:5000",
        "NCBI_RETRAIN_LAUNCHER": "docker",
        "NCBI_RETRAIN_DOCKER_URL": "unix:///x.sock",
        "NCBI_RETRAIN_TRAIN_VENV": "/venv",
        "HOME": "/root",
    }
    assert forwarded_env(environ, {"MLFLOW_TRACKING_URI": "http://mlflow:5000"}) == {
        "MLFLOW_TRACKING_PASSWORD": "s3cret",
        "AWS_SECRET_ACCESS_KEY": "k",
    }


def test_the_cli_also_writes_its_json_result_where_a_pod_sidecar_reads_it(tmp_path, monkeypatch, capsys):
    from tasks.cli.training import _print_json

    target = tmp_path / "airflow" / "xcom" / "return.json"
    monkeypatch.setenv("NCBI_RETRAIN_RESULT_FILE", str(target))
    _print_json('{"run_id": "abc"}')
    assert capsys.readouterr().out.splitlines()[-1] == '{"run_id": "abc"}'  # Bash / Docker: last line
    assert json.loads(target.read_text()) == {"run_id": "abc"}  # KubernetesPodOperator: the sidecar's file
