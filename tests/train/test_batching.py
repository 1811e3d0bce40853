"""Length-bucketed batches (tasks/training/batching.py): similar lengths together, each batch padded to its
longest item, an order that changes every epoch and comes back the same from the same seed; on NeMo's
own token-classification dataset and collate."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from torch.utils.data import DistributedSampler  # noqa: E402

from tasks.training.batching import LengthBucketBatchSampler, bucketed_loader  # noqa: E402


class Items:
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


def sampler(lengths: list[int], batch_size: int = 8, seed: int = 42, pool: int = 5, drop_last: bool = False):
    base = DistributedSampler(Items(len(lengths)), num_replicas=1, rank=0, shuffle=True, seed=seed)
    return LengthBucketBatchSampler(base, batch_size, drop_last, lengths, pool=pool)


def epoch(s: LengthBucketBatchSampler, e: int) -> list[list[int]]:
    s.sampler.set_epoch(e)  # what Lightning does before each epoch
    return list(s)


_rng = random.Random(7)
LENGTHS = [_rng.randint(5, 120) for _ in range(1003)]


def spread(batches: list[list[int]]) -> float:
    """Mean over batches of (longest - shortest) length."""
    return sum(max(LENGTHS[i] for i in b) - min(LENGTHS[i] for i in b) for b in batches) / len(batches)


def test_every_item_once_per_epoch_in_len_batches() -> None:
    s = sampler(LENGTHS)
    for e in range(3):
        batches = epoch(s, e)
        assert sorted(i for b in batches for i in b) == list(range(len(LENGTHS)))
        assert len(batches) == len(s) == -(-len(LENGTHS) // 8)  # NeMo's LR schedule counts on this
        assert sum(len(b) < 8 for b in batches) <= -(-len(LENGTHS) // (8 * 5))  # one short batch per pool


def test_drop_last_drops_the_short_batches() -> None:
    s = sampler(LENGTHS, drop_last=True)
    batches = epoch(s, 0)
    assert all(len(b) == 8 for b in batches) and len(batches) == len(s)


def test_batches_hold_items_of_similar_length() -> None:
    bucketed = epoch(sampler(LENGTHS, pool=50), 0)
    order = list(range(len(LENGTHS)))
    random.Random(1).shuffle(order)
    plain = [order[i : i + 8] for i in range(0, len(order), 8)]  # what a shuffling DataLoader gives
    assert spread(bucketed) < spread(plain) / 5


def test_order_changes_every_epoch_and_repeats_from_the_seed() -> None:
    a, b = sampler(LENGTHS), sampler(LENGTHS)
    first = [epoch(a, e) for e in range(3)]
    assert first[0] != first[1] != first[2]  # new buckets and a new bucket order every epoch
    assert [batch[0] for batch in first[0]] != sorted(batch[0] for batch in first[0])
    assert [epoch(b, e) for e in (2, 0, 1)] == [first[2], first[0], first[1]]  # a resumed run: same epochs
    assert epoch(sampler(LENGTHS, seed=43), 0) != first[0]


def test_scoring_order_is_one_sort_shortest_first() -> None:
    from torch.utils.data import SequentialSampler

    s = LengthBucketBatchSampler(SequentialSampler(LENGTHS), 16, False, LENGTHS, shuffle=False)
    flat = [i for b in s.batches() for i in b]
    assert [LENGTHS[i] for i in flat] == sorted(LENGTHS)


@pytest.fixture(scope="module")
def nemo_ner_dataset(imported_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """NeMo's BertTokenClassificationDataset over 400 real training sentences, tiny encoder's tokenizer."""
    from nemo.collections.common.tokenizers.huggingface.auto_tokenizer import AutoTokenizer
    from nemo.collections.nlp.data.token_classification.token_classification_dataset import (
        BertTokenClassificationDataset,
    )

    from tasks.training.encoders import build_tiny_encoder

    tmp = tmp_path_factory.mktemp("bucket-ds")
    texts = (imported_data / "ner3" / "text_train.txt").read_text().splitlines()[:400]
    labels = (imported_data / "ner3" / "labels_train.txt").read_text().splitlines()[:400]
    (tmp / "text.txt").write_text("\n".join(texts) + "\n")
    (tmp / "labels.txt").write_text("\n".join(labels) + "\n")
    encoder = build_tiny_encoder(tmp / "encoder", texts)
    return BertTokenClassificationDataset(
        text_file=str(tmp / "text.txt"),
        label_file=str(tmp / "labels.txt"),
        max_seq_length=128,
        tokenizer=AutoTokenizer(str(encoder)),
        label_ids={"O": 0, "B": 1, "I": 2},
        use_cache=False,
    )


def test_nemo_batches_are_padded_to_their_longest_item(nemo_ner_dataset) -> None:
    from torch.utils.data import DataLoader

    ds = nemo_ner_dataset
    width = len(ds[0][0])
    assert width == max(int(sum(m)) for m in ds.all_input_mask)  # NeMo pads all items to the longest
    plain = DataLoader(ds, batch_size=16, collate_fn=ds.collate_fn)
    loader = bucketed_loader("ner", plain, seed=42)
    assert len(loader) == len(plain)
    seen, tokens, padded = [], 0, 0
    for idx, batch in zip(loader.batch_sampler.batches(), loader, strict=True):
        input_ids, input_mask = batch[0], batch[2]
        lengths = input_mask.sum(dim=1)
        cut = input_ids.shape[1]
        assert cut == int(lengths.max()) <= width  # trimmed to the batch's longest item
        assert all(t.shape == input_ids.shape for t in batch)
        for row, i in enumerate(idx):  # each row is NeMo's item, cut where the batch's padding starts
            for k, t in enumerate(batch):
                assert torch.equal(torch.as_tensor(ds[i][k][:cut]), t[row])
            assert int(torch.as_tensor(ds[i][2]).sum()) <= cut  # nothing real was cut off
        seen += idx
        tokens += int(lengths.sum())
        padded += input_ids.numel()
    assert sorted(seen) == list(range(len(ds)))
    assert padded / tokens < 1.15  # NeMo's own batches: 108 / mean length, about 3


def test_the_configured_pool_reaches_the_sampler_lightning_iterates(data_slice: Path, tmp_path: Path) -> None:
    import lightning.pytorch as pl

    from tasks.training.train import train

    class Seen(pl.Callback):
        def __init__(self) -> None:
            self.sampler = None

        def on_train_start(self, trainer, pl_module) -> None:
            self.sampler = trainer.train_dataloader.batch_sampler

    seen = Seen()
    overrides = ["trainer.max_epochs=1", "model.train_ds.length_buckets=true", "model.train_ds.bucket_pool=2"]
    train("classifier", data_slice, tmp_path / "out", "tiny", overrides, use_mlflow=False, callbacks=(seen,))
    assert isinstance(seen.sampler, LengthBucketBatchSampler)
    assert seen.sampler.pool == 2 and seen.sampler.batch_size == 16  # the tiny profile's classifier batch
