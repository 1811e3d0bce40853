"""Training throughput: `ncbi-retrain train` against NeMo's model driven directly, same config and data.

    .venv-train/bin/python bench/train_throughput.py [--data DATA] [--profiles tiny cpu] [--cpu-steps 20]

For each profile, one run of each side in this process's machine:
  * product: `ncbi-retrain train TASK --no-mlflow` in a subprocess (its --json line reports samples/s over
    `trainer.fit`, which includes its per-epoch dev scoring);
  * direct: NeMo as its example scripts drive it (Trainer + exp_manager + model + fit), the same composed
    config, the same scratch copy of the data, timed around `trainer.fit`.
It prints samples/s of both and the ratio product / direct (1.0 = no overhead). The `cpu` profile is cut
to `--cpu-steps` optimizer steps (`trainer.max_steps`) so the benchmark stays short.
With a CUDA device it also measures bf16 training at seq 128 on the gpu profile's encoder: sequences/s
and model FLOPs utilisation (6 x params x tokens/s over the device's peak bf16 FLOP/s).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Peak dense bf16 tensor FLOP/s by device name (vendor data sheets); override with BENCH_PEAK_FLOPS.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}


def product(task: str, data: Path, profile: str, overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "tasks.cli",
            "train",
            task,
            "--data",
            str(data),
            "--out",
            f"{tmp}/out",
            "--profile",
            profile,
            "--no-mlflow",
            "--json",
            *overrides,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"product run failed:\n{proc.stderr[-2000:]}")
        res = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"samples_per_s": res["train_samples_per_s"], "fit_seconds": res["fit_seconds"]}


def direct(task: str, data: Path, profile: str, overrides: list[str]) -> dict:
    """NeMo driven as its example scripts do, with the product's composed config and data copy."""
    import lightning.pytorch as pl
    from nemo.collections.nlp.models import TextClassificationModel, TokenClassificationModel
    from nemo.utils.exp_manager import exp_manager
    from omegaconf import OmegaConf

    from tasks.training import config as C
    from tasks.training.data import read_all, write_scratch
    from tasks.training.encoders import resolve_encoder
    from tasks.training.train import _fill as fill_config

    cfg = C.compose(task, profile, overrides)
    splits = read_all(task, data)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = write_scratch(task, splits, Path(tmp) / "data")
        encoder = resolve_encoder(
            cfg["model"]["language_model"]["pretrained_model_name"], Path(tmp), splits["train"].texts
        )
        cfg = fill_config(cfg, task, scratch, encoder, Path(tmp))  # exactly what `train` sets
        cfg = OmegaConf.create(cfg)
        pl.seed_everything(int(cfg.seed))
        trainer = pl.Trainer(**cfg.trainer, enable_progress_bar=False)
        exp_manager(trainer, cfg.exp_manager)
        cls = TextClassificationModel if task == "classifier" else TokenClassificationModel
        model = cls(cfg=cfg.model, trainer=trainer)
        t0 = time.monotonic()
        trainer.fit(model)
        seconds = time.monotonic() - t0
        batch = int(cfg.model.train_ds.batch_size)
        samples = min(trainer.global_step * batch, len(splits["train"]) * trainer.max_epochs)
    return {"samples_per_s": samples / seconds, "fit_seconds": round(seconds, 1)}


def gpu_bench(steps: int = 20, batch: int = 32, seq: int = 128) -> dict | None:
    """bf16 training steps of the gpu profile's encoder + token head at seq 128: seq/s and MFU."""
    import torch

    if not torch.cuda.is_available():
        return None
    from transformers import AutoModelForTokenClassification

    from tasks.training.config import compose

    name = compose("ner", "gpu")["model"]["language_model"]["pretrained_model_name"]
    model = AutoModelForTokenClassification.from_pretrained(name, num_labels=3).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5)
    params = sum(p.numel() for p in model.parameters())
    ids = torch.randint(1000, 20000, (batch, seq), device="cuda")
    labels = torch.randint(0, 3, (batch, seq), device="cuda")
    for i in range(steps + 5):  # 5 warm-up steps
        if i == 5:
            torch.cuda.synchronize()
            t0 = time.monotonic()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    seconds = time.monotonic() - t0
    device = torch.cuda.get_device_name()
    peak = float(os.environ.get("BENCH_PEAK_FLOPS", 0)) or next(
        (v for k, v in PEAK_BF16.items() if k in device), 0.0
    )
    tokens_per_s = steps * batch * seq / seconds
    return {
        "device": device,
        "seq_per_s": steps * batch / seconds,
        "params": params,
        "mfu": 6 * params * tokens_per_s / peak if peak else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "data", help="data directory (tc3/ and ner3/)")
    ap.add_argument("--tasks", nargs="+", default=["ner", "classifier"], choices=["ner", "classifier"])
    ap.add_argument("--profiles", nargs="+", default=["tiny", "cpu"], choices=["tiny", "cpu"])
    ap.add_argument("--tiny-epochs", type=int, default=1, help="epochs of the tiny profile on the full data")
    ap.add_argument("--cpu-steps", type=int, default=20, help="optimizer steps of the cpu profile")
    args = ap.parse_args()
    rows = []
    for profile in args.profiles:
        for task in args.tasks:
            if profile == "tiny":
                over = [f"trainer.max_epochs={args.tiny_epochs}"]
            else:  # a few steps; validation still runs once at the end (max_steps stops the epoch)
                over = [f"trainer.max_steps={args.cpu_steps}", "trainer.max_epochs=1"]
            p = product(task, args.data, profile, over)
            d = direct(task, args.data, profile, over)
            ratio = p["samples_per_s"] / d["samples_per_s"]
            rows.append({"profile": profile, "task": task, "product": p, "direct": d, "ratio": ratio})
            print(
                f"{profile:5s} {task:10s} product {p['samples_per_s']:8.1f} samples/s  direct "
                f"{d['samples_per_s']:8.1f} samples/s  ratio {ratio:.2f}",
                flush=True,
            )
    gpu = gpu_bench()
    if gpu:
        mfu = f"{gpu['mfu']:.1%}" if gpu["mfu"] is not None else "n/a (unknown peak)"
        print(f"gpu   {gpu['device']}: bf16 seq 128 {gpu['seq_per_s']:.1f} seq/s, MFU {mfu}")
    else:
        print("gpu   no CUDA device: bf16 seq/s and MFU not measured")
    print(json.dumps({"rows": rows, "gpu": gpu}))


if __name__ == "__main__":
    main()
