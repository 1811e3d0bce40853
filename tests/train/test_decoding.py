"""Constrained Viterbi decoding of NER tags (pytorch-crf with fixed IOB2 transitions), and the model's config
deciding which decoder scoring and prediction use."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from omegaconf import open_dict

from tasks.training.decoding import decoder, viterbi
from tasks.vocab import TAGS

LABELS = list(TAGS)  # B, I, O


def lp(*rows: dict[str, float]) -> torch.Tensor:
    """Log-probabilities per word from {tag: probability} rows (missing tags share what is left)."""
    out = []
    for row in rows:
        rest = (1.0 - sum(row.values())) / (len(LABELS) - len(row))
        out.append([math.log(row.get(t, rest)) for t in LABELS])
    return torch.tensor(out)


def valid(tags: list[str]) -> bool:
    return all(t != "I" or (i > 0 and tags[i - 1] != "O") for i, t in enumerate(tags))


def brute_force(log_probs: torch.Tensor) -> list[str]:
    """The highest-scoring valid IOB2 sequence by enumeration: an independent check of the decoder."""
    best = max(
        (seq for seq in itertools.product(LABELS, repeat=len(log_probs)) if valid(list(seq))),
        key=lambda seq: sum(float(log_probs[i, LABELS.index(t)]) for i, t in enumerate(seq)),
    )
    return list(best)


def test_a_strong_inside_word_pulls_its_weak_start_into_the_entity() -> None:
    """Argmax reads "O I": repair would tag only the second word; the best valid sequence is "B I"."""
    sentence = lp({"O": 0.5, "B": 0.4}, {"I": 0.9}, {"O": 0.9})
    assert viterbi([sentence], LABELS) == [["B", "I", "O"]]


def test_a_weak_isolated_inside_word_is_dropped() -> None:
    sentence = lp({"O": 0.9}, {"I": 0.5, "O": 0.45}, {"O": 0.9})
    assert viterbi([sentence], LABELS) == [["O", "O", "O"]]


def test_a_sentence_cannot_open_with_inside() -> None:
    assert viterbi([lp({"I": 0.8, "B": 0.15})], LABELS) == [["B"]]


def test_batches_of_uneven_and_empty_sentences_match_enumeration() -> None:
    gen = torch.Generator().manual_seed(7)
    sentences = [torch.log_softmax(torch.randn(n, 3, generator=gen) * 2, -1) for n in (5, 1, 0, 7, 3, 6)]
    decoded = viterbi(sentences, LABELS)
    assert decoded[2] == []
    for sentence, tags in zip(sentences, decoded, strict=True):
        if len(sentence):
            assert tags == brute_force(sentence)


def test_typed_tags_continue_only_their_own_type() -> None:
    labels = ["B-Disease", "I-Disease", "B-Gene", "I-Gene", "O"]
    probs = [[0.05, 0.05, 0.6, 0.05, 0.25], [0.05, 0.7, 0.05, 0.15, 0.05]]
    tags = viterbi([torch.tensor(probs).log()], labels)[0]
    assert tags == ["B-Gene", "I-Gene"]  # 0.6 x 0.15 > 0.05 x 0.7


def test_the_models_config_chooses_the_decoder(trained: dict) -> None:
    """The tiny NER model of this session is trained with Viterbi (the base config): its tags are the
    enumerated best valid sequence of its own log-probabilities. Given scores where the two decoders
    disagree, `run` follows the config: Viterbi, argmax when the key is unset, an error when unknown."""
    from tasks.training.artifact import restore_nemo
    from tasks.training.predict import encode, eval_mode, run

    model = restore_nemo(trained["ner"]["out"] / "model.nemo", "ner")
    assert decoder(model) == "viterbi"
    enc = encode(
        model, "ner", ["Two patients with SJS recovered .", "Breast cancer and ataxia .", "VHL disease"]
    )
    ids, segments, attention, first_subword = (torch.tensor(f) for f in enc.features[:4])
    with eval_mode(model):
        log_probs = torch.log_softmax(
            model.forward(input_ids=ids, token_type_ids=segments, attention_mask=attention).float(), -1
        )
    columns = [int(model._cfg.label_ids[t]) for t in LABELS]  # brute_force reads columns in LABELS' order
    expected = [
        brute_force(row[m.bool()][:, columns]) for row, m in zip(log_probs, first_subword, strict=True)
    ]
    assert run(model, enc) == expected

    one = encode(model, "ner", ["Breast cancer and ataxia"])
    scores = lp({"O": 0.5, "B": 0.4}, {"I": 0.9}, {"O": 0.9}, {"O": 0.9})[:, torch.tensor(columns).argsort()]
    words = torch.tensor(one.features[3][0][: one.lengths[0]]).bool()
    assert int(words.sum()) == 4  # one first subword per word: the scores below land on them
    logits = torch.full((1, one.lengths[0], len(LABELS)), 0.0)
    logits[0, words] = scores
    model.forward = lambda **_: logits
    assert run(model, one) == [["B", "I", "O", "O"]]
    with open_dict(model._cfg):
        model._cfg.decoding = None
    assert decoder(model) == "argmax"
    assert run(model, one) == [["O", "B", "O", "O"]]  # argmax "O I", repaired
    with open_dict(model._cfg):
        model._cfg.decoding = "beam"
    with pytest.raises(ValueError, match=r"model\.decoding is 'beam'"):
        run(model, one)
