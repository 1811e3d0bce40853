"""Helpers shared by the training-env tests (imported as a plain module: tests/ is not a package)."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_cli(
    train_python: Path, args: list[str], env: dict[str, str], timeout: int = 600
) -> subprocess.CompletedProcess:
    """`ncbi-retrain ARGS` in the training env, in a fresh process."""
    return subprocess.run(
        [str(train_python), "-m", "tasks.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
    )


def tiny_nemo_like(tmp_path: Path):
    """An object holding NeMo's BERT encoder class (`bert_model`) on a tiny random BERT, without dropout,
    so that two training-mode forwards can be compared."""
    from types import SimpleNamespace

    import torch
    from nemo.collections.nlp.modules.common.huggingface.bert import BertEncoder

    from tasks.training.encoders import build_tiny_encoder

    path = build_tiny_encoder(tmp_path / "enc", ["an abstract about breast cancer", "ataxia telangiectasia"])
    torch.manual_seed(0)
    encoder = BertEncoder.from_pretrained(path, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return SimpleNamespace(bert_model=encoder)


def padded_batch(vocab: int, lengths: list[int]):
    """(input_ids, attention_mask, token_type_ids) of items of `lengths` tokens, padded at the end to the
    longest, as NeMo's collates pad."""
    import torch

    ids = torch.randint(5, vocab, (len(lengths), max(lengths)), generator=torch.Generator().manual_seed(1))
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    return ids * mask, mask, torch.zeros_like(ids)
