"""Constrained Viterbi decoding of NER tags: the most probable valid IOB2 sequence of a sentence.

NeMo's tagger scores each word on its own, and its argmax can open an entity with I, or end one a word
early while the next word still leans to I. `predict.repair_iob2` turns such an I into B after the fact;
Viterbi instead picks, over the tagger's per-word log-probabilities, the best whole sequence in which I
only follows B or I. On dev it raised strict entity F1 on all 9 models tried (+0.002 to +0.019, mean
+0.011; tasks/training/RESULTS.md), with no training and a few ms per 100 sentences.

pytorch-crf's CRF does the decoding: its transition scores are fixed here (0 allowed, -inf forbidden),
not learned, so it is a plain Viterbi over the tagger's log-softmax.

The decoder is part of the model, as the abbreviation step is: `model.decoding` in its config (`viterbi`
for models trained since it was added) applies to dev scoring, test scoring, `evaluate`, `predict` and
the MLflow pyfunc alike. Older models lack the key and are decoded by argmax, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

CONFIG_KEY = "decoding"  # model.<key>: "argmax" | "viterbi" in a NER model's config
DECODERS = ("argmax", "viterbi")


def decoder(model) -> str:
    """The decoder a NER model (a NeMo TokenClassificationModel) was trained with; argmax when unset."""
    name = str(model._cfg.get(CONFIG_KEY, None) or "argmax")
    if name not in DECODERS:
        raise ValueError(f"model.{CONFIG_KEY} is {name!r}; expected one of {', '.join(DECODERS)}")
    return name


def _allowed(previous: str | None, tag: str) -> bool:
    """IOB2: an I (or I-X) continues a B or I of the same type; anything else may start anywhere."""
    if not tag.startswith("I"):
        return True
    if previous is None or previous == "O":
        return False
    return previous[2:] == tag[2:]


def _valid(tags: Sequence[str]) -> bool:
    return all(_allowed(tags[i - 1] if i else None, tag) for i, tag in enumerate(tags))


@lru_cache(maxsize=4)
def _crf(labels: tuple[str, ...]):
    """A CRF whose transitions encode IOB2's rules over `labels` (index order), nothing learned."""
    import torch
    from torchcrf import CRF

    forbidden = float("-inf")
    crf = CRF(len(labels), batch_first=True)
    with torch.no_grad():
        crf.start_transitions.copy_(torch.tensor([0.0 if _allowed(None, b) else forbidden for b in labels]))
        crf.end_transitions.zero_()
        crf.transitions.copy_(
            torch.tensor([[0.0 if _allowed(a, b) else forbidden for b in labels] for a in labels])
        )
    return crf.eval()


def viterbi(log_probs: Sequence, labels: Sequence[str]) -> list[list[str]]:
    """The best valid IOB2 tag sequence per sentence.

    `log_probs`: one float tensor per sentence, [words, len(labels)], the tagger's log-softmax at each
    word's first subword; `labels`: the tag of each column. Sentences without words give [].
    """
    import torch
    import torchcrf  # noqa: F401  imported on every call, so a server without it fails on its first request
    from torch.nn.utils.rnn import pad_sequence

    # Transitions only forbid, never score: where the per-word argmax already is valid IOB2 it is the best
    # valid path, so only the other sentences (30 of 923 on dev for the cpu profile) go through the CRF,
    # whose backtrace runs in Python per word.
    out = [[labels[j] for j in lp.argmax(dim=-1).tolist()] for lp in log_probs]
    rows = [i for i, tags in enumerate(out) if not _valid(tags)]
    if not rows:
        return out
    emissions = pad_sequence([log_probs[i] for i in rows], batch_first=True)
    lengths = torch.tensor([len(log_probs[i]) for i in rows])
    mask = torch.arange(emissions.shape[1])[None, :] < lengths[:, None]
    with torch.no_grad():
        best = _crf(tuple(labels)).decode(emissions.float().cpu(), mask)
    for i, path in zip(rows, best, strict=True):
        out[i] = [labels[j] for j in path]
    return out
