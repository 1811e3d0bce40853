"""One epoch of each model on the `gpu` profile, timed: samples/s, MFU and peak memory (run by bench/gpu.sh).

    python bench/gpu_train.py --data DATA [--out DIR] [--dry-run] [--json FILE] [KEY=VALUE ...]

Each model trains through the product's own `tasks.training.train.train` (NeMo, the gpu profile: bf16-mixed,
seq 128, batch 32) with the profile's encoder built with random weights (`random:<encoder>`, shape from
`tasks.training.encoders.SHAPES`): no weights can be downloaded on the lent machines. A Lightning callback
times the training steps of the epoch after a few warm-up steps (dev scoring, test scoring and saving are
outside the window) and counts the tokens the batches carry.

MFU = 6 x parameters x tokens/s / peak dense bf16 FLOP/s (the 6ND estimate: forward + backward, attention
score FLOPs left out), once for every token the batches carry (padding included: work the GPU did) and once
for real tokens only. Peak: `PEAK_BF16_TFLOPS` by device name (NVIDIA's data sheets give the sparse figure,
1979 TFLOP/s for H100/H200 SXM; dense is half), or GPU_PEAK_TFLOPS.

--dry-run: the same path on the CPU with the `tiny` encoder and a few steps (MFU against a nominal 1 TFLOP/s),
to check everything but the GPU where no GPU is.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_key, _value)

from lightning.pytorch import Callback  # noqa: E402  (after the offline switches)

# Dense bf16 tensor-core peak, TFLOP/s (vendor data sheets: half the "with sparsity" figure).
PEAK_BF16_TFLOPS = {"H200": 989.5, "H100": 989.5}
DRY_RUN_PEAK_TFLOPS = 1.0  # nominal: the CPU figure only proves the arithmetic runs
WARMUP_STEPS = 5  # cuBLAS / autocast start-up, excluded from the window
DRY_RUN_STEPS = 8


class Meter(Callback):
    """Times the training steps after `warmup` steps, until validation or the end of the epoch."""

    def __init__(self, warmup: int):
        self.warmup = warmup
        self.seen = self.samples = self.tokens = 0
        self.real_tokens = 0  # a tensor on the batch's device once counting starts (no sync per step)
        self.t0: float | None = None
        self.t1: float | None = None
        self.params = 0

    @staticmethod
    def _sync() -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_train_start(self, trainer, pl_module):
        self.params = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
        # a short epoch (the classifier has ~19 steps) keeps three quarters of its steps in the window
        self.warmup = min(self.warmup, max(int(trainer.num_training_batches) // 4, 1))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.t0 is None and self.seen == self.warmup:
            self._sync()
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen += 1
        if self.t0 is not None and self.t1 is None:
            ids, mask = batch[0], batch[2]  # NeMo's datasets: input_ids, segment_ids, input_mask, ...
            self.samples += int(ids.shape[0])
            self.tokens += int(ids.numel())
            self.real_tokens = self.real_tokens + mask.sum()

    def _stop(self, *_args) -> None:
        if self.t0 is not None and self.t1 is None:
            self._sync()
            self.t1 = time.perf_counter()

    on_validation_start = on_train_epoch_end = on_train_end = _stop

    def result(self, peak_tflops: float) -> dict:
        if self.t0 is None or self.t1 is None:
            raise SystemExit(f"the epoch had {self.seen} steps: too few to time after {self.warmup} warm-up")
        seconds = self.t1 - self.t0
        real = int(self.real_tokens)
        flops = 6 * self.params  # per token
        return {
            "params": self.params,
            "steps_timed": self.seen - self.warmup,
            "seconds_timed": round(seconds, 3),
            "samples_per_s": round(self.samples / seconds, 1),
            "tokens_per_s": round(self.tokens / seconds),
            "real_token_fraction": round(real / max(self.tokens, 1), 3),
            "mfu": round(flops * self.tokens / seconds / (peak_tflops * 1e12), 4),
            "mfu_real_tokens": round(flops * real / seconds / (peak_tflops * 1e12), 4),
        }


def device_info(dry_run: bool) -> tuple[str, float, str]:
    """(device name, peak dense bf16 TFLOP/s, where the peak comes from)."""
    import torch

    if dry_run:
        return "cpu (dry run)", DRY_RUN_PEAK_TFLOPS, "nominal"
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --dry-run to check the rest on a CPU")
    name = torch.cuda.get_device_name()
    if env := os.environ.get("GPU_PEAK_TFLOPS"):
        return name, float(env), "GPU_PEAK_TFLOPS"
    for key, tflops in PEAK_BF16_TFLOPS.items():
        if key in name:
            return name, tflops, f"NVIDIA {key} data sheet, dense bf16"
    raise SystemExit(f"no peak bf16 figure for {name!r}: set GPU_PEAK_TFLOPS")


def overrides_for(task: str, dry_run: bool, extra: list[str]) -> list[str]:
    """One epoch of the gpu profile with its encoder's shape and random weights (tiny on a dry run)."""
    from tasks.training.config import resolve_config
    from tasks.training.encoders import RANDOM

    encoder = resolve_config(task, "gpu").config.model.language_model.pretrained_model_name
    over = [
        f"model.language_model.pretrained_model_name={'tiny' if dry_run else RANDOM + encoder}",
        "trainer.max_epochs=1",
    ]
    if dry_run:
        loader = "model.train_ds" if task == "classifier" else "model.dataset"
        over += [
            "trainer.accelerator=cpu",
            f"trainer.max_steps={DRY_RUN_STEPS}",
            "model.train_ds.batch_size=2",  # a few steps even on the fixtures' slice
            f"{loader}.num_workers=0",
            f"{loader}.pin_memory=false",
        ]
    return over + extra


