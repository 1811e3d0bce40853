"""Local launcher: run `ncbi-retrain <argv>` from the training venv as a subprocess.

The same argv a trainer container gets, run on this machine (the default, and what the tests run).
The child gets its own process group, so a timeout or a cancelled Airflow task kills the whole tree
(NeMo forks dataloader and tokenizer workers), never leaving orphans behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
from collections import deque
from pathlib import Path

from tasks.launch import Job, JobFailed, JobResult

log = logging.getLogger(__name__)

_TERM_GRACE_S = 10.0  # SIGTERM first so Lightning can close its loggers; then SIGKILL


class LocalLauncher:
    """Runs jobs with `<train_venv>/bin/ncbi-retrain`; stdout is kept, every line is streamed to the log."""

    def __init__(self, train_venv: Path | None = None, cwd: Path | None = None, tail_lines: int = 30) -> None:
        from tasks.settings import get_settings

        settings = get_settings()
        self.train_venv = settings.path(train_venv or settings.train_venv)
        self.cwd = cwd or settings.project_dir
        self.tail_lines = tail_lines

    def command(self, job: Job) -> list[str]:
        """The argv that runs `job` (the training env's console script)."""
        return [str(self.train_venv / "bin" / "ncbi-retrain"), *job.argv]

    def environment(self, job: Job) -> dict[str, str]:
        """This process's environment plus `job.env`, with the training venv first on PATH."""
        env = {**os.environ, **job.env}
        env["VIRTUAL_ENV"] = str(self.train_venv)
        env["PATH"] = f"{self.train_venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env.pop("PYTHONHOME", None)
        env.setdefault("PYTHONUNBUFFERED", "1")  # progress lines arrive as they are printed
        return env

    def run(self, job: Job) -> JobResult:
        """Run `job` to completion; raise JobFailed on a non-zero exit, a signal or a timeout."""
        argv = self.command(job)
        if not Path(argv[0]).is_file():
            raise JobFailed(
                f"training env not found: {argv[0]} does not exist "
                "(run `make setup` or set NCBI_RETRAIN_TRAIN_VENV)"
            )
        log.info("%s: starting %s", job.name, " ".join(argv))
        proc = subprocess.Popen(
            argv,
            cwd=self.cwd,
            env=self.environment(job),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,  # own process group: killpg reaches NeMo's workers too
            preexec_fn=_die_with_parent,
        )
        stdout: list[str] = []
        tail: deque[str] = deque(maxlen=self.tail_lines)
        lock = threading.Lock()

        def pump(stream, keep: list[str] | None) -> None:
            for raw in stream:
                line = raw.rstrip("\n")
                if keep is not None:
                    keep.append(line)
                with lock:
                    tail.append(line)
                log.info("[%s] %s", job.name, line)

        readers = [
            threading.Thread(target=pump, args=(proc.stdout, stdout), daemon=True),
            threading.Thread(target=pump, args=(proc.stderr, None), daemon=True),
        ]
        for t in readers:
            t.start()
        timed_out = False
        try:
            try:
                code = proc.wait(timeout=job.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc)
                code = proc.wait()
        finally:
            if proc.poll() is None:  # the Airflow task itself was cancelled or errored
                _kill_group(proc)
            for t in readers:
                t.join(timeout=5)
        last = list(tail)
        if timed_out:
            raise JobFailed(
                f"{job.name} timed out after {job.timeout_s:g} s and was killed; "
                f"last log lines: {' | '.join(last[-10:])}"
            )
        if code != 0:
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            if code in (-signal.SIGKILL, 137):
                how += " (out of memory?)"
            raise JobFailed(f"{job.name} {how}; last log lines: {' | '.join(last[-10:])}")
        log.info("%s: finished", job.name)
        return JobResult(exit_code=code, stdout="\n".join(stdout), log_tail=last)


def _die_with_parent() -> None:
    """In the child: get SIGKILL if the launching task process dies without cleaning up (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM the child's process group, then SIGKILL what is left after a grace period."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=_TERM_GRACE_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # also reaps grandchildren that ignored SIGTERM
