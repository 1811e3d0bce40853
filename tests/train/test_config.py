"""Config composition (base + profile + dotted overrides) and the fingerprint the DAG compares."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tasks.errors import UsageError
from tasks.training.config import compose, flatten
from tasks.training.fingerprint import config_fingerprint


def test_overrides_use_the_tutorials_dotted_syntax() -> None:
    cfg = compose(
        "classifier",
        "cpu",
        [
            "model.optim.lr=5e-5",
            "trainer.max_epochs=3",
            "model.dataset.max_seq_length=64",
            "trainer.precision=16",
        ],
    )
    assert cfg["model"]["optim"]["lr"] == 5e-5
    assert cfg["trainer"]["max_epochs"] == 3
    assert cfg["model"]["dataset"]["max_seq_length"] == 64
    assert cfg["trainer"]["precision"] == 16


@pytest.mark.parametrize("profile", ["tiny", "cpu", "gpu"])
@pytest.mark.parametrize("model", ["classifier", "ner"])
def test_every_profile_resolves_to_a_complete_nemo_config(model: str, profile: str) -> None:
    cfg = compose(model, profile)
    assert set(cfg) >= {"trainer", "model", "exp_manager"}
    assert cfg["model"]["language_model"]["pretrained_model_name"] != "???"
    assert not [
        k for k, v in flatten(cfg).items() if v == "???" and "file_path" not in k and "data_dir" not in k
    ]
    assert isinstance(cfg["model"]["optim"]["lr"], float)


def test_gpu_profile_is_bf16_on_cuda_with_bert_base() -> None:
    cfg = compose("ner", "gpu")
    assert cfg["trainer"]["accelerator"] == "gpu"
    assert cfg["trainer"]["precision"] == "bf16-mixed"
    assert cfg["model"]["language_model"]["pretrained_model_name"] == "bert-base-uncased"


def test_gpu_profile_builds_a_lightning_trainer_config() -> None:
    """The GPU path cannot run here; its trainer section must still be valid Lightning arguments."""
    import inspect

    from lightning.pytorch import Trainer

    accepted = set(inspect.signature(Trainer.__init__).parameters)
    for model in ("classifier", "ner"):
        assert set(compose(model, "gpu")["trainer"]) <= accepted


def test_tiny_profile_has_no_weight_decay() -> None:
    assert compose("ner", "tiny")["model"]["optim"]["weight_decay"] == 0.0


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("model.optim.learning_rate=1", "unknown config key 'model.optim.learning_rate'"),
        ("trainer.max_epochs", "is not KEY=VALUE"),
        ("model.optim.lr.x=1", "'model.optim.lr' is not a section"),
        ("model.optim.lr=[1,", "not valid YAML"),
    ],
)
def test_bad_override_is_one_clear_sentence(override: str, words: str) -> None:
    with pytest.raises(UsageError, match=words.replace("[", r"\[").replace(".", r"\.")) as exc:
        compose("ner", "cpu", [override])
    assert "\n" not in str(exc.value)


def test_fingerprint_is_stable_and_changes_with_config() -> None:
    base = config_fingerprint("ner", "cpu")
    assert base == config_fingerprint("ner", "cpu", [])
    assert base != config_fingerprint("ner", "cpu", ["model.optim.lr=1e-5"])
    assert base != config_fingerprint("ner", "gpu")
    assert base != config_fingerprint("classifier", "cpu")
    # Setting a value to what it already is does not change the config, so not the fingerprint.
    lr = compose("ner", "cpu")["model"]["optim"]["lr"]
    assert base == config_fingerprint("ner", "cpu", [f"model.optim.lr={lr}"])


def test_fingerprint_imports_nothing_heavy() -> None:
    code = (
        "import sys; from tasks.training.fingerprint import config_fingerprint;"
        "config_fingerprint('ner', 'cpu');"
        "heavy = ('torch', 'nemo', 'lightning', 'omegaconf', 'mlflow', 'transformers');"
        "bad = [m for m in heavy if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
