"""Value ranges of the training config that its types cannot express (tasks/training/limits.py)."""

from __future__ import annotations

import pytest

from tasks.errors import UsageError
from tasks.training.limits import check_limits

GOOD = {
    "trainer.max_epochs": 3,
    "trainer.max_steps": -1,  # -1 is Lightning's "use max_epochs": allowed
    "model.optim.lr": 5e-5,
    "model.train_ds.batch_size": 16,
    "model.dataset.max_seq_length": 128,
    "model.attention": "eager",
    "model.cls_only_last_layer": "scoring",
    "model.train_ds.bucket_pool": 4,
    "model.train_ds.length_groups": 4,
}


def test_sensible_values_pass() -> None:
    check_limits(GOOD)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("trainer.max_epochs", -1),
        ("trainer.max_epochs", 0),
        ("model.optim.lr", 0),
        ("model.optim.lr", "fast"),
        ("model.train_ds.batch_size", 0),
        ("model.dataset.max_seq_length", -5),
        ("model.attention", "flash"),
        ("model.cls_only_last_layer", "training"),
        ("model.train_ds.bucket_pool", 0),
        ("model.train_ds.length_groups", 0),
    ],
)
def test_out_of_range_values_name_the_key(key: str, value: object) -> None:
    with pytest.raises(UsageError, match=rf"^config key '{key}' is {value!r}: ") as err:
        check_limits({**GOOD, key: value})
    assert "\n" not in str(err.value)
