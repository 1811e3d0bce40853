"""Self-contained `.nemo` files: save with the encoder's config and tokenizer packaged, restore anywhere.

NeMo stores `language_model.pretrained_model_name` (for a local encoder, an absolute directory) and calls
`AutoModel.from_pretrained` on it when restoring, so a plain `.nemo` breaks once that directory is gone.
We append the encoder's config + tokenizer files (no weights: those are in the state dict) under
`ncbi_encoder/`, and on restore build a stub encoder directory from them (random weights, overwritten by
the state dict) and point the config at it with `override_config_path`.
"""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path

import yaml

from tasks.errors import UsageError

PACKAGED = "ncbi_encoder"
ENCODER_FILES = (
    "config.json",
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
TASK_OF_CLASS = {"TextClassificationModel": "classifier", "TokenClassificationModel": "ner"}


def save_nemo(model, path: Path, encoder_dir: str) -> Path:
    """`model.save_to(path)`, then append the encoder's config and tokenizer files to the tar."""
    from transformers import AutoConfig, AutoTokenizer

    path.parent.mkdir(parents=True, exist_ok=True)
    model.save_to(str(path))
    with tempfile.TemporaryDirectory() as tmp:
        # Re-save through transformers: works for a local dir and for a hub name found in the HF cache.
        AutoConfig.from_pretrained(encoder_dir).save_pretrained(tmp)
        AutoTokenizer.from_pretrained(encoder_dir).save_pretrained(tmp)
        with tarfile.open(path, "a:") as tar:
            for name in ENCODER_FILES:
                if (Path(tmp) / name).is_file():
                    tar.add(Path(tmp) / name, arcname=f"{PACKAGED}/{name}")
    return path


def read_config(path: Path) -> dict:
    """The model_config.yaml inside a .nemo."""
    try:
        with tarfile.open(path, "r:") as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("model_config.yaml"))
            return yaml.safe_load(tar.extractfile(member).read())
    except (tarfile.TarError, StopIteration, OSError) as exc:
        raise UsageError(f"{path}: not a .nemo file written by `ncbi-retrain train`") from exc


def task_of(path: Path) -> str:
    target = str(read_config(path).get("target", ""))
    for cls, task in TASK_OF_CLASS.items():
        if target.endswith(cls):
            return task
    raise UsageError(f"{path}: field target {target!r} is neither a text nor a token classification model")


def restore_nemo(path: Path, task: str | None = None):
    """Restore a .nemo written by `save_nemo` on CPU; the encoder's source directory is not needed."""
    import torch
    from omegaconf import OmegaConf
    from transformers import AutoConfig, AutoModel

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"model file {path} not found")
    found = task_of(path)
    if task and found != task:
        raise UsageError(f"{path} is a {found} model, not a {task} model")
    cfg = read_config(path)
    with tempfile.TemporaryDirectory() as tmp:
        stub = Path(tmp) / "encoder"
        stub.mkdir()
        with tarfile.open(path, "r:") as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(f"{PACKAGED}/")]
            if not members:
                raise UsageError(f"{path}: no packaged encoder (not written by `ncbi-retrain train`)")
            for m in members:
                (stub / Path(m.name).name).write_bytes(tar.extractfile(m).read())
        # Random weights of the right shapes; the .nemo state dict replaces all of them.
        AutoModel.from_config(AutoConfig.from_pretrained(stub)).save_pretrained(stub)
        cfg["language_model"]["pretrained_model_name"] = str(stub)
        cfg["tokenizer"]["tokenizer_name"] = str(stub)
        override = OmegaConf.create(cfg)
        cls = _model_class(found)
        from nemo.utils import logging as nemo_logging

        with nemo_logging.temp_verbosity(nemo_logging.ERROR):  # restoring re-runs setup: many warnings
            model = cls.restore_from(
                str(path), override_config_path=override, map_location=torch.device("cpu")
            )
    from tasks.training.encoders import use_attention, use_cls_only_last_layer

    # As trained. Models saved before these keys existed run as they always did: eager, the whole layer.
    use_attention(model, cfg.get("attention") or "eager")
    if found == "classifier":
        use_cls_only_last_layer(model, cfg.get("cls_only_last_layer") or "never")
    model.eval()
    return model


def _model_class(task: str):
    from nemo.collections.nlp.models import TextClassificationModel, TokenClassificationModel

    return TextClassificationModel if task == "classifier" else TokenClassificationModel
