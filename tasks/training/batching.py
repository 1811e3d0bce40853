"""Length-bucketed batches with dynamic padding for NeMo's text and token classification datasets.

NeMo's training dataloaders draw items in random order and pad every NER item to `max_seq_length` up
front (NCBI sentences average 34 subword tokens, padded to 64 or 128). Here the training loader of a NeMo
model is rebuilt on NeMo's own dataset and `collate_fn` (`setup_training_data` built both) with:

- a per-epoch permutation from torch's `DistributedSampler` (seeded by `seed + epoch`, one shard per
  rank under DDP; Lightning calls its `set_epoch`), so an epoch's order is the same after a resume;
- `LengthBucketBatchSampler` over it: the permutation is cut into pools of `pool` batches, each pool is
  sorted by length and cut into batches (items of similar length together), and the order of all
  batches is shuffled from the same seed and epoch;
- a collate that trims each batch to its longest item (NeMo's NER items arrive padded to the maximum).

Nothing else changes: the model class, its loss, its config and its `.nemo` are NeMo's. The number of
batches per epoch is fixed (NeMo's LR schedule counts on `len(train_dataloader)`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, Sampler

POOL = 50  # batches per length-sorted pool: enough to find equal lengths, small enough to stay random


class LengthBucketBatchSampler(BatchSampler):
    """Batches of items of similar length, in an order reproducible from (seed, epoch); with
    `shuffle=False` (scoring) one sort of all items, shortest first, so each batch pads least.

    By hand because torch has no length-grouped batch sampler, and transformers' `LengthGroupedSampler`
    yields long-to-short runs from a stateful generator (no per-epoch shuffle of batches, and an epoch's
    order changes after a resume).
    """

    def __init__(
        self,
        sampler: Sampler[int],
        batch_size: int,
        drop_last: bool,
        lengths: Sequence[int],
        *,
        shuffle: bool = True,
        pool: int = POOL,
    ) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self.lengths = list(lengths)
        self.shuffle = shuffle
        self.pool = max(1, pool)

    @property
    def micro_batch_size(self) -> int:
        """What NeMo's LR scheduler reads from a batch sampler (its step count: ceil(items / batch) per
        epoch, which is this sampler's length too: pools are whole batches but the last)."""
        return self.batch_size

    def _generator(self) -> torch.Generator:
        seed = int(getattr(self.sampler, "seed", 0)) + int(getattr(self.sampler, "epoch", 0))
        return torch.Generator().manual_seed(seed + 7919)  # not the sampler's own stream

    def _count(self, items: int) -> int:
        return items // self.batch_size if self.drop_last else -(-items // self.batch_size)

    def batches(self) -> list[list[int]]:
        """This epoch's batches for this rank (call `sampler.set_epoch(e)` first for epoch e)."""
        order = list(self.sampler)
        chunk = self.pool * self.batch_size if self.shuffle else max(len(order), 1)
        batches: list[list[int]] = []
        for start in range(0, len(order), chunk):
            pool = sorted(order[start : start + chunk], key=self.lengths.__getitem__)
            cut = [pool[i : i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
            batches += cut[: self._count(len(pool))]
        if self.shuffle:
            perm = torch.randperm(len(batches), generator=self._generator()).tolist()
            batches = [batches[i] for i in perm]
        world, rank = _world()
        if world > 1:  # every rank computed the same list: each takes its share, all the same count
            batches = batches[rank::world][: len(batches) // world]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches()

    def __len__(self) -> int:
        n = len(self.sampler)  # type: ignore[arg-type]
        chunk = self.pool * self.batch_size if self.shuffle else max(n, 1)
        full, rest = divmod(n, chunk)
        total = full * self._count(chunk) + self._count(rest)
        return total // _world()[0]


def _world() -> tuple[int, int]:
    """(world size, rank) under torch.distributed (Lightning DDP), else (1, 0)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def trim_collate(collate: Callable[[list], Any], mask_index: int) -> Callable[[list], Any]:
    """`collate`, then every [batch, time] tensor cut to the batch's longest item (by the attention mask
    at `mask_index` of the collated tuple)."""

    def collate_trimmed(items: list) -> Any:
        out = collate(items)
        mask = out[mask_index]
        longest = int(mask.sum(dim=1).max()) if mask.numel() else 0
        if longest >= mask.shape[1]:
            return out
        return type(out)(t[:, :longest] if t.dim() == 2 else t for t in out)

    return collate_trimmed


def item_lengths(task: str, dataset) -> list[int]:
    """Subword tokens per item of NeMo's dataset (with [CLS] and [SEP]; after NeMo's truncation)."""
    if task == "classifier":  # TextClassificationDataset: features = (input_ids, segment_ids, mask, label)
        return [len(f[0]) for f in dataset.features]
    return [int(sum(m)) for m in dataset.all_input_mask]  # BertTokenClassificationDataset


def bucketed_loader(
    task: str,
    loader: DataLoader,
    *,
    seed: int,
    pool: int = POOL,
) -> DataLoader:
    """NeMo's training DataLoader rebuilt with length buckets and per-batch padding (same dataset, same
    collate, same batch size and workers)."""
    dataset = loader.dataset
    # One replica: its seed + epoch permutation only; DDP ranks split the batches (LengthBucketBatchSampler).
    sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=seed, drop_last=False)
    batch_sampler = LengthBucketBatchSampler(
        sampler, loader.batch_size, loader.drop_last, item_lengths(task, dataset), pool=pool
    )
    collate = loader.collate_fn if task == "classifier" else trim_collate(loader.collate_fn, mask_index=2)
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        collate_fn=collate,
        num_workers=loader.num_workers,
        pin_memory=loader.pin_memory,
        persistent_workers=loader.num_workers > 0,
    )


def use_length_buckets(model, task: str, seed: int, pool: int = POOL) -> None:
    """Swap the training loader that NeMo's `setup_training_data` built for a length-bucketed one
    (before `trainer.fit`, which sizes NeMo's LR schedule from it)."""
    model._train_dl = bucketed_loader(task, model._train_dl, seed=seed, pool=pool)
