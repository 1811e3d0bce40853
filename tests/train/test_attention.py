"""`model.attention` (tasks/training/encoders.py `use_attention`): NeMo's encoder rebuilt with transformers'
eager or sdpa attention and the same weights; the seeded random stream is left as it was, so the choice
changes the kernel and nothing else; `train` applies it to the model Lightning fits, and a restored model
runs it too. An unknown name is refused with the config (tests/train/test_config.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from tasks.training.encoders import build_tiny_encoder, use_attention  # noqa: E402


def _self_attention(encoder) -> set[str]:
    return {type(m).__name__ for m in encoder.modules() if type(m).__name__.endswith("SelfAttention")}


@pytest.fixture()
def nemo_like(tmp_path: Path):
    """An object holding a BERT as NeMo's models do (`bert_model`), loaded as NeMo loads it."""
    from transformers import AutoModel

    path = build_tiny_encoder(tmp_path / "enc", ["an abstract about breast cancer", "ataxia telangiectasia"])
    return SimpleNamespace(bert_model=AutoModel.from_pretrained(path))


def test_eager_twin_has_the_same_weights_outputs_and_random_stream(nemo_like) -> None:
    sdpa = nemo_like.bert_model
    assert _self_attention(sdpa) == {"BertSdpaSelfAttention"}  # transformers' default, what NeMo gets
    sdpa.eval()
    ids = torch.randint(5, sdpa.config.vocab_size, (3, 11), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # a padded row: the two implementations mask differently
    with torch.no_grad():
        before = sdpa(input_ids=ids, attention_mask=mask).last_hidden_state
    rng = torch.get_rng_state()

    use_attention(nemo_like, "eager")

    eager = nemo_like.bert_model
    assert eager is not sdpa and _self_attention(eager) == {"BertSelfAttention"}
    assert eager.config._attn_implementation == "eager" and not eager.training
    assert torch.equal(torch.get_rng_state(), rng)
    weights = sdpa.state_dict()
    assert all(torch.equal(weights[k], v) for k, v in eager.state_dict().items())
    with torch.no_grad():
        after = eager(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    torch.testing.assert_close(after[real], before[real], rtol=1e-4, atol=1e-5)

    use_attention(nemo_like, "eager")  # already eager: kept as it is
    assert nemo_like.bert_model is eager


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_train_and_restore_use_the_configured_attention(data_slice: Path, tmp_path: Path, attention) -> None:
    import lightning.pytorch as pl

    from tasks.training.artifact import restore_nemo
    from tasks.training.train import train

    class Seen(pl.Callback):
        def __init__(self) -> None:
            self.attention: set[str] = set()

        def on_train_start(self, trainer, pl_module) -> None:
            self.attention = _self_attention(pl_module.bert_model)

    seen = Seen()
    overrides = ["trainer.max_epochs=1", f"model.attention={attention}"]
    train("ner", data_slice, tmp_path / "out", "tiny", overrides, use_mlflow=False, callbacks=(seen,))
    expected = {"eager": {"BertSelfAttention"}, "sdpa": {"BertSdpaSelfAttention"}}[attention]
    assert seen.attention == expected
    # `evaluate`, `predict` and the pyfunc run the attention the model was trained with
    assert _self_attention(restore_nemo(tmp_path / "out" / "model.nemo", "ner").bert_model) == expected
