"""CLI commands: `train`, `evaluate`, `predict` (training env: NeMo, torch, MLflow are imported inside)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path

import typer

from tasks.vocab import Model, Profile

_JSON = typer.Option(False, "--json", help="Print one JSON object instead of the human summary.")
_VERBOSE = typer.Option(False, "--verbose", "-v", help="Keep NeMo's and Lightning's INFO logs.")


def _setup_logging(verbose: bool) -> None:
    """Our progress lines at INFO on stderr (through rich on a terminal, so they print above the progress
    bar); NeMo / Lightning quiet unless --verbose."""
    for key, value in {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }.items():
        os.environ.setdefault(key, value)
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        from tasks.training.progress import console

        handler = RichHandler(console=console(sys.stderr), show_path=False, markup=False)
        logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[handler])
    else:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    if not verbose:
        with contextlib.suppress(ImportError):  # Lightning sets its loggers' levels on import: ours after
            import lightning.pytorch  # noqa: F401

        for name in (
            "lightning",
            "lightning.pytorch",
            "lightning.fabric",
            "pytorch_lightning",
            "nemo_logger",
            "transformers",
        ):
            logging.getLogger(name).setLevel(logging.WARNING)
        import warnings

        warnings.filterwarnings("ignore")
        try:
            from nemo.utils import logging as nemo_logging

            nemo_logging.set_verbosity(nemo_logging.WARNING)
        except ImportError:
            pass


def _print_json(line: str) -> None:
    """The `--json` object: the last stdout line (the Bash and Docker operators' XCom), and also the file
    named by NCBI_RETRAIN_RESULT_FILE when set (in a pod: the file KubernetesPodOperator's sidecar reads)."""
    from tasks.pipeline.jobs import RESULT_FILE_ENV

    if path := os.environ.get(RESULT_FILE_ENV):
        from tasks.files import atomic_write_text

        atomic_write_text(Path(path), line + "\n")
    typer.echo(line)


def train(
    task: Model = typer.Argument(..., help="classifier (3-class abstracts) or ner (disease B/I/O tagger)."),
    data: Path = typer.Option(
        ..., "--data", help="Data directory with tc3/ and ner3/ (output of `data import`)."
    ),
    out: Path = typer.Option(
        ..., "--out", help="New (or empty) directory for model.nemo, metrics.json, logs."
    ),
    profile: Profile = typer.Option(
        Profile.cpu, "--profile", help="tiny (tests), cpu (MiniLM-L6), gpu (bf16)."
    ),
    overrides: list[str] = typer.Argument(None, help="Dotted config overrides, e.g. model.optim.lr=5e-5."),
    data_version: str = typer.Option(None, "--data-version", help="Tag value (default: data.dvc md5)."),
    mlflow: bool = typer.Option(True, "--mlflow/--no-mlflow", help="Log the run to MLflow (settings' URI)."),
    checkpoints: Path = typer.Option(
        None,
        "--checkpoints",
        help="Folder for one checkpoint per epoch, outside OUT: a rerun with the same folder resumes from "
        "the newest complete one. Also holds progress.json. Emptied when the run succeeds.",
    ),
    as_json: bool = _JSON,
    verbose: bool = _VERBOSE,
) -> None:
    """Fine-tune NeMo's model on DATA's train split, score dev after every epoch, keep the best epoch,
    score test once, save, log to MLflow.

    Configs are YAML in NeMo's shape (tasks/training/configs), overridden like NeMo's tutorial:

      ncbi-retrain train ner --data data --out runs/ner1 trainer.max_epochs=3 model.optim.lr=1e-4

    OUT receives model.nemo, metrics.json (test split), predictions_test.*, config.yaml, exp/ (TensorBoard),
    dev_history.json. On a terminal a progress bar shows stage, epoch, steps, ETA and the last dev score;
    otherwise (CI, Airflow) plain log lines. With --checkpoints DIR a crashed run resumes when rerun:

      ncbi-retrain train ner --data data --out runs/ner-try2 --checkpoints runs/ner-checkpoints
    """
    _setup_logging(verbose)
    from tasks.training.train import result_line
    from tasks.training.train import train as run_train

    result = run_train(
        task.value,
        data,
        out,
        profile.value,
        overrides or [],
        data_version,
        use_mlflow=mlflow,
        checkpoints=checkpoints,
    )
    if as_json:
        _print_json(result_line(result))
    else:
        metrics = " ".join(f"{k}={v:.4f}" for k, v in result["metrics"].items())
        resumed = f", resumed after epoch {r}" if (r := result.get("resumed_from_epoch")) else ""
        typer.echo(
            f"trained {task.value} ({profile.value}) in {result['fit_seconds']}s, best dev epoch "
            f"{result['best_epoch']} of {result['epochs']}{resumed}: {metrics}"
        )
        typer.echo(f"model: {result['artifacts']['nemo']}  mlflow: {result['model_uri'] or 'off'}")


def evaluate(
    task: Model = typer.Argument(..., help="classifier or ner."),
    model: str = typer.Option(..., "--model", help="A .nemo path or an MLflow models:/ or runs:/ URI."),
    data: Path = typer.Option(..., "--data", help="Data directory with tc3/ and ner3/."),
    out: Path = typer.Option(..., "--out", help="metrics.json to write (docs/architecture.md contract)."),
    split: str = typer.Option("test", "--split", help="train, dev or test."),
    data_version: str = typer.Option(
        None, "--data-version", help="Recorded in metrics.json (default: data.dvc)."
    ),
    as_json: bool = _JSON,
    verbose: bool = _VERBOSE,
) -> None:
    """Score a model on a split: classifier accuracy / macro-F1 / per class / confusion matrix; NER strict
    IOB2 entity P/R/F1 (token-level for reference); per-item outcomes for the gate's bootstrap."""
    from tasks.errors import UsageError

    if split not in ("train", "dev", "test"):
        raise UsageError(f"--split {split!r} is not one of train, dev, test")
    _setup_logging(verbose)
    from tasks.training.evaluate import GATE_METRIC
    from tasks.training.evaluate import evaluate as run_evaluate

    doc = run_evaluate(task.value, model, data, out, split, data_version)
    gate = GATE_METRIC[task.value]
    if as_json:
        _print_json(json.dumps({"metrics_path": str(out), "gate_metric": gate, gate: doc["metrics"][gate]}))
    else:
        typer.echo(
            f"{task.value} {split}: {gate}={doc['metrics'][gate]:.4f} ({len(doc['items'])} items) -> {out}"
        )


def predict(
    task: Model = typer.Argument(..., help="classifier or ner."),
    texts: list[str] = typer.Argument(..., help="Texts to classify, or sentences to tag."),
    model: str = typer.Option(..., "--model", help="A .nemo path or an MLflow models:/ or runs:/ URI."),
    one_abstract: bool = typer.Option(
        False,
        "--one-abstract",
        help="NER: the sentences are one abstract's, so an abbreviation defined in one applies to all.",
    ),
    as_json: bool = _JSON,
    verbose: bool = _VERBOSE,
) -> None:
    """Classify abstracts (class + probabilities) or tag sentences (disease spans).

    NER resolves abbreviations after tagging: a short form defined in a sentence ("Stevens-Johnson
    syndrome (SJS)") is tagged as its long form is wherever it appears in that sentence, or in all the
    sentences given with --one-abstract (tasks/training/abbreviations.py). Example:

      ncbi-retrain predict ner --model m.nemo --one-abstract "Stevens-Johnson syndrome ( SJS ) ." "SJS ."
    """
    _setup_logging(verbose)
    from tasks.training.predict import load, predict_texts

    documents = [0] * len(texts) if one_abstract else None  # None: each sentence stands alone
    rows = predict_texts(load(model, task.value), task.value, texts, documents)
    if as_json:
        _print_json(json.dumps({"predictions": rows}))
        return
    for text, row in zip(texts, rows, strict=True):
        if task is Model.classifier:
            probs = " ".join(f"{p:.3f}" for p in row["probabilities"])
            typer.echo(f"{row['label']} {row['name']} [{probs}]\t{text[:80]}")
        else:
            typer.echo(f"{json.dumps(row['entities'])}\t{text[:80]}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("train")(train)
    app.command("evaluate")(evaluate)
    app.command("predict")(predict)
