"""Config composition with OmegaConf (base + profile + dotted overrides) and the fingerprint the DAG uses."""

from __future__ import annotations

import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from tasks.errors import UsageError
from tasks.training.config import config_fingerprint, resolve_config


def compose(model: str, profile: str, overrides: list[str] | None = None):
    return resolve_config(model, profile, overrides).config


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
    # Only the data paths are left for `train` to fill; NeMo sees them as OmegaConf's required `???`.
    assert all("file_path" in k or "data_dir" in k for k in OmegaConf.missing_keys(cfg))
    assert isinstance(cfg["model"]["optim"]["lr"], float)
    # Interpolations reach NeMo unresolved and resolve there.
    assert OmegaConf.to_container(cfg)["exp_manager"]["name"] == "${name}"
    assert cfg.exp_manager.name == cfg.name


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
        ("modell.optim.lr=1", "unknown config key 'modell'"),
        ("trainer.max_epochs", "is not KEY=VALUE"),
        ("model.optim.lr.x=1", "'model.optim.lr' is not a section"),
        ("model.optim=3", "'model.optim' is a section of the config, not a value"),
        ("model.optim.lr=[1,", "not valid YAML"),
        ("trainer.max_epochs=three", "config key 'trainer.max_epochs': value 'three' of type 'str'"),
        ("trainer.enable_checkpointing=maybe", "config key 'trainer.enable_checkpointing'"),
        ("model.optim.lr=null", "config key 'model.optim.lr'"),
        ("model.decoding=beam", "'model.decoding' is 'beam': input should be 'argmax' or 'viterbi'"),
        ("model.attention=flash", "'model.attention' is 'flash': input should be 'sdpa' or 'eager'"),
        ("model.train_ds.length_groups=0", "'model.train_ds.length_groups' is 0: input should be greater"),
        ("exp_manager.ema.decay=1", "'exp_manager.ema.decay' is 1.0: input should be less than 1"),
    ],
)
def test_bad_override_is_one_clear_sentence(override: str, words: str) -> None:
    with pytest.raises(UsageError, match=words.replace("[", r"\[").replace(".", r"\.")) as exc:
        compose("ner", "cpu", [override])
    assert "\n" not in str(exc.value)


def test_a_classifier_key_is_checked_with_the_classifier() -> None:
    # YAML's true reaches the string-typed key as 'True', which is none of its values
    words = "'model.cls_only_last_layer' is 'True': input should be 'never', 'scoring' or 'always'"
    with pytest.raises(UsageError, match=words):
        compose("classifier", "cpu", ["model.cls_only_last_layer=true"])


def test_lightning_arguments_of_several_types_accept_each() -> None:
    cfg = compose("ner", "cpu", ["trainer.devices=[0,1]", "trainer.val_check_interval=50"])
    assert list(cfg.trainer.devices) == [0, 1] and cfg.trainer.val_check_interval == 50
    assert compose("ner", "cpu", ["trainer.devices=auto"]).trainer.devices == "auto"


def test_fingerprint_is_stable_and_changes_with_config() -> None:
    base = config_fingerprint("ner", "cpu")
    assert base == config_fingerprint("ner", "cpu", [])
    assert base == resolve_config("ner", "cpu").fingerprint
    assert base != config_fingerprint("ner", "cpu", ["model.optim.lr=1e-5"])
    assert base != config_fingerprint("ner", "gpu")
    assert base != config_fingerprint("classifier", "cpu")
    # Setting a value to what it already is does not change the config, so not the fingerprint.
    lr = compose("ner", "cpu")["model"]["optim"]["lr"]
    assert base == config_fingerprint("ner", "cpu", [f"model.optim.lr={lr}"])
    assert base == config_fingerprint("ner", "cpu", [f"model.optim.lr={lr:e}"])  # 2.000000e-04


def test_fingerprint_ignores_comments_and_key_order(tmp_path, monkeypatch) -> None:
    import yaml

    from tasks.training import config

    base = config_fingerprint("ner", "cpu")
    copy = tmp_path / "configs"
    (copy / "profiles").mkdir(parents=True)
    for rel in ("ner.yaml", "profiles/cpu.yaml"):
        doc = yaml.safe_load((config.CONFIG_DIR / rel).read_text())
        # No comments, keys in reverse order at every level.
        flipped = yaml.safe_dump(_reverse(doc), sort_keys=False)
        (copy / rel).write_text(flipped)
    monkeypatch.setattr(config, "CONFIG_DIR", copy)
    config._base_schema.cache_clear()
    try:
        assert config_fingerprint("ner", "cpu") == base
    finally:
        config._base_schema.cache_clear()


def test_profile_with_an_unknown_key_names_the_file_and_field(tmp_path, monkeypatch) -> None:
    import shutil

    from tasks.errors import DataError
    from tasks.training import config

    copy = tmp_path / "configs"
    shutil.copytree(config.CONFIG_DIR, copy)
    prof = copy / "profiles" / "cpu.yaml"
    prof.write_text(prof.read_text().replace("max_epochs: 4", "max_epoch: 4", 1))
    monkeypatch.setattr(config, "CONFIG_DIR", copy)
    config._base_schema.cache_clear()
    try:
        with pytest.raises(DataError, match=r"cpu\.yaml: field classifier\.trainer\.max_epoch is not a key"):
            compose("classifier", "cpu")
    finally:
        config._base_schema.cache_clear()


def _reverse(node):
    return {k: _reverse(v) for k, v in reversed(node.items())} if isinstance(node, dict) else node


def test_fingerprint_imports_nothing_heavy() -> None:
    code = (
        "import sys; from tasks.training.config import config_fingerprint;"
        "config_fingerprint('ner', 'cpu');"
        "heavy = ('torch', 'nemo', 'lightning', 'mlflow', 'transformers');"
        "bad = [m for m in heavy if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("model", ["classifier", "ner"])
def test_the_cpu_profile_trains_in_bf16_and_falls_back_to_fp32_where_the_cpu_lacks_it(model: str) -> None:
    from tasks.training.train import cpu_precision

    cfg = compose(model, "cpu")
    assert cfg.trainer.precision == "bf16-mixed"  # chosen on dev (tasks/training/RESULTS.md)
    assert cpu_precision(cfg, bf16_supported=True) is None
    assert cfg.trainer.precision == "bf16-mixed"
    reason = cpu_precision(cfg, bf16_supported=False)
    assert reason is not None and "no native bf16" in reason
    assert cfg.trainer.precision == "32"
    gpu = compose(model, "gpu")  # a GPU's bf16 is not the CPU's business
    assert cpu_precision(gpu, bf16_supported=False) is None and gpu.trainer.precision == "bf16-mixed"
