"""Inference with a trained NeMo model: class probabilities, B/I/O tags and disease spans.

NeMo's own helpers (`classifytext`, `add_predictions`, `_infer`) leave the model in train mode, use 3
dataloader workers and do not truncate; these run in eval mode, restore every module's previous mode
(so calling them between epochs does not change training), sort by length to pad less, and truncate.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from tasks.vocab import class_name


@contextlib.contextmanager
def eval_mode(model) -> Iterator[None]:
    """Eval mode and no grad inside; each module's own train/eval flag restored after."""
    import torch

    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        for m, mode in modes.items():
            m.train(mode)


def _quiet():
    from nemo.utils import logging

    return logging.temp_verbosity(logging.ERROR)


def _by_length(texts: Sequence[str], batch_size: int) -> Iterator[list[int]]:
    order = sorted(range(len(texts)), key=lambda i: len(texts[i].split()))
    for k in range(0, len(order), batch_size):
        yield order[k : k + batch_size]


def classify(model, texts: Sequence[str], batch_size: int = 32) -> list[list[float]]:
    """Class probabilities (softmax) per text, truncated to the model's `dataset.max_seq_length`."""
    import torch
    from nemo.collections.nlp.data.text_classification import TextClassificationDataset

    max_len = int(model._cfg.dataset.max_seq_length)
    device = next(model.parameters()).device
    probs: list[list[float]] = [[] for _ in texts]
    with eval_mode(model), _quiet():
        for idx in _by_length(texts, batch_size):
            ds = TextClassificationDataset(
                tokenizer=model.tokenizer, queries=[texts[i] for i in idx], max_seq_length=max_len
            )
            input_ids, segment_ids, input_mask, _ = ds.collate_fn([ds[j] for j in range(len(ds))])[:4]
            logits = model.forward(
                input_ids=input_ids.to(device),
                token_type_ids=segment_ids.to(device),
                attention_mask=input_mask.to(device),
            )
            for i, row in zip(idx, torch.softmax(logits.float(), dim=-1).tolist(), strict=True):
                probs[i] = row
    return probs


def repair_iob2(tags: Sequence[str]) -> list[str]:
    """Valid IOB2 from a tagger's argmax: an I that starts a run (after O, or first) becomes B.

    NeMo's tagger has no transition constraints and emits such I's (129-297 on test in the baseline).
    Scoring stays strict IOB2 everywhere; this is the decoder's choice of output, made once, here.
    """
    return ["B" if t == "I" and (i == 0 or tags[i - 1] == "O") else t for i, t in enumerate(tags)]


def tag(
    model, sentences: Sequence[str], batch_size: int = 64, max_seq_length: int = 512, repair: bool = True
) -> list[list[str]]:
    """One B/I/O tag per whitespace token (valid IOB2 unless `repair=False`). Sentences longer than
    `max_seq_length` subword tokens keep their last tokens (NeMo's truncation); the dropped leading
    words are tagged O."""
    import torch
    from nemo.collections.nlp.data.token_classification.token_classification_dataset import get_features

    ids_to_labels = {int(v): str(k) for k, v in model._cfg.label_ids.items()}
    device = next(model.parameters()).device
    out: list[list[str]] = [[] for _ in sentences]
    with eval_mode(model), _quiet():
        for idx in _by_length(sentences, batch_size):
            queries = [sentences[i] for i in idx]
            input_ids, segment_ids, input_mask, subtokens_mask, _, _ = get_features(
                queries, model.tokenizer, max_seq_length=max_seq_length
            )
            logits = model.forward(
                input_ids=torch.tensor(input_ids, device=device),
                token_type_ids=torch.tensor(segment_ids, device=device),
                attention_mask=torch.tensor(input_mask, device=device),
            )
            preds = logits.argmax(dim=-1).tolist()
            for row, i, query in zip(range(len(idx)), idx, queries, strict=True):
                words = query.split()
                tags = [ids_to_labels[p] for p, m in zip(preds[row], subtokens_mask[row], strict=True) if m]
                tags = ["O"] * (len(words) - len(tags)) + tags
                out[i] = repair_iob2(tags) if repair else tags
    return out


def spans(sentence: str, tags: Sequence[str]) -> list[str]:
    """Surface strings of the strict-IOB2 entities of a tagged sentence."""
    from tasks.metrics import entity_spans

    words = sentence.split()
    return [" ".join(words[s:e]) for s, e in sorted(entity_spans(tags))]


def load(ref: str, task: str | None = None):
    """A NeMo model from a .nemo path or an MLflow `models:/` / `runs:/` URI (a pyfunc wrapping a .nemo)."""
    from tasks.training.artifact import restore_nemo

    return restore_nemo(resolve_nemo(ref), task)


def resolve_nemo(ref: str) -> Path:
    """A local .nemo path for a path or MLflow URI (downloads the pyfunc's artifacts).

    An unknown model, version or alias is a UsageError (exit 2); MLflow down a ServiceError (exit 3) within
    seconds (bounded retries, as the registry's)."""
    from tasks.errors import ServiceError, UsageError

    if "://" not in ref and ":/" not in ref:
        return Path(ref)
    from tasks.registry.service import bound_http_retries, mlflow_call

    bound_http_retries()
    import mlflow
    from tasks.settings import get_settings

    uri = get_settings().tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)  # models:/ resolves through the registry URI: the same store, as client()
    try:
        with mlflow_call(f"download the model {ref}"):
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=ref))
    except OSError as exc:
        raise ServiceError(f"MLflow could not download {ref}: {exc}") from exc
    found = sorted(local.rglob("*.nemo"))
    if not found:
        raise UsageError(f"{ref} holds no .nemo artifact (not logged by `ncbi-retrain train`)")
    return found[0]


def predict_texts(model, task: str, texts: Sequence[str]) -> list[dict]:
    """Human/JSON-friendly predictions: classifier {label, name, probabilities}; NER {tags, entities}."""
    if task == "classifier":
        rows = []
        for p in classify(model, texts):
            label = max(range(len(p)), key=p.__getitem__)
            rows.append({"label": label, "name": class_name(label), "probabilities": p})
        return rows
    sentences = [" ".join(t.split()) for t in texts]
    return [
        {"tags": t, "entities": spans(s, t)} for s, t in zip(sentences, tag(model, sentences), strict=True)
    ]
