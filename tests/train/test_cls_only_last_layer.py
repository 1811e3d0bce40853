"""`model.cls_only_last_layer` (tasks/training/encoders.py `use_cls_only_last_layer`): the classifier's
encoder computes its last layer for [CLS] alone, the one position NeMo's sequence classifier reads, when
scoring (`scoring`, the default), in training too (`always`) or `never`. [CLS]'s output and every gradient
of a loss on it are those of the whole layer; `train` fits and scores as configured, and a restored model
scores as its config says. A bad value is refused with the config (tests/train/test_config.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from train_helpers import padded_batch, tiny_nemo_like  # noqa: E402

from tasks.training.encoders import use_attention, use_cls_only_last_layer  # noqa: E402


def _encoder(tmp_path: Path, attention: str):
    model = tiny_nemo_like(tmp_path)
    use_attention(model, attention)
    return model


def _batch(vocab: int, lengths: list[int]) -> dict:
    ids, mask, types = padded_batch(vocab, lengths)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("lengths", [[12, 3, 7, 12, 5], [9, 9, 9]], ids=["padded", "unpadded"])
def test_cls_and_its_gradients_are_those_of_the_whole_layer(tmp_path: Path, attention, lengths) -> None:
    model = _encoder(tmp_path, attention)
    encoder = model.bert_model
    encoder.train()
    batch = _batch(encoder.config.vocab_size, lengths)
    whole = encoder(**batch)[:, 0]
    whole.pow(2).sum().backward()
    whole_grads = {n: p.grad.clone() for n, p in encoder.named_parameters() if p.grad is not None}
    encoder.zero_grad()

    widths: list[int] = []
    encoder.encoder.layer[-1].intermediate.register_forward_hook(
        lambda m, a, out: widths.append(out.shape[1])
    )
    use_cls_only_last_layer(model, "always")
    cls = encoder(**batch)[:, 0]
    cls.pow(2).sum().backward()

    assert widths == [1]  # the last layer's feed-forward block ran on [CLS] alone
    torch.testing.assert_close(cls, whole, rtol=1e-5, atol=1e-5)
    grads = dict(encoder.named_parameters())
    assert {n for n, p in grads.items() if p.grad is not None} == set(whole_grads)
    for name, grad in whole_grads.items():
        torch.testing.assert_close(grads[name].grad, grad, rtol=1e-4, atol=1e-4)


def test_scoring_mode_leaves_training_whole(tmp_path: Path) -> None:
    model = _encoder(tmp_path, "sdpa")
    encoder = model.bert_model
    batch = _batch(encoder.config.vocab_size, [12, 3, 7, 12, 5])
    encoder.eval()
    with torch.no_grad():
        whole = encoder(**batch)[:, 0]
    widths: list[int] = []
    encoder.encoder.layer[-1].intermediate.register_forward_hook(
        lambda m, a, out: widths.append(out.shape[1])
    )
    use_cls_only_last_layer(model, "scoring")
    with torch.no_grad():
        cls = encoder(**batch)[:, 0]
    encoder(**batch)  # gradients on: training runs the whole layer
    assert widths == [1, 12]
    torch.testing.assert_close(cls, whole, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("when", ["scoring", "always", "never"])
def test_train_and_restore_follow_the_config(data_slice: Path, tmp_path: Path, when: str) -> None:
    import lightning.pytorch as pl

    from tasks.training.artifact import restore_nemo
    from tasks.training.predict import classify
    from tasks.training.train import train

    def hook(module, widths: dict[bool, set[int]]) -> None:
        def seen(m, args, out) -> None:  # by whether gradients are on: training, or the dev pass
            widths.setdefault(torch.is_grad_enabled(), set()).add(out.shape[1])

        module.bert_model.encoder.layer[-1].intermediate.register_forward_hook(seen)

    class Seen(pl.Callback):
        def __init__(self) -> None:
            self.widths: dict[bool, set[int]] = {}

        def on_train_start(self, trainer, pl_module) -> None:
            hook(pl_module, self.widths)

    seen = Seen()
    overrides = ["trainer.max_epochs=1", f"model.cls_only_last_layer={when}"]
    result = train(
        "classifier", data_slice, tmp_path / "out", "tiny", overrides, use_mlflow=False, callbacks=(seen,)
    )
    training, scoring = seen.widths[True], seen.widths[False]
    assert (training == {1}) is (when == "always") and (1 not in training) is (when != "always")
    assert (scoring == {1}) is (when != "never") and (1 not in scoring) is (when == "never")

    restored = restore_nemo(Path(result["artifacts"]["nemo"]), "classifier")
    widths: dict[bool, set[int]] = {}
    hook(restored, widths)
    texts = ["an abstract about breast cancer and its treatment", "ataxia"]
    probs = classify(restored, texts)
    assert (widths[False] == {1}) is (when != "never")
    if when == "never":
        return
    # the whole layer's [CLS] gives the same probabilities: a restored model without the hook
    restored.bert_model.encoder.layer[-1].__dict__.pop("forward")
    torch.testing.assert_close(
        torch.tensor(classify(restored, texts)), torch.tensor(probs), atol=1e-5, rtol=1e-5
    )
