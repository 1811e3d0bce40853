"""`model.train_ds.length_groups` (tasks/training/encoders.py `use_length_groups`): in training, NeMo's
encoder runs a batch as groups of similar length, each padded to its own longest item. What the model
computes for each item, and so the loss and the gradients, is that of the whole padded batch; eval and
scoring are untouched; `train` applies it to the model Lightning fits. Zero groups are refused with the
config (tests/train/test_config.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from train_helpers import padded_batch, tiny_nemo_like  # noqa: E402

from tasks.training.encoders import use_length_groups  # noqa: E402


@pytest.fixture()
def nemo_like(tmp_path: Path):
    return tiny_nemo_like(tmp_path)


def _batch(vocab: int):
    """Five items of 3 to 12 tokens."""
    return padded_batch(vocab, [12, 3, 7, 12, 5])


def _loss(hidden, mask):
    # depends on every real position, as the classifier's [CLS] and the tagger's tokens together do
    return (hidden * mask.unsqueeze(-1)).pow(2).sum()


def test_groups_compute_the_whole_batch_less_its_padding(nemo_like) -> None:
    encoder = nemo_like.bert_model
    encoder.train()
    ids, mask, types = _batch(encoder.config.vocab_size)
    whole = encoder(input_ids=ids, attention_mask=mask, token_type_ids=types)
    _loss(whole, mask).backward()
    whole_grads = {n: p.grad.clone() for n, p in encoder.named_parameters() if p.grad is not None}
    encoder.zero_grad()

    widths: list[tuple[int, int]] = []
    encoder.embeddings.register_forward_hook(lambda m, args, out: widths.append(tuple(out.shape[:2])))
    use_length_groups(nemo_like, 2)
    grouped = encoder(input_ids=ids, attention_mask=mask, token_type_ids=types)
    _loss(grouped, mask).backward()

    assert widths == [(3, 7), (2, 12)]  # the three shortest items padded to 7, the two longest to 12
    real = mask.bool()
    torch.testing.assert_close(grouped[real], whole[real], rtol=1e-5, atol=1e-5)
    for name, grad in whole_grads.items():
        torch.testing.assert_close(dict(encoder.named_parameters())[name].grad, grad, rtol=1e-4, atol=1e-4)


def test_scoring_and_unpadded_batches_run_whole(nemo_like) -> None:
    encoder = nemo_like.bert_model
    ids, mask, types = _batch(encoder.config.vocab_size)
    encoder.eval()
    with torch.no_grad():
        before = encoder(input_ids=ids, attention_mask=mask, token_type_ids=types)
    calls: list[int] = []
    encoder.embeddings.register_forward_hook(lambda m, args, out: calls.append(out.shape[0]))
    use_length_groups(nemo_like, 2)
    with torch.no_grad():
        after = encoder(input_ids=ids, attention_mask=mask, token_type_ids=types)
    assert torch.equal(after, before) and calls == [5]  # scoring: one call, padded rows computed as before

    full = torch.ones_like(mask)
    encoder(input_ids=ids, attention_mask=full, token_type_ids=types)
    assert calls == [5, 5]  # no padding in the batch: nothing to save by grouping


def test_train_fits_the_classifier_in_groups(data_slice: Path, tmp_path: Path) -> None:
    import lightning.pytorch as pl

    from tasks.training.train import train

    class Seen(pl.Callback):
        """Rows of each training batch, and of each call of the encoder's embeddings within it."""

        def __init__(self) -> None:
            self.batches: list[int] = []
            self.calls: list[int] = []

        def on_train_start(self, trainer, pl_module) -> None:
            def rows(module, args, out) -> None:
                if torch.is_grad_enabled():  # not the dev pass, which scores under inference mode
                    self.calls.append(out.shape[0])

            pl_module.bert_model.embeddings.register_forward_hook(rows)

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self.batches.append(batch[0].shape[0])

    seen = Seen()
    overrides = [
        "trainer.max_epochs=1",
        "model.train_ds.batch_size=8",
        "model.dataset.max_seq_length=512",  # no abstract of the slice is cut: every batch has padding
        "model.train_ds.length_groups=2",
    ]
    train("classifier", data_slice, tmp_path / "out", "tiny", overrides, use_mlflow=False, callbacks=(seen,))
    assert seen.batches == [8] * 7 + [4]  # 60 abstracts
    assert seen.calls == [4, 4] * 7 + [2, 2]
    assert (tmp_path / "out" / "model.nemo").is_file()
