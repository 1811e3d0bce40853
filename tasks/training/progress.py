"""Progress a person can see: the trainer's stages, epochs, steps, ETA and last dev score.

`Reporter` is what `train` calls. It shows a rich progress bar when its stream is a terminal, plain log
lines otherwise (CI, Airflow task logs: about 40 step lines per run, one line per stage and per epoch),
and, given a file, keeps a small JSON snapshot there (`progress.json` in the checkpoint folder), which
`watch` renders for `make demo` while the DAG runs. It also times each stage (the job's profile).

No torch, NeMo or Airflow import here: the demo's watcher runs in the orchestration env.

    python -m tasks.training.progress RUNS_DIR --since EPOCH_SECONDS [--pid PID]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from tasks.files import atomic_write_json

log = logging.getLogger("ncbi_retrain.train")

PROGRESS_FILE = "progress.json"
STAGE_TEXT = {
    "prepare": "preparing (data, encoder, tokenisation)",
    "train": "training",
    "test": "scoring test (best dev epoch)",
    "save": "saving model.nemo",
    "log": "logging to MLflow",
    "done": "done",
    "failed": "failed",
}
FILE_EVERY_S = 1.0  # progress.json at most once a second between forced writes


@dataclass
class Snapshot:
    """The content of progress.json (one model's training job)."""

    model: str
    stage: str = "prepare"
    detail: str = ""
    epoch: int = 0  # the epoch running (1-based), or the last one done
    epochs: int = 0
    step: int = 0  # optimizer steps done in the whole run (a resumed run starts past 0)
    steps: int = 0
    eta_s: float | None = None  # seconds of training left
    elapsed_s: float = 0.0  # since the job started
    metric: str = ""  # the dev gate metric's name
    dev: float | None = None  # its value after the last epoch
    best_epoch: int | None = None
    best: float | None = None
    resumed_from: int | None = None  # epochs restored from a checkpoint
    timings: dict[str, float] = field(default_factory=dict)  # seconds per finished stage
    pid: int = 0
    updated: float = 0.0  # unix time of this snapshot


class Reporter:
    """Stages, steps and epochs of one training job, to a terminal bar or log lines, and to a JSON file."""

    def __init__(
        self,
        model: str,
        metric: str,
        *,
        file: Path | None = None,
        stream: IO[str] | None = None,
        bar: bool | None = None,
        lines: int = 40,
    ) -> None:
        self.stream = stream or sys.stderr
        self.bar = _isatty(self.stream) if bar is None else bar
        self.file = Path(file) if file else None
        self.lines = max(1, lines)
        self.snap = Snapshot(model=model, metric=metric, pid=os.getpid())
        self.t0 = time.monotonic()
        self._stage_t0 = self.t0
        self._train_t0 = 0.0
        self._first_step = 0
        self._every = 1
        self._written = 0.0
        self._progress = None  # rich Progress while training on a terminal
        self._task = None
        self._write(force=True)

    # ---------------------------------------------------------------- stages
    def stage(self, name: str, detail: str = "") -> None:
        """Enter stage `name` (STAGE_TEXT); the previous one's duration goes into `timings`."""
        now = time.monotonic()
        prev = self.snap.stage
        self.snap.timings[prev] = round(self.snap.timings.get(prev, 0.0) + now - self._stage_t0, 2)
        self._stage_t0 = now
        self.snap.stage, self.snap.detail = name, detail
        if name != "train":
            self._stop_bar()
        text = STAGE_TEXT.get(name, name) + (f": {detail}" if detail else "")
        if self.bar and name not in ("train", "done", "failed"):
            self._console().print(f"{self.snap.model} {text}", markup=False, highlight=False)
        else:
            log.info("%s: %s", self.snap.model, text)
        self._write(force=True)

    def start_training(self, epochs: int, steps: int, done_steps: int = 0, resumed_from: int | None = None):
        """Training begins (or resumes after `resumed_from` epochs, `done_steps` steps)."""
        self.snap.epochs, self.snap.steps, self.snap.step = epochs, steps, done_steps
        self.snap.epoch = (resumed_from or 0) + 1
        self.snap.resumed_from = resumed_from
        self._train_t0, self._first_step = time.monotonic(), done_steps
        self._every = max(1, -(-steps // self.lines))  # about `lines` step lines per run
        if self.bar:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("steps"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[dev]}"),
                console=self._console(),
                redirect_stderr=False,  # the console writes to stderr itself
            )
            self._progress.start()
            self._task = self._progress.add_task(
                self._description(), total=steps, completed=done_steps, dev=self._dev_text()
            )
        self._write(force=True)

    def step(self, epoch: int, step: int, loss: float | None = None) -> None:
        """An optimizer step is done (`step` counts the whole run's steps)."""
        self.snap.epoch, self.snap.step = epoch, step
        self.snap.eta_s = self._eta()
        if self._progress is not None:
            self._progress.update(self._task, completed=step, description=self._description())
        elif step % self._every == 0 or step == self.snap.steps:
            log.info(
                "%s epoch %d/%d step %d/%d%s elapsed %.0fs ETA %s",
                self.snap.model,
                epoch,
                self.snap.epochs,
                step,
                self.snap.steps,
                f" loss {loss:.4f}" if loss is not None else "",
                time.monotonic() - self._train_t0,
                _duration(self.snap.eta_s),
            )
        self._write()

    def epoch_end(
        self,
        epoch: int,
        value: float,
        best_epoch: int,
        best: float,
        train_loss: float,
        seconds: float,
        dev_seconds: float,
    ) -> None:
        """Epoch `epoch` is done and scored on dev."""
        self.snap.epoch, self.snap.dev, self.snap.best_epoch, self.snap.best = epoch, value, best_epoch, best
        text = (
            f"{self.snap.model} epoch {epoch}/{self.snap.epochs} done: train_loss {train_loss:.4f} "
            f"dev {self.snap.metric} {value:.4f} (best {best:.4f} at epoch {best_epoch}; "
            f"epoch {seconds:.0f}s, dev scoring {dev_seconds:.1f}s)"
        )
        if self._progress is not None:
            self._progress.update(self._task, description=self._description(), dev=self._dev_text())
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            log.info("%s", text)
        self._write(force=True)

    def finish(self, ok: bool, detail: str = "") -> None:
        self.stage("done" if ok else "failed", detail)
        self.snap.eta_s = 0.0 if ok else None
        self._write(force=True)

    @property
    def timings(self) -> dict[str, float]:
        return dict(self.snap.timings)

    # ---------------------------------------------------------------- internals
    def _console(self):
        return console(self.stream)

    def _description(self) -> str:
        return f"{self.snap.model} epoch {self.snap.epoch}/{self.snap.epochs}"

    def _dev_text(self) -> str:
        if self.snap.dev is None:
            return f"dev {self.snap.metric} -"
        best = f"(best {self.snap.best:.4f} @{self.snap.best_epoch})"
        return f"dev {self.snap.metric} {self.snap.dev:.4f} {best}"

    def _eta(self) -> float | None:
        done = self.snap.step - self._first_step
        if done <= 0:
            return None
        return (time.monotonic() - self._train_t0) / done * (self.snap.steps - self.snap.step)

    def _stop_bar(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def _write(self, force: bool = False) -> None:
        if self.file is None:
            return
        now = time.monotonic()
        if not force and now - self._written < FILE_EVERY_S:
            return
        self._written = now
        self.snap.elapsed_s = round(now - self.t0, 1)
        self.snap.updated = time.time()
        try:
            atomic_write_json(self.file, asdict(self.snap))
        except OSError as exc:  # progress is for people: never fail a training run over it
            log.warning("could not write %s: %s", self.file, exc)


_CONSOLES: dict[int, Any] = {}


def console(stream: IO[str] | None = None):
    """One rich Console per stream, shared by the progress bar and the log handler (`ncbi-retrain`
    logs through it on a terminal), so log lines print above the bar instead of through it."""
    from rich.console import Console

    stream = stream or sys.stderr
    if id(stream) not in _CONSOLES:
        _CONSOLES[id(stream)] = Console(file=stream, force_terminal=_isatty(stream) or None)
    return _CONSOLES[id(stream)]


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def read_snapshot(path: Path) -> dict[str, Any] | None:
    """progress.json as a dict, or None when absent or half-read."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# -------------------------------------------------------------------- the demo's live view
MODELS = ("classifier", "ner")


def run_folder(runs: Path, since: float) -> Path | None:
    """The newest DAG run folder under `runs` created after `since` (unix time)."""
    try:
        found = [p for p in Path(runs).iterdir() if p.is_dir() and p.stat().st_mtime >= since]
    except OSError:
        return None
    return max(found, key=lambda p: p.stat().st_mtime, default=None)


def model_rows(run: Path | None) -> list[dict[str, Any]]:
    """One row per model: its training progress and, once decided, its gate."""
    rows = []
    for model in MODELS:
        snap = read_snapshot(run / model / "checkpoints" / PROGRESS_FILE) if run else None
        row: dict[str, Any] = {"model": model, "snap": snap, "gate": None}
        decision = read_snapshot(run / model / "decision.json") if run else None
        if decision:
            row["gate"] = decision.get("gate")
        rows.append(row)
    return rows


def _row_cells(row: dict[str, Any]) -> list[str]:
    snap = row["snap"]
    if snap is None:
        return [row["model"], "waiting", "", "", "", "", row["gate"] or ""]
    stage = STAGE_TEXT.get(snap["stage"], snap["stage"]).split(" (")[0]
    if snap.get("resumed_from"):
        stage += f" (resumed after epoch {snap['resumed_from']})"
    epoch = f"{snap['epoch']}/{snap['epochs']}" if snap.get("epochs") else ""
    steps = f"{snap['step']}/{snap['steps']}" if snap.get("steps") else ""
    eta = _duration(snap.get("eta_s")) if snap["stage"] == "train" else ""
    dev = ""
    if snap.get("dev") is not None:
        dev = f"{snap['metric']} {snap['dev']:.4f} (best {snap['best']:.4f} @{snap['best_epoch']})"
    return [row["model"], stage, epoch, steps, eta, dev, row["gate"] or ""]


HEADERS = ("model", "stage", "epoch", "step", "ETA", "last dev score", "gate")


def render(run: Path | None, started: float, title: str):
    """A rich Table of every model's progress."""
    from rich.table import Table

    elapsed = _duration(time.time() - started)
    table = Table(title=f"{title} · {elapsed}" + (f" · {run}" if run else " · waiting for the run"))
    for h in HEADERS:
        table.add_column(h)
    for row in model_rows(run):
        table.add_row(*_row_cells(row))
    return table


def watch(
    runs: Path,
    since: float,
    pid: int | None = None,
    title: str = "ncbi_retrain",
    stream: IO[str] | None = None,
) -> Path | None:
    """Show every model's progress until process `pid` exits (a live table on a terminal, a line per
    change otherwise); returns the run folder."""
    from rich.console import Console
    from rich.live import Live

    stream = stream or sys.stdout
    console = Console(file=stream)
    run = None

    def alive() -> bool:
        if pid is None:
            return False
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state not in ("Z", "X")  # an exited child its parent has not reaped yet is a zombie

    if _isatty(stream):
        with Live(render(run, since, title), console=console, refresh_per_second=2) as live:
            while alive():
                run = run or run_folder(runs, since)
                live.update(render(run, since, title))
                time.sleep(1.0)
            run = run or run_folder(runs, since)
            live.update(render(run, since, title))
        return run
    last: dict[str, tuple] = {}
    while True:
        running = alive()
        run = run or run_folder(runs, since)
        for row in model_rows(run):
            cells = _row_cells(row)
            key = (cells[1], cells[2], cells[5], cells[6])
            if row["snap"] is not None and last.get(row["model"]) != key:
                last[row["model"]] = key
                print(" | ".join(c for c in cells if c), file=stream, flush=True)
        if not running:
            return run
        time.sleep(2.0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Live progress of the models of a DAG run (make demo).")
    ap.add_argument("runs", type=Path, help="the work dir holding one folder per DAG run")
    ap.add_argument("--since", type=float, required=True, help="unix time: the run folder is newer")
    ap.add_argument("--pid", type=int, help="watch until this process (airflow dags test) exits")
    ap.add_argument("--title", default="ncbi_retrain")
    args = ap.parse_args(argv)
    try:
        watch(args.runs, args.since, args.pid, args.title)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
