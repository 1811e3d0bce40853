"""NeMo's EMA of the weights (`exp_manager.ema.enable`): dev scores the average, the saved model is the
average (not the raw weights it was averaged from), and a resumed run continues the average it had saved
in its checkpoint instead of starting a new one. In-process on a slice of the corpus, tiny profile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback

from tasks.training.train import train

EMA = ["exp_manager.ema.enable=true", "exp_manager.ema.decay=0.9"]


class Snapshot(Callback):
    """The EMA and the raw parameters, by name, at the end of each epoch (after the monitor's dev pass) and
    when training starts (after a checkpoint was restored); optionally a crash at the start of an epoch."""

    def __init__(self, crash_at_epoch: int | None = None) -> None:
        self.crash_at_epoch = crash_at_epoch
        self.at_end: dict[int, tuple[dict, dict]] = {}
        self.at_start: tuple[dict, dict] | None = None

    @staticmethod
    def _take(trainer, pl_module) -> tuple[dict, dict]:
        from nemo.collections.common.callbacks.ema import EMAOptimizer

        (opt,) = trainer.optimizers
        assert isinstance(opt, EMAOptimizer), "exp_manager.ema.enable did not wrap the optimizer"
        opt.join()  # on CPU the average is updated in a thread
        names = {id(p): n for n, p in pl_module.named_parameters()}
        params = list(opt.all_parameters())
        ema = {names[id(p)]: e.detach().clone() for p, e in zip(params, opt.ema_params, strict=True)}
        return ema, {names[id(p)]: p.detach().clone() for p in params}

    def on_train_start(self, trainer, pl_module):
        if trainer.optimizers[0].ema_params:  # a fresh run builds its average at the first step
            self.at_start = self._take(trainer, pl_module)

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch + 1 == self.crash_at_epoch:
            raise RuntimeError("injected crash")

    def on_train_epoch_end(self, trainer, pl_module):
        self.at_end[trainer.current_epoch + 1] = self._take(trainer, pl_module)


def test_the_saved_model_is_the_average_that_dev_scored(data_slice: Path, tmp_path: Path) -> None:
    snap, out = Snapshot(), tmp_path / "out"
    overrides = ["trainer.max_epochs=1", *EMA]  # one epoch: the best epoch is the last
    result = train("ner", data_slice, out, "tiny", overrides, use_mlflow=False, callbacks=(snap,))
    ema, raw = snap.at_end[1]
    from tasks.training.artifact import restore_nemo

    model = restore_nemo(out / "model.nemo", "ner")  # as `evaluate` restores a model
    saved = {n: p.detach() for n, p in model.named_parameters()}
    assert saved.keys() == ema.keys()
    assert all(torch.equal(saved[n], ema[n]) for n in ema)
    assert any(not torch.equal(saved[n], raw[n]) for n in raw), "the average must differ from the raw weights"
    # dev_history's figure is the saved model's dev score (the average's), as `evaluate` would give it
    from tasks.training.data import read_all
    from tasks.training.evaluate import gate_score

    dev = read_all("ner", data_slice)["dev"]
    hist = json.loads((out / "dev_history.json").read_text())
    assert hist["best_epoch"] == result["best_epoch"] == 1
    assert gate_score(model, "ner", dev) == pytest.approx(hist["history"][0]["val_entity_f1"], abs=1e-12)


def test_a_resumed_run_continues_the_saved_average(data_slice: Path, tmp_path: Path) -> None:
    ckpt, overrides = tmp_path / "checkpoints", ["trainer.max_epochs=2", *EMA]
    crashed = Snapshot(crash_at_epoch=2)
    with pytest.raises(RuntimeError, match="injected crash"):
        train("ner", data_slice, tmp_path / "try-1", "tiny", overrides, use_mlflow=False,
              callbacks=(crashed,), checkpoints=ckpt)  # fmt: skip
    assert (ckpt / "epoch-001.ckpt").exists() and not (tmp_path / "try-1").exists()
    resumed = Snapshot()
    result = train("ner", data_slice, tmp_path / "try-2", "tiny", overrides, use_mlflow=False,
                   callbacks=(resumed,), checkpoints=ckpt)  # fmt: skip
    assert result["resumed_from_epoch"] == 1
    ema_then, raw_then = crashed.at_end[1]
    ema_now, raw_now = resumed.at_start
    assert all(torch.equal(raw_now[n], raw_then[n]) for n in raw_then)  # precondition: weights restored
    assert all(torch.equal(ema_now[n], ema_then[n]) for n in ema_then), "the average was not restored"
    assert any(not torch.equal(ema_now[n], raw_now[n]) for n in raw_now)
