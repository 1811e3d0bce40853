"""Train NeMo's TextClassificationModel (`classifier`) or TokenClassificationModel (`ner`) as NeMo's example
scripts do (`text_classification_with_bert.py`, `token_classification_train.py`), reproducibly and offline.

Data: `DATA/tc3/{train,dev,test}.tsv` (`text<TAB>label`, labels 0 cancer / 1 neurological / 2 other) or
`DATA/ner3/{text,labels}_{train,dev,test}.txt` (one sentence per line, one B/I/O tag per token). NeMo
writes label maps and caches beside its inputs, so it reads a scratch copy, never DATA itself.

Config: `configs/<model>.yaml` (NeMo's trainer / model / exp_manager sections), then
`configs/profiles/<profile>.yaml`, then dotted overrides as in the tutorial:
`model.optim.lr=5e-5 trainer.max_epochs=3 model.dataset.max_seq_length=64`.

Outputs in OUT: `model.nemo` (self-contained: restores without the encoder's directory),
`metrics.json` (test split, docs/architecture.md), `predictions_test.*`, `config.yaml` (resolved),
`exp/` (TensorBoard), `dev_history.json` (per-epoch train loss and dev gate metric) and two PNGs.
Everything is built in a hidden sibling folder and renamed into OUT at the end: a failed run leaves no OUT.

Load it again with `tasks.training.predict.load(PATH_OR_URI)`, or through MLflow:
`mlflow.pyfunc.load_model(model_uri).predict(["text ..."])`.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback
from omegaconf import DictConfig, OmegaConf

from tasks.errors import ServiceError, UsageError
from tasks.training.config import flatten, resolve_config
from tasks.training.data import read_all, write_scratch
from tasks.training.evaluate import GATE_METRIC, behaviour, metrics_document, score, write_json
from tasks.vocab import CLASS_NAMES, TAGS, Model

log = logging.getLogger("ncbi_retrain.train")


def _prepare_out(out: Path) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"output directory {out} already exists and is not empty")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    stage.chmod(0o755)
    return stage


def _fill(cfg: DictConfig, task: str, scratch: Path, encoder: str, stage: Path) -> dict[str, Any]:
    """Set what `train` owns (data paths, encoder, exp_manager folder) in a copy; a plain dict for NeMo."""
    cfg = copy.deepcopy(cfg)
    m = cfg.model
    if task == "classifier":
        for split, key in (("train", "train_ds"), ("dev", "validation_ds"), ("test", "test_ds")):
            m[key].file_path = str(scratch / f"{split}.tsv")
    else:
        m.dataset.data_dir = str(scratch)
    m.language_model.pretrained_model_name = encoder
    cfg.exp_manager.exp_dir = str(stage / "exp")
    if missing := sorted(OmegaConf.missing_keys(cfg)):
        raise UsageError(f"config value {missing[0]} is required (???): set it with {missing[0]}=VALUE")
    return OmegaConf.to_container(cfg, resolve=False)


def _mlflow_experiment(task: str):
    """Tracking URI from settings; a local store gets its parent dir and a local artifact root."""
    import mlflow
    from tasks.registry.service import bound_http_retries
    from tasks.settings import get_settings

    bound_http_retries()  # a server that is down fails in seconds, not after MLflow's ~4 minutes
    s = get_settings()
    uri = s.tracking_uri()
    local = s.is_local_store()
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    name = Model(task).registered_name
    try:
        exp = mlflow.get_experiment_by_name(name)
        if exp is None:
            root = s.path(s.mlflow_artifact_root) / name if local else None
            if root is not None:
                root.mkdir(parents=True, exist_ok=True)
            mlflow.create_experiment(name, artifact_location=root.resolve().as_uri() if root else None)
        mlflow.set_experiment(name)
    except Exception as exc:  # MlflowException, connection errors: the store is unusable
        raise ServiceError(f"MLflow tracking store {uri} is not usable: {str(exc).splitlines()[0]}") from exc


class _Progress(Callback):
    """Progress (epoch, step, ETA) in the log; per-epoch train loss and dev gate metric (MLflow too)."""

    def __init__(self, task: str, dev, every: int, use_mlflow: bool):
        self.task, self.dev, self.every, self.use_mlflow = task, dev, max(1, every), use_mlflow
        self.history: list[dict] = []
        self.samples = 0
        self.fit_seconds = 0.0
        self._losses: list[float] = []

    def on_train_start(self, trainer, pl_module):
        self.t0 = time.monotonic()
        self.total = int(trainer.estimated_stepping_batches)
        self.every = max(self.every, self.total // 40)  # about 40 progress lines per run

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self._losses.append(float(loss))
        self.samples += int(batch[0].shape[0])
        step = trainer.global_step
        if step % self.every == 0 or step == self.total:
            elapsed = time.monotonic() - self.t0
            eta = elapsed / max(step, 1) * (self.total - step)
            log.info(
                "epoch %d/%d step %d/%d loss %.4f elapsed %.0fs ETA %.0fs",
                trainer.current_epoch + 1,
                trainer.max_epochs,
                step,
                self.total,
                self._losses[-1],
                elapsed,
                eta,
            )

    def on_train_epoch_end(self, trainer, pl_module):
        self.fit_seconds = time.monotonic() - self.t0
        epoch = trainer.current_epoch + 1
        train_loss = sum(self._losses) / max(len(self._losses), 1)
        self._losses = []
        metrics, _, _ = score(pl_module, self.task, self.dev)
        gate = GATE_METRIC[self.task]
        row = {"epoch": epoch, "train_loss": train_loss, f"val_{gate}": metrics[gate]}
        if "val_loss" in trainer.callback_metrics:
            row["val_loss"] = float(trainer.callback_metrics["val_loss"])
        self.history.append(row)
        log.info(
            "epoch %d/%d done: train_loss %.4f dev %s %.4f (%.0fs)",
            epoch,
            trainer.max_epochs,
            train_loss,
            gate,
            metrics[gate],
            self.fit_seconds,
        )
        if self.use_mlflow:
            import mlflow

            mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)


def _plots(task: str, metrics: dict, stage: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if task == "classifier":
        names, cm, per_class = (
            list(CLASS_NAMES),
            metrics["confusion_matrix"],
            metrics["per_class"],
        )
        f1s = {names[int(k)]: v["f1"] for k, v in per_class.items()}
    else:  # token-level confusion for reference; the bars add the strict entity F1
        names = list(TAGS)
        cm, f1s = metrics["token_confusion_matrix"], dict(metrics["token_f1"])
        f1s["entity (strict)"] = metrics["entity_f1"]
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(cm, cmap="Blues")
    for i, row in enumerate(cm):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center")
    ax.set_xticks(range(len(names)), names, rotation=30)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(f"{task} test confusion matrix")
    fig.tight_layout()
    cm_path = stage / "confusion_matrix.png"
    fig.savefig(cm_path, dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.bar(list(f1s), list(f1s.values()), color="tab:blue")
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1")
    ax.set_title(f"{task} test F1 per class")
    for i, v in enumerate(f1s.values()):
        ax.text(i, v + 0.02, f"{v:.3f}", ha="center")
    fig.tight_layout()
    f1_path = stage / "per_class_f1.png"
    fig.savefig(f1_path, dpi=100)
    plt.close(fig)
    return [cm_path, f1_path]


def _write_predictions(task: str, split, preds, stage: Path) -> Path:
    if task == "classifier":
        path = stage / "predictions_test.tsv"
        rows = ["id\tgold\tpred\tp_cancer\tp_neurological\tp_other"]
        for i, g, p in zip(split.ids, split.labels, preds, strict=True):
            label = max(range(len(p)), key=p.__getitem__)
            rows.append(f"{i}\t{g}\t{label}\t" + "\t".join(f"{x:.6f}" for x in p))
    else:  # NeMo's labels format: one line of tags per sentence of text_test.txt
        path = stage / "predictions_test.txt"
        rows = [" ".join(t) for t in preds]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def build_model(task: str, cfg_dict: dict[str, Any], callbacks=(), enable_tensorboard: bool = True):
    """Trainer + exp_manager + NeMo model from a filled config dict, as NeMo's example scripts do."""
    import lightning.pytorch as pl
    from nemo.utils.exp_manager import exp_manager

    from tasks.training.artifact import _model_class

    cfg = OmegaConf.create(cfg_dict)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    trainer = pl.Trainer(
        **OmegaConf.to_container(cfg.trainer, resolve=True),
        callbacks=list(callbacks),
        enable_progress_bar=False,
    )
    if enable_tensorboard:
        exp_manager(trainer, cfg.get("exp_manager"))
    model = _model_class(task)(cfg=cfg.model, trainer=trainer)
    return trainer, model, cfg


