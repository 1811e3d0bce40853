"""CPU precision side by side: `ncbi-retrain train` in fp32 and in bf16-mixed, same data, config and seed.

    .venv-train/bin/python bench/precision.py [--data DATA] [--tasks ner classifier] [--epochs 1]

Issue 12 item 3: bf16 is kept for the cpu profile only where it is faster at equal dev F1 (dev only:
test is never looked at here). Each row is one fresh `train --no-mlflow` process; the table gives
samples/s over `trainer.fit` (dev scoring included), samples per CPU second (less sensitive to load)
and the best dev gate metric. Results: bench/results/precision-<time>.json (with the machine's load).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import ROOT, load, ours, prepare_data  # the same runner and data

PRECISIONS = ("32", "bf16-mixed")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="an imported data directory (default: import into scratch)")
    ap.add_argument("--tasks", nargs="+", default=["ner", "classifier"], choices=["ner", "classifier"])
    ap.add_argument("--epochs", type=int, default=1, help="epochs of the cpu profile (full data)")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="ncbi-bench-") as tmp:
        scratch = Path(tmp)
        data = args.data or prepare_data(scratch)
        print(f"{'model':10s} {'precision':10s} {'samples/s':>9s} {'per cpu-s':>9s} {'fit (s)':>8s} "
              f"{'dev':>7s}  load", flush=True)  # fmt: skip
        for task in args.tasks:
            for precision in PRECISIONS:
                before = load()
                over = [f"trainer.max_epochs={args.epochs}", f"trainer.precision={precision}"]
                r = ours(task, data, "cpu", over, scratch)
                rows.append(
                    {"task": task, "precision": precision, "epochs": args.epochs, "load": before, **r}
                )
                print(
                    f"{task:10s} {precision:10s} {r['samples_per_s']:9.1f} {r['samples_per_cpu_s']:9.2f} "
                    f"{r['fit_seconds']:8.1f} {r['dev']:7.4f}  {before} -> {load()}",
                    flush=True,
                )
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"precision-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows}, indent=1) + "\n")
    print(f"Results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