def peak_memory_gib(dry_run: bool) -> float:
    import torch

    if dry_run or not torch.cuda.is_available():  # the process's peak resident set (KiB on Linux)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return torch.cuda.max_memory_allocated() / 2**30


def run_task(task: str, data: Path, out: Path, dry_run: bool, extra: list[str], peak: float) -> dict:
    import torch

    from tasks.training.train import train

    meter = Meter(1 if dry_run else WARMUP_STEPS)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.monotonic()
    res = train(
        task,
        data,
        out / task,
        "gpu",
        overrides_for(task, dry_run, extra),
        use_mlflow=False,
        callbacks=(meter,),
    )
    row = {"model": task, **meter.result(peak)}
    row.update(
        {
            "peak_memory_gib": round(peak_memory_gib(dry_run), 2),
            "epoch_samples_per_s": res["train_samples_per_s"],  # the product's figure: dev scoring included
            "fit_seconds": res["fit_seconds"],
            "wall_seconds": round(time.monotonic() - t0, 1),
            "test_metrics": res["metrics"],
        }
    )
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="data directory (tc3/ and ner3/: `data import`)")
    ap.add_argument("--out", type=Path, default=None, help="folder for the runs (default: a temporary one)")
    ap.add_argument("--tasks", nargs="+", default=["classifier", "ner"], choices=["classifier", "ner"])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny encoder, a few steps")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("overrides", nargs="*", help="extra config overrides for both models (KEY=VALUE)")
    args = ap.parse_args()

    import lightning
    import torch

    from tasks.cli.training import _setup_logging

    _setup_logging(verbose=False)
    name, peak, source = device_info(args.dry_run)
    head = {
        "device": name,
        "peak_bf16_tflops": peak,
        "peak_source": source,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "lightning": lightning.__version__,
        "dry_run": args.dry_run,
    }
    print(f"gpu_train: {name}, peak {peak} TFLOP/s bf16 ({source}); torch {torch.__version__}", flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu-train-") as tmp:
        out = args.out or Path(tmp)
        rows = [run_task(t, args.data, out, args.dry_run, args.overrides, peak) for t in args.tasks]
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps({**head, "results": rows}, indent=2) + "\n", encoding="utf-8")


def table(rows: list[dict]) -> str:
    cols = (
        ("model", "model", "{}"),
        ("params", "params (M)", "{:.1f}"),
        ("samples_per_s", "samples/s", "{:.1f}"),
        ("tokens_per_s", "tokens/s", "{:,}"),
        ("mfu", "MFU", "{:.1%}"),
        ("mfu_real_tokens", "MFU non-pad", "{:.1%}"),
        ("peak_memory_gib", "peak mem GiB", "{:.2f}"),
        ("wall_seconds", "wall s", "{:.0f}"),
    )
    cells = [[h for _, h, _ in cols]]
    for r in rows:
        r = {**r, "params": r["params"] / 1e6}
        cells.append([f.format(r[k]) for k, _, f in cols])
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells)


if __name__ == "__main__":
    main()
