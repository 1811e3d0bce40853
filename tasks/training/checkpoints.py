"""Per-epoch checkpoints that survive a crashed try, and the resume of the next try from them.

`train --checkpoints DIR` writes Lightning's checkpoint after every epoch into DIR (`epoch-003.ckpt`: the
state after 3 epochs: weights, optimizer, LR schedule, loop counters, and the epoch monitor's dev history
and best epoch), then a marker beside it (`epoch-003.ckpt.json`: bytes, sha256, config fingerprint, data
version, MLflow runs). A checkpoint without its marker was cut off while being written; one whose bytes
or sha256 differ from its marker is corrupt: either way the one before it is used. Only the two newest
complete checkpoints are kept (each is ~3x the model: weights + Adam moments).

A retry of the same job (the DAG gives every try the same DIR: `<run>/<model>/checkpoints`) resumes from
the newest complete checkpoint with `trainer.fit(ckpt_path=...)`; a finished run deletes its checkpoints.
DIR also holds `progress.json` (tasks/training/progress.py).
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint

from tasks.errors import UsageError
from tasks.files import atomic_write_json
from tasks.provenance import sha256_file

log = logging.getLogger("ncbi_retrain.train")

KEEP = 2  # complete checkpoints kept: the newest, and the one before in case the newest is damaged
_NAME = re.compile(r"^epoch-(\d+)\.ckpt$")


def checkpoint_name(epochs_done: int) -> str:
    return f"epoch-{epochs_done:03d}.ckpt"


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".json")


@dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint and what its marker says."""

    path: Path
    epoch: int  # epochs done
    meta: dict[str, Any]


def _epochs(folder: Path) -> list[tuple[int, Path]]:
    found = []
    for p in folder.glob("epoch-*.ckpt"):
        if m := _NAME.match(p.name):
            found.append((int(m.group(1)), p))
    return sorted(found, reverse=True)


def _problem(path: Path, verify: bool) -> tuple[str | None, dict[str, Any]]:
    """(None, marker) for a complete checkpoint, else (why not, {})."""
    marker = _marker(path)
    try:
        meta = json.loads(marker.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "has no completion marker (its write was cut off)", {}
    except (OSError, ValueError):
        return f"has an unreadable marker {marker.name}", {}
    size = path.stat().st_size
    if size != meta.get("bytes"):
        return f"is {size} bytes, its marker says {meta.get('bytes')} (truncated or overwritten)", {}
    if verify and sha256_file(path) != meta.get("sha256"):
        return "does not match the sha256 in its marker (corrupt)", {}
    return None, meta


def latest(folder: Path, fingerprint: str, data_version: str | None) -> Checkpoint | None:
    """The newest complete checkpoint in `folder` (sha256 verified), skipping damaged ones with a log line.

    Raises:
        UsageError: the newest complete checkpoint belongs to another config or data version (a folder
            reused by hand): resuming would train another model.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    for epoch, path in _epochs(folder):
        why, meta = _problem(path, verify=True)
        if why:
            log.warning("checkpoint %s %s: trying the one before", path, why)
            continue
        mine = {"fingerprint": fingerprint, "data_version": data_version}
        theirs = {k: meta.get(k) for k in mine}
        if theirs != mine:
            raise UsageError(
                f"checkpoint folder {folder} holds {path.name} of another run (config "
                f"{theirs['fingerprint']}, data {theirs['data_version']}; this run: config {fingerprint}, "
                f"data {data_version}): "
                "give an empty --checkpoints folder"
            )
        return Checkpoint(path, epoch, meta)
    return None


def clear(folder: Path) -> None:
    """Delete every checkpoint and marker in `folder` (the run finished); progress.json stays."""
    for _, path in _epochs(Path(folder)):
        path.unlink(missing_ok=True)
        _marker(path).unlink(missing_ok=True)


class EpochCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint after every training epoch, named by epochs done, each followed by its
    completion marker; keeps the KEEP newest complete ones and removes damaged leftovers."""

    def __init__(self, dirpath: Path, meta: dict[str, Any]) -> None:
        super().__init__(
            dirpath=str(dirpath),
            save_top_k=-1,  # pruning is ours: it needs the markers
            every_n_epochs=1,
            save_on_train_epoch_end=True,  # NeMo's validation loop does not run (train scores dev itself)
            enable_version_counter=False,  # a retry overwrites a damaged epoch-N.ckpt
        )
        self.meta = dict(meta)

    def format_checkpoint_name(self, metrics: dict[str, Any], filename: str | None = None, ver=None) -> str:
        return os.path.join(self.dirpath, checkpoint_name(int(metrics["epoch"]) + 1))

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        path = Path(filepath)
        if trainer.is_global_zero:
            _marker(path).unlink(missing_ok=True)  # a stale marker must never vouch for the new bytes
        super()._save_checkpoint(trainer, filepath)  # ends with a barrier: every rank's state is in
        if trainer.is_global_zero:
            meta = {
                **self.meta,
                "epoch": trainer.current_epoch + 1,
                "global_step": trainer.global_step,
                "bytes": path.stat().st_size,
                "sha256": sha256_file(path),
            }
            atomic_write_json(_marker(path), meta)
            self._prune(path)

    def _prune(self, newest: Path) -> None:
        """Keep `newest` and the KEEP-1 newest complete ones before it; delete the rest: older ones,
        partial or damaged ones, and any left from a later epoch of a try that resumed before it."""
        kept, top = 1, int(_NAME.match(newest.name).group(1))
        for epoch, path in _epochs(newest.parent):
            if path == newest:
                continue
            if epoch < top and kept < KEEP and _problem(path, verify=False)[0] is None:
                kept += 1
                continue
            path.unlink(missing_ok=True)
            _marker(path).unlink(missing_ok=True)
