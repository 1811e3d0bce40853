"""Side by side: `ncbi-retrain train` against NeMo's model driven directly, same data, same config.

    make bench        (= .venv-train/bin/python bench/train_throughput.py)
    .venv-train/bin/python bench/train_throughput.py [--data DATA] [--profiles tiny cpu]
        [--tasks ner classifier] [--tiny-epochs 10] [--cpu-epochs 1] [--no-assert]

Data: with no `--data`, the NCBI release (NCBI_SHARED_DATA, default ../shared/data) is imported into a
scratch folder first (`ncbi-retrain data import`, about a second), so a fresh clone needs nothing else.

For each profile and model, two fresh processes, one after the other:
  * ours: `ncbi-retrain train MODEL --no-mlflow --json` (length-bucketed batches, fused AdamW, per-epoch
    dev scoring of the gate metric, best-epoch selection); samples/s = training items / seconds of
    `trainer.fit` (its dev scoring included), and the best dev gate metric it reached in that time T;
  * NeMo: its model driven as NeMo's example scripts do (Trainer + exp_manager + model + fit, NeMo's own
    dataloaders and validation loop each epoch) with the same composed config, data copy and encoder
    (less `model.optim.fused`, which NeMo's example configs do not set),
    its `trainer.fit` capped at the same wall time T (Lightning's `max_time`); samples/s over its fit,
    and the dev gate metric (scored after fit, untimed, by the same scorer) of what it reached in T.
The ratio is ours / NeMo's samples/s (wall clock); `cpu-ratio` is the same over CPU seconds of the
fit (all threads), which a busy machine disturbs less: read it when the load column is high.
Goals (issue 12): >= 1.3 for NER, >= 1.0 for the classifier; the benchmark exits 1 when a ratio misses
its goal (speed is asserted here, never in a timed test).
Results: a table on stdout and bench/results/throughput-<time>.json (with the machine's load).
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
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

GOALS = {"ner": 1.3, "classifier": 1.0}  # ours / NeMo samples/s
# What NeMo's example configs give its validation loaders (our configs keep only the files: `train`
# scores dev itself).
NEMO_VALIDATION = {
    "classifier": {"batch_size": 32, "shuffle": False, "num_samples": -1, "num_workers": 0},
    "ner": {"batch_size": 64, "shuffle": False, "num_samples": -1},
}


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def prepare_data(scratch: Path) -> Path:
    """The shared NCBI release imported into `scratch`/data (what `make demo` imports into data/)."""
    from tasks.datasets import import_corpus

    shared = Path(os.environ.get("NCBI_SHARED_DATA", ROOT.parent / "shared" / "data")).resolve()
    if not (shared / "ncbi_disease" / "original").is_dir():
        raise SystemExit(f"bench: the NCBI release is not at {shared} (set NCBI_SHARED_DATA or pass --data)")
    out = scratch / "data"
    import_corpus(
        pubtator=str(shared / "ncbi_disease" / "original"),
        iob=str(shared / "ncbi_disease" / "iob"),
        mesh=str(shared / "mesh" / "2017MeshTree.txt"),
        out=out,
    )
    return out


def ours(task: str, data: Path, profile: str, overrides: list[str], scratch: Path) -> dict:
    out = Path(tempfile.mkdtemp(dir=scratch)) / "out"
    cmd = [sys.executable, "-m", "tasks.cli", "train", task, "--data", str(data), "--out", str(out)]
    cmd += ["--profile", profile, "--no-mlflow", "--json", *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"bench: ncbi-retrain train failed:\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    hist = json.loads((out / "dev_history.json").read_text())
    gate = hist["metric"]
    return {
        "samples_per_s": res["train_samples_per_s"],
        "samples_per_cpu_s": hist["samples"] / hist["fit_cpu_seconds"],
        "fit_seconds": res["fit_seconds"],
        "epochs": res["epochs"],
        "dev": hist[f"best_val_{gate}"],
        "dev_scoring_fraction": res["dev_scoring_fraction"],
        "timings": res["timings"],
    }


def nemo(task: str, data: Path, profile: str, overrides: list[str], seconds: float, scratch: Path) -> dict:
    """NeMo driven directly, in a fresh process (this script with --nemo-child)."""
    args = {"task": task, "data": str(data), "profile": profile, "overrides": overrides, "seconds": seconds}
    cmd = [sys.executable, __file__, "--nemo-child", json.dumps(args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=scratch, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"bench: NeMo driven directly failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def nemo_child(spec: dict) -> dict:
    """Trainer + exp_manager + NeMo model + fit, as NeMo's example scripts; then score dev (untimed)."""
    import logging
    import warnings

    import lightning.pytorch as pl
    from lightning.pytorch import Callback
    from nemo.utils import logging as nemo_logging
    from nemo.utils.exp_manager import exp_manager
    from omegaconf import OmegaConf, open_dict

    from tasks.training.artifact import _model_class
    from tasks.training.config import resolve_config
    from tasks.training.data import read_all, write_scratch
    from tasks.training.encoders import resolve_encoder
    from tasks.training.evaluate import GATE_METRIC, score
    from tasks.training.train import _fill

    warnings.filterwarnings("ignore")
    nemo_logging.set_verbosity(nemo_logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    task, data = spec["task"], Path(spec["data"])
    cfg = resolve_config(task, spec["profile"], spec["overrides"]).config
    splits = read_all(task, data)
    tmp = Path(tempfile.mkdtemp(prefix="bench-nemo-"))
    scratch = write_scratch(task, splits, tmp / "data")
    encoder = resolve_encoder(
        str(cfg.model.language_model.pretrained_model_name), tmp, splits["train"].texts, int(cfg.seed)
    )
    cfg = OmegaConf.create(_fill(cfg, task, scratch, encoder, tmp))  # the paths `train` sets
    with open_dict(cfg):
        cfg.model.validation_ds.update(NEMO_VALIDATION[task])
        cfg.model.test_ds = None
        # NeMo's example configs leave AdamW at torch's default (a loop per tensor on CPU); Lightning's own
        # bf16-mixed plugin also refuses a fused optimizer with gradient clipping (train.BF16MixedClipping).
        cfg.model.optim.pop("fused", None)
        cfg.exp_manager.pop("log_step_timing", None)  # NeMo's default: logged every step

    class Count(Callback):  # a probe only: items per training batch
        samples = 0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            Count.samples += int(batch[0].shape[0])

    pl.seed_everything(int(cfg.seed))
    trainer = pl.Trainer(
        **OmegaConf.to_container(cfg.trainer, resolve=True),
        callbacks=[Count()],
        enable_progress_bar=False,
        max_time={"seconds": spec["seconds"]},
    )
    exp_manager(trainer, cfg.exp_manager)
    model = _model_class(task)(cfg=cfg.model, trainer=trainer)
    t0, cpu0 = time.monotonic(), time.process_time()
    trainer.fit(model)
    seconds, cpu = time.monotonic() - t0, time.process_time() - cpu0
    metrics, _, _ = score(model, task, splits["dev"])
    steps_per_epoch = len(model._train_dl)
    return {
        "samples_per_s": Count.samples / seconds,
        "samples_per_cpu_s": Count.samples / cpu,
        "fit_seconds": round(seconds, 1),
        "epochs": round(trainer.global_step / steps_per_epoch, 2),
        "dev": metrics[GATE_METRIC[task]],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="an imported data directory (default: import into scratch)")
    ap.add_argument("--tasks", nargs="+", default=["ner", "classifier"], choices=["ner", "classifier"])
    ap.add_argument("--profiles", nargs="+", default=["tiny", "cpu"], choices=["tiny", "cpu"])
    # 10, not the profile's 3: a 3-epoch tiny classifier fit lasts 2-3 s, where one-off costs (the first
    # steps' warm-up) weigh: its ratio was 0.78 at 3 epochs (twice) and 1.14 at 10 (RESULTS.md).
    ap.add_argument("--tiny-epochs", type=int, default=10, help="epochs of the tiny profile (full data)")
    ap.add_argument("--cpu-epochs", type=int, default=1, help="epochs of the cpu profile (full data)")
    ap.add_argument("--no-assert", action="store_true", help="report only; exit 0 whatever the ratios")
    ap.add_argument("--nemo-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.nemo_child:
        print(json.dumps(nemo_child(json.loads(args.nemo_child))))
        return 0
    with tempfile.TemporaryDirectory(prefix="ncbi-bench-") as tmp:
        scratch = Path(tmp)
        data = args.data or prepare_data(scratch)
        rows, failed = [], []
        print(
            f"{'profile':7s} {'model':10s} {'ours/s':>8s} {'NeMo/s':>8s} {'ratio':>6s} {'goal':>5s} "
            f"{'cpu-ratio':>9s} {'T (s)':>7s} {'dev ours':>9s} {'dev NeMo':>9s} {'NeMo ep':>7s}  load",
            flush=True,
        )
        for profile in args.profiles:
            epochs = args.tiny_epochs if profile == "tiny" else args.cpu_epochs
            over = [f"trainer.max_epochs={epochs}"]
            for task in args.tasks:
                before = load()
                a = ours(task, data, profile, over, scratch)
                b = nemo(task, data, profile, over, a["fit_seconds"], scratch)
                ratio = a["samples_per_s"] / b["samples_per_s"]
                cpu_ratio = a["samples_per_cpu_s"] / b["samples_per_cpu_s"]  # less sensitive to load
                ok = ratio >= GOALS[task]
                if not ok:
                    failed.append(f"{profile} {task} {ratio:.2f} < {GOALS[task]}")
                rows.append(
                    {"profile": profile, "task": task, "epochs": epochs, "ours": a, "nemo": b, "ratio": ratio,
                     "cpu_ratio": cpu_ratio, "goal": GOALS[task], "load_before": before, "load_after": load()}
                )  # fmt: skip
                print(
                    f"{profile:7s} {task:10s} {a['samples_per_s']:8.1f} {b['samples_per_s']:8.1f} "
                    f"{ratio:6.2f} {GOALS[task]:5.1f} {cpu_ratio:9.2f} {a['fit_seconds']:7.1f} "
                    f"{a['dev']:9.4f} {b['dev']:9.4f} {b['epochs']:7.2f}  {before} -> {load()}"
                    + ("" if ok else "  BELOW GOAL"),
                    flush=True,
                )
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"throughput-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows}, indent=1) + "\n")
    print(
        f"dev: best dev gate metric of ours in T seconds of fit, and of NeMo's model after T seconds "
        f"of its fit (same scorer). Results: {path}"
    )
    if failed and not args.no_assert:
        print("bench: below goal: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
