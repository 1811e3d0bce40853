"""Train NeMo's TextClassificationModel (`classifier`) or TokenClassificationModel (`ner`) as NeMo's example
scripts do (`text_classification_with_bert.py`, `token_classification_train.py`), reproducibly and offline.

Data: `DATA/tc3/{train,dev,test}.tsv` (`text<TAB>label`, labels 0 cancer / 1 neurological / 2 other) or
`DATA/ner3/{text,labels}_{train,dev,test}.txt` (one sentence per line, one B/I/O tag per token). NeMo
writes label maps and caches beside its inputs, so it reads a scratch copy, never DATA itself.

Config: `configs/<model>.yaml` (NeMo's trainer / model / exp_manager sections), then
`configs/profiles/<profile>.yaml`, then dotted overrides as in the tutorial:
`model.optim.lr=5e-5 trainer.max_epochs=3 model.dataset.max_seq_length=64`.

Training batches hold items of similar length, each padded to its longest (tasks/training/batching.py).
After every epoch the dev split is scored with the gate metric (strict entity F1 / macro-F1; encoded
once, scored in length-sorted batches like test and `predict`, in the training precision: bf16
autocast under `bf16-mixed`); NeMo's own validation loop does not run. Test is scored in fp32, as
`evaluate` scores a champion. The weights of the best dev epoch (ties: the later) are the ones saved,
scored on test (once, at the end) and logged, so a longer schedule cannot make the model worse.
With NeMo's `exp_manager.ema.enable` (off in every profile: RESULTS.md) all of that is the moving average of
the weights, not the raw weights.

Outputs in OUT: `model.nemo` (self-contained: restores without the encoder's directory),
`metrics.json` (test split, docs/architecture.md), `predictions_test.*`, `config.yaml` (resolved),
`exp/` (TensorBoard), `dev_history.json` (per epoch: train loss, dev gate metric, seconds of training
and of dev scoring; the best epoch; the job's stage timings) and two PNGs.
Everything is built in a hidden sibling folder and renamed into OUT at the end: a failed run leaves no OUT.

Crash safety (`checkpoints=DIR`, the CLI's `--checkpoints`): a checkpoint after every epoch in DIR, which
outlives a failed try; the next try with the same DIR resumes from the newest complete one and logs
"resuming from epoch K of N (checkpoint ...)"; history and best epoch carry over
(tasks/training/checkpoints.py). Progress: a bar on a terminal, log lines otherwise, `DIR/progress.json`.

Load it again with `tasks.training.predict.load(PATH_OR_URI)`, or through MLflow:
`mlflow.pyfunc.load_model(model_uri).predict(["text ..."])`.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.utilities import GradClipAlgorithmType
from omegaconf import DictConfig, OmegaConf, open_dict

from tasks.errors import ServiceError, UsageError
from tasks.training.config import flatten, resolve_config
from tasks.training.data import Split, read_all, write_scratch
from tasks.training.evaluate import GATE_METRIC, behaviour, metrics_document, score, write_json
from tasks.training.progress import PROGRESS_FILE, Reporter
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


class EpochMonitor(Callback):
    """Progress per step; after each epoch the dev gate metric, the best epoch's weights and the history
    (MLflow curves too). Its state goes into every checkpoint, so a resumed run continues the same
    history and still knows its best epoch (and that epoch's weights when they are not the last)."""

    def __init__(self, task: str, dev: Split, reporter: Reporter, use_mlflow: bool):
        self.task, self.dev, self.reporter, self.use_mlflow = task, dev, reporter, use_mlflow
        self.gate = GATE_METRIC[task]
        self.history: list[dict[str, float]] = []
        self.best_epoch: int | None = None
        self.best_value = float("-inf")
        self._best_state: dict[str, Any] | None = None  # None: the best epoch is the model's current state
        self._snapshot_on_start = False
        self._averaged = False  # dev was scored on NeMo's EMA weights (exp_manager.ema.enable)
        self.samples = 0  # training items seen by this process (a resumed run counts its own)
        self.restored = 0  # epochs restored from a checkpoint
        self._encoded = None
        self._losses: list[float] = []

    # --------------------------------------------------------- Lightning hooks
    def encode_dev(self, model) -> None:
        """Tokenise dev once for the whole run (before `fit`: it is preparation, not training)."""
        from tasks.training.predict import encode

        self._encoded = encode(model, self.task, self.dev.texts)

    def on_train_start(self, trainer, pl_module):
        if self._snapshot_on_start:  # resumed from a checkpoint of the best epoch: its weights are loaded
            self._best_state = _copy_state(pl_module)
            self._snapshot_on_start = False
        if self._encoded is None:
            self.encode_dev(pl_module)
        if self.use_mlflow and self.history:  # a resumed run's curve starts with the restored epochs
            import mlflow

            for row in self.history:
                mlflow.log_metrics(_curve(row), step=int(row["epoch"]))
        self.reporter.start_training(
            trainer.max_epochs,
            int(trainer.estimated_stepping_batches),
            trainer.global_step,
            self.restored or None,
        )

    def on_train_epoch_start(self, trainer, pl_module):
        self._t_epoch, self._cpu_epoch = time.monotonic(), time.process_time()
        self._losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self._losses.append(float(loss))
        self.samples += int(batch[0].shape[0])
        self.reporter.step(trainer.current_epoch + 1, trainer.global_step, self._losses[-1])

    def on_train_epoch_end(self, trainer, pl_module):
        from tasks.training.evaluate import gate_score

        epoch = trainer.current_epoch + 1
        seconds, cpu = time.monotonic() - self._t_epoch, time.process_time() - self._cpu_epoch
        t0, cpu0 = time.monotonic(), time.process_time()
        with _ema_weights(trainer) as averaged:  # exp_manager.ema: dev scores (and keeps) the average
            with _training_precision(trainer, pl_module):
                value = gate_score(pl_module, self.task, self.dev, self._encoded)
            dev_seconds, dev_cpu = time.monotonic() - t0, time.process_time() - cpu0  # not the copy below
            # Ties go to the later epoch: the schedule's end is the default model, and an earlier epoch is
            # kept only when dev says it is strictly better (a coarse dev metric often ties across epochs).
            if value >= self.best_value:
                self.best_epoch, self.best_value = epoch, value
                own = epoch == trainer.max_epochs and not averaged  # the weights the model keeps after fit
                self._best_state = None if own else _copy_state(pl_module)
        self._averaged = averaged
        row = {
            "epoch": epoch,
            "train_loss": sum(self._losses) / max(len(self._losses), 1),
            f"val_{self.gate}": value,
            "train_seconds": round(seconds, 2),
            "dev_seconds": round(dev_seconds, 3),
            # CPU seconds (all threads): the same split of the work, much less disturbed by a busy machine
            "train_cpu_seconds": round(cpu, 2),
            "dev_cpu_seconds": round(dev_cpu, 3),
        }
        self.history.append(row)
        self.reporter.epoch_end(
            epoch, value, self.best_epoch, self.best_value, row["train_loss"], seconds, dev_seconds
        )
        if self.use_mlflow:
            import mlflow

            mlflow.log_metrics(_curve(row), step=epoch)

    # --------------------------------------------------------- checkpoint state
    def state_dict(self) -> dict[str, Any]:
        last = self.history[-1]["epoch"] if self.history else 0
        return {
            "history": self.history,
            "best_epoch": self.best_epoch,
            "best_value": self.best_value,
            # the best epoch's weights, unless they are the checkpoint's own (then they cost nothing);
            # under EMA the checkpoint's model holds the raw weights, so the average is always kept
            "best_state": None if self.best_epoch == last and not self._averaged else self._best_state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state["history"])
        self.restored = len(self.history)
        self.best_epoch, self.best_value = state["best_epoch"], float(state["best_value"])
        self._best_state = state["best_state"]
        self._snapshot_on_start = self._best_state is None and self.best_epoch is not None

    # --------------------------------------------------------- results
    def best_weights(self, pl_module) -> dict[str, Any]:
        """The best dev epoch's state dict (the current weights when the best epoch is the last)."""
        return self._best_state if self._best_state is not None else pl_module.state_dict()

    def summary(self, fit_seconds: float, fit_cpu_seconds: float) -> dict[str, Any]:
        mine = self.history[self.restored :]
        train_s, dev_s = (sum(r[k] for r in mine) for k in ("train_seconds", "dev_seconds"))
        train_cpu, dev_cpu = (sum(r[k] for r in mine) for k in ("train_cpu_seconds", "dev_cpu_seconds"))
        return {
            "metric": self.gate,
            "best_epoch": self.best_epoch,
            f"best_val_{self.gate}": self.best_value if self.best_epoch else None,
            "history": self.history,
            "resumed_from_epoch": self.restored or None,
            "fit_seconds": round(fit_seconds, 2),
            "fit_cpu_seconds": round(fit_cpu_seconds, 2),  # all threads: the work, whatever the load
            "train_samples_per_s": round(self.samples / max(fit_seconds, 1e-9), 2),
            "samples": self.samples,
            "dev_scoring_fraction": round(dev_s / train_s, 4) if train_s else None,
            "dev_scoring_cpu_fraction": round(dev_cpu / train_cpu, 4) if train_cpu else None,
        }


@contextlib.contextmanager
def _ema_weights(trainer):
    """Inside, the model holds NeMo's exponential moving average of its weights when `exp_manager.ema.enable`
    is on (NeMo's EMA callback keeps it in the EMAOptimizer it wraps around the optimizer; it swaps it in
    only for NeMo's validation and test loops, which `train` does not run); yields whether it did."""
    from nemo.collections.common.callbacks.ema import EMAOptimizer

    wrapped = [o for o in trainer.optimizers if isinstance(o, EMAOptimizer)]
    with contextlib.ExitStack() as stack:
        for optimizer in wrapped:
            stack.enter_context(optimizer.swap_ema_weights())
        yield bool(wrapped)


def _training_precision(trainer, module):
    """Dev is scored in the precision the model trains in (bf16 autocast under `bf16-mixed`: on this
    CPU it makes the dev pass several times cheaper); test, `evaluate` and `predict` score in fp32."""
    import torch

    precision = str(trainer.precision)
    if precision.startswith("bf16"):
        return torch.autocast(device_type=module.device.type, dtype=torch.bfloat16)
    if precision.startswith("16"):
        return torch.autocast(device_type=module.device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def cpu_precision(cfg: DictConfig, bf16_supported: bool | None = None) -> str | None:
    """The cpu profile trains in bf16 autocast (AVX-512 BF16 makes it 1.2-1.7x faster here). A CPU without
    native bf16 emulates it, slower than fp32: there the run falls back to fp32 and says so. Returns the
    reason when it fell back."""
    precision = str(cfg.trainer.precision)
    if str(cfg.trainer.accelerator) != "cpu" or not precision.startswith("bf16"):
        return None
    if bf16_supported is None:
        import torch

        bf16_supported = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())  # torch's own CPU check
    if bf16_supported:
        return None
    cfg.trainer.precision = "32"
    return f"this CPU has no native bf16 (AVX-512 BF16 or AMX): trainer.precision {precision} -> 32"


class BF16MixedClipping(MixedPrecision):
    """Lightning's `bf16-mixed` precision plugin, letting a fused optimizer clip gradients.

    Lightning refuses gradient clipping with any optimizer that unscales gradients itself (fused AdamW),
    a rule meant for `16-mixed`'s GradScaler; `bf16-mixed` has no scaler, so there is nothing to unscale
    and clipping is exact (Lightning-AI/pytorch-lightning#21435, open). Everything else is Lightning's."""

    def __init__(self, device: str) -> None:
        super().__init__("bf16-mixed", device)

    def clip_gradients(self, optimizer, clip_val=0.0, gradient_clip_algorithm=GradClipAlgorithmType.NORM):
        if self.scaler is not None:  # never under bf16: a scaler keeps Lightning's rule
            return super().clip_gradients(optimizer, clip_val, gradient_clip_algorithm)
        return Precision.clip_gradients(self, optimizer, clip_val, gradient_clip_algorithm)


def _copy_state(module) -> dict[str, Any]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def _curve(row: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in row.items() if k in ("train_loss",) or k.startswith("val_")}


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


def build_model(
    task: str,
    cfg_dict: dict[str, Any],
    callbacks=(),
    enable_tensorboard: bool = True,
    checkpointing: bool = False,
):
    """Trainer + exp_manager + NeMo model from a filled config dict, as NeMo's example scripts do; the
    training loader length-bucketed (`model.train_ds.length_buckets`). NeMo gets no dev / test loaders:
    `train` scores those splits itself, so NeMo's validation and test loops never run."""
    import lightning.pytorch as pl
    from nemo.utils.exp_manager import exp_manager

    from tasks.training.artifact import _model_class
    from tasks.training.batching import use_length_buckets
    from tasks.training.encoders import use_attention, use_cls_only_last_layer, use_length_groups

    cfg = OmegaConf.create(cfg_dict)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    trainer_args = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_args["enable_checkpointing"] = checkpointing
    trainer = pl.Trainer(**trainer_args, callbacks=list(callbacks), enable_progress_bar=False)
    chosen = trainer.strategy.precision_plugin
    if isinstance(chosen, MixedPrecision) and chosen.precision == "bf16-mixed":
        # the device Lightning resolved (accelerator auto included); this plugin can clip fused AdamW
        trainer.strategy.precision_plugin = BF16MixedClipping(device=chosen.device)
    if enable_tensorboard:
        exp_manager(trainer, cfg.get("exp_manager"))
    model_cfg = copy.deepcopy(cfg.model)
    with open_dict(model_cfg):
        model_cfg.validation_ds = None
        model_cfg.test_ds = None
    model = _model_class(task)(cfg=model_cfg, trainer=trainer)
    use_attention(model, str(cfg.model.attention))
    # Stated, not inherited: Lightning keeps the eval mode transformers' from_pretrained left the encoder in.
    model.bert_model.train(bool(cfg.model.encoder_dropout))
    if task == Model.classifier:
        use_cls_only_last_layer(model, str(cfg.model.cls_only_last_layer))
    use_length_groups(model, int(cfg.model.train_ds.length_groups))  # after: wraps the encoder in place
    if cfg.model.train_ds.get("length_buckets", False):
        use_length_buckets(model, task, seed=int(cfg.seed), pool=int(cfg.model.train_ds.bucket_pool))
    return trainer, model, cfg


def train(
    task: str,
    data: Path,
    out: Path,
    profile: str = "cpu",
    overrides: list[str] | None = None,
    data_version: str | None = None,
    *,
    use_mlflow: bool = True,
    callbacks: tuple[Callback, ...] = (),
    checkpoints: Path | None = None,
    progress_bar: bool | None = None,
) -> dict[str, Any]:
    """Train, score the test split with the best dev epoch, save everything into `out`, log to MLflow;
    returns the --json document. `callbacks`: extra Lightning callbacks for the fit (bench/gpu_train.py
    measures throughput with one); `checkpoints`: a folder for per-epoch checkpoints (resumed from when it
    holds one of this config and data); `progress_bar`: None = a bar when stderr is a terminal."""
    from tasks.provenance import git_commit
    from tasks.training import checkpoints as ckpt
    from tasks.training.encoders import resolve_encoder
    from tasks.training.versions import resolve_data_version

    resolved = resolve_config(task, profile, overrides)
    cfg, fingerprint = resolved.config, resolved.fingerprint
    if fallback := cpu_precision(cfg):
        log.warning("%s", fallback)
    data = Path(data)
    splits = read_all(task, data)
    data_version = data_version or resolve_data_version(data)
    commit = git_commit()
    out = Path(out)
    ckpt_dir = Path(checkpoints).absolute() if checkpoints else None
    if ckpt_dir is not None and (ckpt_dir == out.absolute() or out.absolute() in ckpt_dir.parents):
        raise UsageError(
            f"--checkpoints {ckpt_dir} is inside --out {out}: checkpoints must outlive a failed try"
        )
    resume = ckpt.latest(ckpt_dir, fingerprint, data_version) if ckpt_dir else None
    stage = _prepare_out(out)
    if ckpt_dir is not None:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    reporter = Reporter(
        task,
        GATE_METRIC[task],
        file=ckpt_dir / PROGRESS_FILE if ckpt_dir else None,
        bar=progress_bar,
    )
    scratch = Path(tempfile.mkdtemp(prefix="ncbi-nemo-scratch-"))
    run = None
    try:
        reporter.stage("prepare", f"{len(splits['train'])} training items, profile {profile}")
        encoder = resolve_encoder(
            str(cfg.model.language_model.pretrained_model_name),
            scratch,
            texts=splits["train"].texts,
            seed=int(cfg.seed),
        )
        filled = _fill(cfg, task, write_scratch(task, splits, scratch / "data"), encoder, stage)
        run_id = first_run_id = None
        if use_mlflow:
            import mlflow

            _mlflow_experiment(task)
            run = mlflow.start_run(run_name=f"{task}-{profile}")
            run_id = first_run_id = run.info.run_id
            tags = {
                "data_version": data_version or "unknown",
                "git_commit": commit,
                "profile": profile,
                "task": task,
                "config_fingerprint": fingerprint,
                "image": os.environ.get("NCBI_RETRAIN_IMAGE", "local"),
                **({"dag_run_id": v} if (v := os.environ.get("NCBI_RETRAIN_DAG_RUN_ID")) else {}),
            }
            if resume is not None:  # this try's run continues the one(s) that wrote the checkpoint
                first_run_id = resume.meta.get("first_run_id") or resume.meta.get("run_id") or run_id
                tags |= {
                    "resumed_from_epoch": str(resume.epoch),
                    "resumed_from_run_id": str(resume.meta.get("run_id")),
                    "first_run_id": str(first_run_id),
                }
            mlflow.set_tags(tags)
            mlflow.log_params({k: str(v)[:500] for k, v in flatten(filled).items()})
        monitor = EpochMonitor(task, splits["dev"], reporter, use_mlflow)
        fit_callbacks: list[Callback] = [monitor, *callbacks]
        if ckpt_dir is not None:
            meta = {
                "fingerprint": fingerprint,
                "data_version": data_version,
                "run_id": run_id,
                "first_run_id": first_run_id,
            }
            fit_callbacks.append(ckpt.EpochCheckpoint(ckpt_dir, meta))
        trainer, model, ocfg = build_model(task, filled, fit_callbacks, checkpointing=ckpt_dir is not None)
        monitor.encode_dev(model)
        (stage / "config.yaml").write_text(OmegaConf.to_yaml(ocfg, resolve=True), encoding="utf-8")
        if resume is not None:
            log.info(
                "resuming from epoch %d of %d (checkpoint %s)", resume.epoch, trainer.max_epochs, resume.path
            )
        reporter.stage("train", f"{trainer.max_epochs} epochs")
        # During fit, the millions of objects torch, NeMo and Lightning built are out of the cyclic GC's
        # sight, so a full collection cannot stall a random step (~0.5 s on tiny runs); unfrozen after,
        # or this run's model and trainer could never be collected in a process that trains again.
        gc.collect()
        gc.freeze()
        t0, cpu0 = time.monotonic(), time.process_time()
        try:
            trainer.fit(model, ckpt_path=str(resume.path) if resume else None)
        finally:
            gc.unfreeze()
        fit_seconds = time.monotonic() - t0
        history = monitor.summary(fit_seconds, time.process_time() - cpu0)
        model.load_state_dict(monitor.best_weights(model))
        log.info(
            "best dev epoch %s of %d: %s %.4f",
            monitor.best_epoch,
            trainer.max_epochs,
            monitor.gate,
            monitor.best_value,
        )
        from tasks.training.artifact import save_nemo

        reporter.stage("save", f"weights of epoch {monitor.best_epoch}")
        nemo_path = save_nemo(model, stage / "model.nemo", encoder)
        reporter.stage("test", f"{len(splits['test'])} items, once")
        metrics, items, preds = score(model, task, splits["test"])
        doc = metrics_document(
            task, "test", str(out / "model.nemo"), data_version, metrics, items, behaviour(model, task)
        )
        flat = _flat_metrics(task, doc["metrics"])
        log.info("test %s: %s", task, " ".join(f"{k} {v:.4f}" for k, v in flat.items()))
        write_json(stage / "metrics.json", doc)
        pred_path = _write_predictions(task, splits["test"], preds, stage)
        pngs = _plots(task, metrics, stage)
        result: dict[str, Any] = {"run_id": None, "model_uri": None, "metrics": flat}
        if use_mlflow:
            reporter.stage("log", "metrics, artifacts, pyfunc model")
            write_json(stage / "dev_history.json", {**history, "timings": reporter.timings})
            result.update(_log_run(task, stage, nemo_path, pred_path, pngs, flat, history))
        reporter.finish(True)
        history["timings"] = reporter.timings
        write_json(stage / "dev_history.json", history)
        shutil.rmtree(scratch, ignore_errors=True)
        if out.exists():
            out.rmdir()
        os.replace(stage, out)
        if ckpt_dir is not None:
            ckpt.clear(ckpt_dir)  # the run is complete: its checkpoints are no longer a way back
        if run is not None:
            import mlflow

            mlflow.end_run("FINISHED")
    except BaseException as exc:
        reporter.finish(False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
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
            "epochs": history["history"][-1]["epoch"] if history["history"] else 0,
            "best_epoch": monitor.best_epoch,
            "resumed_from_epoch": history["resumed_from_epoch"],
            "fit_seconds": round(fit_seconds, 1),
            "train_samples_per_s": history["train_samples_per_s"],
            "dev_scoring_fraction": history["dev_scoring_fraction"],
            "timings": history["timings"],
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


def _log_run(task, stage, nemo_path, pred_path, pngs, flat, history) -> dict[str, Any]:
    """Log metrics and artifacts to the active run; a store that fails (full disk, server gone) is one
    sentence naming the file, and the caller marks the run FAILED (the registry refuses such runs)."""
    import mlflow
    from tasks.provenance import sha256_file
    from tasks.registry.service import mlflow_call
    from tasks.training.pyfunc import log_pyfunc

    run_id = mlflow.active_run().info.run_id
    gate = GATE_METRIC[task]
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
            mlflow.log_metrics(
                {
                    **flat,
                    "fit_seconds": history["fit_seconds"],
                    "best_epoch": float(history["best_epoch"] or 0),
                    f"best_val_{gate}": float(history[f"best_val_{gate}"] or 0.0),
                }
            )
            mlflow.set_tag("nemo_sha256", sha256_file(nemo_path))  # promote checks the registered .nemo
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
