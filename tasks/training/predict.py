"""Inference with a trained NeMo model: class probabilities, B/I/O tags and disease spans.

NeMo's own helpers (`classifytext`, `add_predictions`, `_infer`) leave the model in train mode, use 3
dataloader workers and do not truncate; these run in eval mode, restore every module's previous mode
(so calling them between epochs does not change training), batch by length as training does (each
batch padded to its longest text), and truncate. Texts are encoded once (`encode`) and scored as often
as needed (`run`): `train` scores the dev split after every epoch without tokenising it again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tasks.vocab import class_name

CLASSIFY_BATCH = 32  # abstracts per scoring batch (up to 256-512 tokens each)
TAG_BATCH = 64  # sentences per scoring batch


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


@dataclass
class Encoded:
    """Texts tokenised once for a model (NeMo's own feature code), scored as often as needed: `train`
    encodes the dev split once and scores it after every epoch."""

    task: str
    features: tuple  # classifier: NeMo TextClassificationDataset features; ner: get_features' lists
    lengths: list[int]  # subword tokens per text (with [CLS] / [SEP])
    words: list[int] = field(default_factory=list)  # ner: whitespace tokens per sentence

    def __len__(self) -> int:
        return len(self.lengths)


def encode(model, task: str, texts: Sequence[str], max_seq_length: int | None = None) -> Encoded:
    """Tokenise `texts` as NeMo does: classifier truncated to the model's `dataset.max_seq_length`; NER
    to `max_seq_length` (default 512) keeping the last tokens (NeMo's truncation)."""
    with _quiet():
        if task == "classifier":
            from nemo.collections.nlp.data.text_classification import TextClassificationDataset

            max_len = max_seq_length or int(model._cfg.dataset.max_seq_length)
            ds = TextClassificationDataset(
                tokenizer=model.tokenizer, queries=list(texts), max_seq_length=max_len
            )
            return Encoded(task, (ds,), [len(f[0]) for f in ds.features])
        from nemo.collections.nlp.data.token_classification.token_classification_dataset import get_features

        feats = get_features(list(texts), model.tokenizer, max_seq_length=max_seq_length or 512)
        return Encoded(task, feats, [int(sum(m)) for m in feats[2]], [len(t.split()) for t in texts])


def _batches(enc: Encoded, batch_size: int) -> list[list[int]]:
    """Length-sorted batches (the training loader's bucketing, without the shuffle)."""
    from torch.utils.data import SequentialSampler

    from tasks.training.batching import LengthBucketBatchSampler

    sampler = SequentialSampler(range(len(enc)))
    return LengthBucketBatchSampler(sampler, batch_size, False, enc.lengths, shuffle=False).batches()


def run(model, enc: Encoded, batch_size: int | None = None) -> list:
    """Predictions for encoded texts, each batch padded to its longest item: class probabilities
    (classifier) or one B/I/O tag per whitespace token, valid IOB2 (NER; decoded by the model's
    `model.decoding`: argmax, or constrained Viterbi, tasks/training/decoding.py)."""
    import torch

    device = next(model.parameters()).device
    out: list = [None] * len(enc)
    with eval_mode(model), _quiet():
        if enc.task == "classifier":
            (ds,) = enc.features
            for idx in _batches(enc, batch_size or CLASSIFY_BATCH):
                input_ids, segment_ids, input_mask, _ = ds.collate_fn([ds[j] for j in idx])[:4]
                logits = model.forward(
                    input_ids=input_ids.to(device),
                    token_type_ids=segment_ids.to(device),
                    attention_mask=input_mask.to(device),
                )
                for i, row in zip(idx, torch.softmax(logits.float(), dim=-1).tolist(), strict=True):
                    out[i] = row
            return out
        from tasks.training.decoding import decoder, viterbi

        input_ids, segment_ids, input_mask, subtokens_mask = enc.features[:4]
        ids_to_labels = {int(v): str(k) for k, v in model._cfg.label_ids.items()}
        labels = [ids_to_labels[j] for j in range(len(ids_to_labels))]
        constrained = decoder(model) == "viterbi"
        for idx in _batches(enc, batch_size or TAG_BATCH):
            longest = max(enc.lengths[i] for i in idx)  # get_features padded to the longest text

            def rows(lists: list, longest: int = longest, idx: list[int] = idx):
                return torch.tensor([lists[i][:longest] for i in idx], device=device)

            logits = model.forward(
                input_ids=rows(input_ids), token_type_ids=rows(segment_ids), attention_mask=rows(input_mask)
            )
            words = rows(subtokens_mask).bool()  # each word's first subword
            if constrained:
                log_probs = torch.log_softmax(logits.float(), dim=-1)
                batch_tags = viterbi([lp[m] for lp, m in zip(log_probs, words, strict=True)], labels)
            else:
                best = logits.argmax(dim=-1)
                batch_tags = [
                    repair_iob2([labels[p] for p in b[m].tolist()]) for b, m in zip(best, words, strict=True)
                ]
            for tags, i in zip(batch_tags, idx, strict=True):
                out[i] = ["O"] * (enc.words[i] - len(tags)) + tags
    return out


def classify(model, texts: Sequence[str], batch_size: int = CLASSIFY_BATCH) -> list[list[float]]:
    """Class probabilities (softmax) per text, truncated to the model's `dataset.max_seq_length`."""
    return run(model, encode(model, "classifier", texts), batch_size)


def repair_iob2(tags: Sequence[str]) -> list[str]:
    """Valid IOB2 from a tagger's argmax: an I that starts a run (after O, or first) becomes B.

    NeMo's tagger has no transition constraints and emits such I's (129-297 on test in the baseline).
    Scoring stays strict IOB2 everywhere; this is the decoder's choice of output, made once, here.
    """
    return ["B" if t == "I" and (i == 0 or tags[i - 1] == "O") else t for i, t in enumerate(tags)]


def tag(
    model, sentences: Sequence[str], batch_size: int = TAG_BATCH, max_seq_length: int = 512
) -> list[list[str]]:
    """One B/I/O tag per whitespace token, valid IOB2. Sentences longer than `max_seq_length` subword
    tokens keep their last tokens (NeMo's truncation); the dropped leading words are tagged O."""
    return run(model, encode(model, "ner", sentences, max_seq_length), batch_size)


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


def resolve_abbreviations(
    model, sentences: Sequence[str], tags: list[list[str]], documents: Sequence[int] | None = None
) -> list[list[str]]:
    """`tags` after the model's abbreviation step (tasks/training/abbreviations.py), when its config has
    it; `documents` gives each sentence's document (None: each sentence is its own)."""
    from tasks.training.abbreviations import enabled, resolve

    if not enabled(model):
        return tags
    docs = range(len(sentences)) if documents is None else documents
    return resolve([s.split() for s in sentences], tags, docs)[0]


def predict_texts(
    model, task: str, texts: Sequence[str], documents: Sequence[int] | None = None
) -> list[dict]:
    """Human/JSON-friendly predictions: classifier {label, name, probabilities}; NER {tags, entities}.
    NER: `documents` gives each sentence's document for abbreviation resolution (None: each its own)."""
    if task == "classifier":
        rows = []
        for p in classify(model, texts):
            label = max(range(len(p)), key=p.__getitem__)
            rows.append({"label": label, "name": class_name(label), "probabilities": p})
        return rows
    sentences = [" ".join(t.split()) for t in texts]
    tags = resolve_abbreviations(model, sentences, tag(model, sentences), documents)
    return [{"tags": t, "entities": spans(s, t)} for s, t in zip(sentences, tags, strict=True)]
