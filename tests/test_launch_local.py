"""LocalLauncher: real subprocesses (stand-in console scripts, and the real training env)."""

from __future__ import annotations

import logging
import os
import stat
import time
from pathlib import Path

import pytest

from tasks.launch import Job, JobFailed
from tasks.launch.local import LocalLauncher

ROOT = Path(__file__).resolve().parents[1]


def fake_venv(tmp_path: Path, body: str) -> Path:
    """A directory shaped like a venv whose `bin/ncbi-retrain` is the given bash script."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    script = venv / "bin" / "ncbi-retrain"
    script.write_text("#!/usr/bin/env bash\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return venv


def test_success_returns_json_line_and_streams_progress(tmp_path, caplog):
    venv = fake_venv(
        tmp_path,
        'echo "epoch 1/2 step 3 eta 4s" >&2\necho "not json"\necho "{\\"run_id\\": \\"$1-$JOB_TAG\\"}"\n',
    )
    job = Job(argv=["train"], env={"JOB_TAG": "x1"}, name="train-classifier")
    with caplog.at_level(logging.INFO, logger="tasks.launch.local"):
        result = LocalLauncher(train_venv=venv, cwd=tmp_path).run(job)
    assert result.exit_code == 0
    assert result.json_line() == {"run_id": "train-x1"}
    assert "epoch 1/2 step 3 eta 4s" in caplog.text  # progress reaches the (Airflow task) log
    assert "[train-classifier]" in caplog.text


def test_nonzero_exit_raises_with_last_log_lines(tmp_path):
    venv = fake_venv(
        tmp_path, 'for i in $(seq 1 50); do echo "line $i" >&2; done\necho "error: boom" >&2\nexit 3\n'
    )
    with pytest.raises(JobFailed) as err:
        LocalLauncher(train_venv=venv, cwd=tmp_path).run(Job(argv=["train"], name="train-ner"))
    msg = str(err.value)
    assert "train-ner exited with code 3" in msg
    assert "error: boom" in msg and "line 50" in msg
    assert "line 1 " not in msg  # only the tail, not the whole log


def test_killed_by_signal_is_reported(tmp_path):
    venv = fake_venv(tmp_path, "kill -9 $$\n")
    with pytest.raises(JobFailed, match=r"killed by signal 9 \(out of memory\?\)"):
        LocalLauncher(train_venv=venv, cwd=tmp_path).run(Job(argv=["train"]))


def test_timeout_kills_the_whole_process_group(tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    # The grandchild ignores nothing special; it must die with its parent's group.
    venv = fake_venv(tmp_path, f'sleep 300 &\necho $! > {pidfile}\necho "started" >&2\nwait\n')
    started = time.monotonic()
    with pytest.raises(JobFailed, match=r"timed out after 2 s and was killed; last log lines: started"):
        LocalLauncher(train_venv=venv, cwd=tmp_path).run(Job(argv=["train"], timeout_s=2))
    assert time.monotonic() - started < 60
    grandchild = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):  # gone, not orphaned
        for _ in range(50):
            os.kill(grandchild, 0)
            time.sleep(0.1)


def test_missing_training_env_is_a_clear_error(tmp_path):
    with pytest.raises(JobFailed, match=r"training env not found: .*nope/bin/ncbi-retrain does not exist"):
        LocalLauncher(train_venv=tmp_path / "nope", cwd=tmp_path).run(Job(argv=["train"]))


def test_env_is_passed_through_with_the_venv_first_on_path(tmp_path, monkeypatch):
    monkeypatch.setenv("NCBI_TEST_PASS", "kept")
    venv = fake_venv(
        tmp_path, 'echo "{\\"v\\": \\"$NCBI_TEST_PASS\\", \\"p\\": \\"$(command -v ncbi-retrain)\\"}"\n'
    )
    out = LocalLauncher(train_venv=venv, cwd=tmp_path).run(Job(argv=[])).json_line()
    assert out == {"v": "kept", "p": str(venv / "bin" / "ncbi-retrain")}


def test_real_training_env_runs_the_cli(tmp_path):
    venv = ROOT / ".venv-train"
    if not (venv / "bin" / "ncbi-retrain").exists():
        pytest.skip("training env not built")
    result = LocalLauncher(train_venv=venv, cwd=ROOT).run(Job(argv=["--version"], timeout_s=120))
    assert result.stdout.startswith("ncbi-retrain ")


def test_job_dies_with_a_killed_task_process(tmp_path):
    """SIGKILL of the Airflow task process (no chance to clean up) still ends the training job."""
    import signal
    import subprocess
    import sys

    pidfile = tmp_path / "job.pid"
    venv = fake_venv(tmp_path, f"echo $$ > {pidfile}.tmp; mv {pidfile}.tmp {pidfile}; exec sleep 300\n")
    code = (
        "from pathlib import Path; from tasks.launch import Job; "
        "from tasks.launch.local import LocalLauncher; "
        f"LocalLauncher(train_venv=Path({str(venv)!r}), cwd=Path({str(tmp_path)!r})).run(Job(argv=['train']))"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    try:
        for _ in range(300):
            if pidfile.exists():
                break
            time.sleep(0.1)
        job = int(pidfile.read_text())
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        with pytest.raises(ProcessLookupError):
            for _ in range(100):
                os.kill(job, 0)
                time.sleep(0.1)
    finally:
        if parent.poll() is None:
            parent.kill()
