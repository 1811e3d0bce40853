"""`model.encoder_dropout`: whether NeMo's encoder trains in train mode (its dropout on). Lightning >= 2.2
keeps each submodule's mode and transformers' `from_pretrained` leaves the encoder in eval mode, so without
the setting the mode would be an accident of the loader; the per-epoch dev pass must not change it."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")


@pytest.mark.parametrize("dropout", [False, True])
def test_the_encoder_trains_in_the_configured_mode_every_epoch(
    dropout: bool, data_slice: Path, tmp_path: Path
) -> None:
    import lightning.pytorch as pl

    from tasks.training.train import train

    class Seen(pl.Callback):
        def __init__(self) -> None:
            self.modes: list[tuple[bool, bool]] = []  # (encoder, head) at each epoch's first batch

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if batch_idx == 0:
                self.modes.append((pl_module.bert_model.training, pl_module.classifier.training))

    seen = Seen()
    overrides = ["trainer.max_epochs=2", f"model.encoder_dropout={str(dropout).lower()}"]
    train("ner", data_slice, tmp_path / "out", "tiny", overrides, use_mlflow=False, callbacks=(seen,))
    assert seen.modes == [(dropout, True), (dropout, True)]  # epoch 2 follows a dev pass in eval mode
