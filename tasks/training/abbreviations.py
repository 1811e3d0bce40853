"""Abbreviation resolution after tagging: a short form takes the tag of its long form, per document.

A tagger that reads one sentence at a time cannot know that "SJS" four sentences later is the
"Stevens-Johnson syndrome (SJS)" it tagged, nor that "VHL" after "von Hippel-Lindau (VHL) gene" is a gene.
NCBI's Ab3P (through `pyab3p`, the binding Flair's biomedical taggers use) finds the pairs in each document;
then every standalone occurrence of a short form in that document gets its long form's verdict: tagged when
the long form's last word is inside a predicted entity, untagged when it is not. This is the abbreviation
step of the NCBI disease corpus's own taggers (DNorm, TaggerOne). Dev strict F1 +0.0115 and +0.011 on two
seeds of the cpu profile (tasks/training/RESULTS.md); it needs no training and costs ~0.03 s per 100
abstracts. Ab3P is the library; the rule that applies its pairs to B/I/O tags is written here because no
maintained package does that (Flair and scispacy use the pairs for entity linking, not for tagging).

The step is part of the model: `model.abbreviations` in its config (true for models trained since it was
added) turns it on for dev scoring, test scoring, `evaluate`, `predict` and the MLflow pyfunc alike, so a
model is always measured the way it is served. Older models lack the key and are served and scored as
before.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from contextlib import contextmanager

CONFIG_KEY = "abbreviations"  # model.<key>: bool in a NER model's config


def enabled(model) -> bool:
    """Whether `model` (a NeMo TokenClassificationModel) was trained with abbreviation resolution."""
    return bool(model._cfg.get(CONFIG_KEY, False))


@contextmanager
def _stderr_silenced():
    """Ab3P's C++ code prints "Failed to find sentence" to fd 2 when its own sentence split misses."""
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


_AB3P = None


def _ab3p():
    global _AB3P
    if _AB3P is None:  # loads Ab3P's word tables once per process (~0.1 s)
        import pyab3p

        _AB3P = pyab3p.Ab3p()
    return _AB3P


def _occurrences(key: tuple[str, ...], words: Sequence[str]) -> list[int]:
    n = len(key)
    return [a for a in range(len(words) - n + 1) if tuple(words[a : a + n]) == key]


def resolve(
    sentences: Sequence[Sequence[str]], tags: Sequence[Sequence[str]], documents: Sequence[int]
) -> tuple[list[list[str]], int]:
    """(tags with every standalone short form given its long form's verdict, number of occurrences
    changed). `sentences` are token lists, `tags` valid IOB2 B/I/O per token, `documents` the document of
    each sentence (sentences of a document need not be adjacent). The verdicts come from `tags` as given."""
    out = [list(t) for t in tags]
    by_doc: dict[int, list[int]] = defaultdict(list)
    for i, doc in enumerate(documents):
        by_doc[doc].append(i)
    ab3p = _ab3p()
    changed = 0
    for idx in by_doc.values():
        # Ab3P reads the tagger's tokens joined by spaces, so its forms split back into tokens (dev F1
        # 0.002 higher than Ab3P on the release's own text, and no text beyond the sentences is needed).
        text = " ".join(" ".join(sentences[i]) for i in idx)
        with _stderr_silenced():
            pairs = ab3p.get_abbrs(text)
        for pair in pairs:
            short, long = tuple(pair.short_form.split()), tuple(pair.long_form.split())
            found = [tags[i][a + len(long) - 1] != "O" for i in idx for a in _occurrences(long, sentences[i])]
            if not found or not short:
                continue
            disease, n = any(found), len(short)
            for i in idx:
                t = out[i]
                for a in _occurrences(short, sentences[i]):
                    if (t[a] == "I") or (a + n < len(t) and t[a + n] == "I"):
                        continue  # inside a longer predicted entity ("VHL disease"): left to the tagger
                    if disease and all(x == "O" for x in t[a : a + n]):
                        t[a : a + n] = ["B"] + ["I"] * (n - 1)
                        changed += 1
                    elif not disease and t[a] == "B" and all(x == "I" for x in t[a + 1 : a + n]):
                        t[a : a + n] = ["O"] * n
                        changed += 1
    return out, changed
