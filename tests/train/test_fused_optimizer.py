"""Fused AdamW (`model.optim.fused`, one kernel over all parameters) under `bf16-mixed` with gradient
clipping: Lightning's own bf16 plugin refuses that combination, `train` uses `BF16MixedClipping`, which
clips exactly as fp32 would (bf16-mixed has no gradient scaler)."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from tasks.training.train import BF16MixedClipping, train

# A clip far below any gradient norm of a fresh tiny BERT, so every step is clipped.
CLIP = 1e-3
BF16_CLIPPED = ["trainer.precision=bf16-mixed", f"trainer.gradient_clip_val={CLIP}", "trainer.max_epochs=1"]


def _fused_adamw_with_large_gradients() -> tuple[torch.optim.AdamW, list[torch.nn.Parameter]]:
    params = [torch.nn.Parameter(torch.zeros(4, 3)), torch.nn.Parameter(torch.zeros(5))]
    for p, g in zip(params, (torch.full((4, 3), 2.0), torch.full((5,), -3.0)), strict=True):
        p.grad = g
    return torch.optim.AdamW(params, lr=1e-3, fused=True), params


def test_lightning_alone_refuses_fused_adamw_with_clipping_under_bf16() -> None:
    """The precondition: without the plugin, this configuration cannot train."""
    optimizer, _ = _fused_adamw_with_large_gradients()
    with pytest.raises(RuntimeError, match="fused"):
        MixedPrecision("bf16-mixed", "cpu").clip_gradients(optimizer, clip_val=1.0)


def test_the_plugin_clips_the_global_norm_as_fp32_would() -> None:
    optimizer, params = _fused_adamw_with_large_gradients()
    total = (4 * 3 * 2.0**2 + 5 * 3.0**2) ** 0.5  # the global norm before clipping, 9.64
    reference = [p.grad / total for p in params]
    BF16MixedClipping("cpu").clip_gradients(optimizer, clip_val=1.0)
    norm = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in params]))
    assert norm.item() == pytest.approx(1.0, rel=1e-5)
    for p, r in zip(params, reference, strict=True):
        torch.testing.assert_close(p.grad, r, rtol=1e-5, atol=1e-6)


class _Seen(pl.Callback):
    """Records the optimizer Lightning steps and the gradient norm it hands to the optimizer."""

    def __init__(self) -> None:
        self.fused: list[bool] = []
        self.norms: list[float] = []

    def on_train_start(self, trainer, pl_module) -> None:
        self.fused = [bool(group["fused"]) for group in trainer.optimizers[0].param_groups]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # after the step
        grads = [p.grad.flatten() for p in pl_module.parameters() if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.cat(grads))))


@pytest.mark.parametrize("model", ["classifier", "ner"])
def test_train_steps_a_fused_adamw_under_bf16_with_clipping(
    model: str, data_slice: Path, tmp_path: Path
) -> None:
    seen = _Seen()
    result = train(
        model,
        data_slice,
        tmp_path / "out",
        "tiny",
        BF16_CLIPPED,
        use_mlflow=False,
        callbacks=(seen,),
        progress_bar=False,
    )
    assert result["epochs"] == 1 and (tmp_path / "out" / "model.nemo").is_file()
    assert seen.fused and all(seen.fused)
    assert seen.norms and max(seen.norms) <= CLIP * 1.001, seen.norms  # every step's gradients were clipped