def train(
    task: str,
    data: Path,
    out: Path,
    profile: str = "cpu",
    overrides: list[str] | None = None,
    data_version: str | None = None,
    use_mlflow: bool = True,
    callbacks: tuple[Callback, ...] = (),
) -> dict[str, Any]:
    """Train, score the test split, save everything into `out`, log to MLflow; returns the --json document.

    `callbacks`: extra Lightning callbacks for the fit (bench/gpu_train.py measures throughput with one).
    """
    from tasks.provenance import git_commit
    from tasks.training.encoders import resolve_encoder
    from tasks.training.versions import resolve_data_version

    resolved = resolve_config(task, profile, overrides)
    cfg, fingerprint = resolved.config, resolved.fingerprint
    data = Path(data)
    splits = read_all(task, data)
    data_version = data_version or resolve_data_version(data)
    commit = git_commit()
    out = Path(out)
    stage = _prepare_out(out)
    scratch = Path(tempfile.mkdtemp(prefix="ncbi-nemo-scratch-"))
    run = None
    try:
        encoder = resolve_encoder(
            str(cfg.model.language_model.pretrained_model_name),
            scratch,
            texts=splits["train"].texts,
            seed=int(cfg.seed),
        )
        filled = _fill(cfg, task, write_scratch(task, splits, scratch / "data"), encoder, stage)
        if use_mlflow:
            import mlflow

            _mlflow_experiment(task)
            run = mlflow.start_run(run_name=f"{task}-{profile}")
            mlflow.set_tags(
                {
                    "data_version": data_version or "unknown",
                    "git_commit": commit,
                    "profile": profile,
                    "task": task,
                    "config_fingerprint": fingerprint,
                    "image": os.environ.get("NCBI_RETRAIN_IMAGE", "local"),
                    **({"dag_run_id": v} if (v := os.environ.get("NCBI_RETRAIN_DAG_RUN_ID")) else {}),
                }
            )
            mlflow.log_params({k: str(v)[:500] for k, v in flatten(filled).items()})
        every = int(cfg.trainer.log_every_n_steps)
        progress = _Progress(task, splits["dev"], every, use_mlflow)
        trainer, model, ocfg = build_model(task, filled, callbacks=[progress, *callbacks])
        (stage / "config.yaml").write_text(OmegaConf.to_yaml(ocfg, resolve=True), encoding="utf-8")
        log.info(
            "training %s (%s profile) on %d examples, %d epochs",
            task,
            profile,
            len(splits["train"]),
            trainer.max_epochs,
        )
        t0 = time.monotonic()
        trainer.fit(model)
        fit_seconds = time.monotonic() - t0
        from tasks.training.artifact import save_nemo

        nemo_path = save_nemo(model, stage / "model.nemo", encoder)
        metrics, items, preds = score(model, task, splits["test"])
        doc = metrics_document(
            task, "test", str(out / "model.nemo"), data_version, metrics, items, behaviour(model, task)
        )
        flat = _flat_metrics(task, doc["metrics"])
        log.info("test %s: %s", task, " ".join(f"{k} {v:.4f}" for k, v in flat.items()))
        write_json(stage / "metrics.json", doc)
        pred_path = _write_predictions(task, splits["test"], preds, stage)
        write_json(
            stage / "dev_history.json",
            {
                "history": progress.history,
                "fit_seconds": fit_seconds,
                "train_samples_per_s": progress.samples / max(fit_seconds, 1e-9),
            },
        )
        pngs = _plots(task, metrics, stage)
        result: dict[str, Any] = {"run_id": None, "model_uri": None, "metrics": flat}
        if use_mlflow:
            result.update(_log_run(task, stage, nemo_path, pred_path, pngs, flat, fit_seconds))
        shutil.rmtree(scratch, ignore_errors=True)
        if out.exists():
            out.rmdir()
        os.replace(stage, out)
        if run is not None:
            import mlflow

            mlflow.end_run("FINISHED")
    except BaseException:
        if run is not None:
            import mlflow

            mlflow.end_run("FAILED")
        shutil.rmtree(stage, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    result.update(
        {
            "artifacts": {
                "nemo": str(out / "model.nemo"),
                "metrics": str(out / "metrics.json"),
                "predictions": str(out / pred_path.name),
                "config": str(out / "config.yaml"),
                "tensorboard": str(out / "exp"),
            },
            "data_version": data_version,
            "config_fingerprint": fingerprint,
            "git_commit": commit,
            "epochs": progress.history[-1]["epoch"] if progress.history else 0,
            "fit_seconds": round(fit_seconds, 1),
            "train_samples_per_s": round(progress.samples / max(fit_seconds, 1e-9), 2),
        }
    )
    return result


def _flat_metrics(task: str, metrics: dict) -> dict[str, float]:
    keys = (
        ("accuracy", "macro_f1")
        if task == "classifier"
        else ("entity_precision", "entity_recall", "entity_f1", "token_accuracy", "token_macro_f1")
    )
    flat = {f"test_{k}": float(metrics[k]) for k in keys}
    gate = GATE_METRIC[task]
    flat.update({f"test_{gate}_ci_{end}": float(metrics[f"{gate}_ci"][end]) for end in ("low", "high")})
    if task == "classifier":
        flat.update({f"test_f1_class_{k}": v["f1"] for k, v in metrics["per_class"].items()})
    return flat


def _log_run(task, stage, nemo_path, pred_path, pngs, flat, fit_seconds) -> dict[str, Any]:
    """Log metrics and artifacts to the active run; a store that fails (full disk, server gone) is one
    sentence naming the file, and the caller marks the run FAILED (the registry refuses such runs)."""
    import mlflow
    from tasks.registry.service import mlflow_call
    from tasks.training.pyfunc import log_pyfunc

    run_id = mlflow.active_run().info.run_id
    artifacts = [
        (stage / "metrics.json", None),  # top level: the registry hands it to the gate
        (nemo_path, None),
        (pred_path, None),
        (stage / "config.yaml", None),
        (stage / "dev_history.json", None),
        *((p, "plots") for p in pngs),
    ]
    current = "metrics"
    try:
        with mlflow_call(f"store the artifacts of run {run_id}"):
            mlflow.log_metrics({**flat, "fit_seconds": fit_seconds})
            for path, folder in artifacts:
                current = Path(path).name
                mlflow.log_artifact(str(path), artifact_path=folder)
            current = "the pyfunc model"
            info = log_pyfunc(task, nemo_path)
    except OSError as exc:
        raise ServiceError(
            f"MLflow artifact store {mlflow.get_artifact_uri()}: could not store {current} "
            f"({exc.strerror or exc}); run {run_id} is marked FAILED and cannot be registered"
        ) from exc
    return {"run_id": run_id, "model_uri": info.model_uri}


def result_line(result: dict[str, Any]) -> str:
    return json.dumps(result, sort_keys=False)
