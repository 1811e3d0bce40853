"""bench/gpu.sh's pieces that need no GPU: the random encoder of the gpu profile's shape, the overrides
bench/gpu_train.py gives the gpu profile, and its MFU arithmetic."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from transformers import BertConfig

from tasks.errors import UsageError
from tasks.training.config import resolve_config
from tasks.training.encoders import RANDOM, SHAPES, resolve_encoder

ROOT = Path(__file__).resolve().parents[2]
TEXTS = ["Ataxia telangiectasia is a disease", "the disease of the colon", "a tumour of the colon"]


def _gpu_train():
    spec = importlib.util.spec_from_file_location("gpu_train", ROOT / "bench" / "gpu_train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("task", ["classifier", "ner"])
def test_the_gpu_profiles_encoder_has_a_random_shape(task: str) -> None:
    name = resolve_config(task, "gpu").config.model.language_model.pretrained_model_name
    assert name in SHAPES, f"bench/gpu.sh cannot build {name!r} with random weights"


def test_the_bert_base_shape_is_transformers_bert_base() -> None:
    """transformers' BertConfig defaults are bert-base-uncased's published config."""
    ref = BertConfig()
    for key, value in SHAPES["bert-base-uncased"].items():
        assert getattr(ref, key) == value, key


def test_random_tiny_is_the_tiny_encoder(tmp_path: Path) -> None:
    tiny = Path(resolve_encoder("tiny", tmp_path / "a", TEXTS))
    rand = Path(resolve_encoder(f"{RANDOM}tiny", tmp_path / "b", TEXTS))
    assert json.loads((tiny / "config.json").read_text()) == json.loads((rand / "config.json").read_text())
    assert (tiny / "vocab.txt").read_text() == (rand / "vocab.txt").read_text()
    words = (tiny / "vocab.txt").read_text().split("\n")[5:8]
    assert words == ["the", "a", "disease"]  # by count, ties in order of first appearance


def test_an_unknown_shape_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"random:bert-huge.*known: random:tiny, random:bert-base-uncased"):
        resolve_encoder("random:bert-huge", tmp_path, TEXTS)


@pytest.mark.parametrize("task", ["classifier", "ner"])
@pytest.mark.parametrize("dry_run", [False, True])
def test_gpu_train_overrides_compose_on_the_gpu_profile(task: str, dry_run: bool) -> None:
    cfg = resolve_config(task, "gpu", _gpu_train().overrides_for(task, dry_run, [])).config
    assert cfg.trainer.max_epochs == 1
    assert cfg.trainer.precision == "bf16-mixed"
    if dry_run:
        assert cfg.trainer.accelerator == "cpu"
        assert cfg.model.language_model.pretrained_model_name == "tiny"
    else:
        assert cfg.trainer.accelerator == "gpu"
        assert cfg.model.language_model.pretrained_model_name == f"{RANDOM}bert-base-uncased"
        assert cfg.model.train_ds.batch_size == 32


def test_mfu_is_six_n_d_over_time_and_peak() -> None:
    meter = _gpu_train().Meter(warmup=0)
    meter.params, meter.samples, meter.tokens, meter.real_tokens = 100_000_000, 320, 40_960, 20_480
    meter.seen, meter.t0, meter.t1 = 10, 0.0, 0.5
    row = meter.result(peak_tflops=989.5)
    assert row["samples_per_s"] == 640.0
    assert row["tokens_per_s"] == 81_920
    assert row["mfu"] == round(6 * 1e8 * 81_920 / 989.5e12, 4)
    assert row["mfu_real_tokens"] == round(6 * 1e8 * 40_960 / 989.5e12, 4)
