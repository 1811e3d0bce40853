"""The tiny profile end to end on a slice of the real corpus: train (CLI, MLflow in a temp SQLite store),
the metrics.json contract, restore in a fresh process without the encoder directory, evaluate through a
models:/ URI, predict, the pyfunc loaded back, and the same metrics for the same seed."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
import yaml
from train_helpers import run_cli

TASKS = ("classifier", "ner")


@pytest.mark.parametrize("task", TASKS)
def test_train_writes_the_outputs_and_the_json_line(trained: dict, task: str) -> None:
    out, result = trained[task]["out"], trained[task]["result"]
    for name in ("model.nemo", "metrics.json", "config.yaml", "confusion_matrix.png", "per_class_f1.png"):
        assert (out / name).is_file(), name
    assert list((out / "exp").rglob("events.out.tfevents.*")), "no TensorBoard logs"
    assert not list(out.rglob("*.ckpt")), "exp_manager checkpoints must not be kept"
    assert set(result) >= {
        "run_id",
        "model_uri",
        "metrics",
        "artifacts",
        "data_version",
        "config_fingerprint",
        "git_commit",
    }
    assert set(result["artifacts"]) == {"nemo", "metrics", "predictions", "config", "tensorboard"}
    assert all(Path(p).exists() for p in result["artifacts"].values())
    assert result["model_uri"].startswith(("models:/", "runs:/"))
    assert "epoch 1/3" in trained[task]["stderr"] and "ETA" in trained[task]["stderr"]  # progress in the log


@pytest.mark.parametrize("task", TASKS)
def test_metrics_json_follows_the_contract(trained: dict, data_slice: Path, task: str) -> None:
    doc = json.loads((trained[task]["out"] / "metrics.json").read_text())
    assert doc["schema"] == 1 and doc["task"] == task and doc["split"] == "test"
    assert doc["gate_metric"] == {"classifier": "macro_f1", "ner": "entity_f1"}[task]
    assert doc["gate_metric"] in doc["metrics"]
    assert doc["behaviour"] and {"text", "expected", "predicted", "passed"} <= set(doc["behaviour"][0])
    if task == "classifier":
        ids = (data_slice / "tc3" / "test.ids").read_text().split()
        assert [it["id"] for it in doc["items"]] == ids  # PMIDs, in split order
        assert {"gold", "pred"} <= set(doc["items"][0])
        assert len(doc["metrics"]["confusion_matrix"]) == 3 and doc["metrics"]["labels"] == [0, 1, 2]
        assert set(doc["metrics"]["per_class"]) == {"0", "1", "2"}
    else:
        n = len((data_slice / "ner3" / "text_test.txt").read_text().splitlines())
        assert [it["id"] for it in doc["items"]] == [str(i) for i in range(n)]
        gold = sum(it["tp"] + it["fn"] for it in doc["items"])
        assert gold == doc["metrics"]["entities_gold"] > 0
        assert {"entity_precision", "entity_recall", "token_accuracy", "token_macro_f1"} <= set(
            doc["metrics"]
        )


def test_nemo_scratch_files_never_land_in_the_data_dir(trained: dict, data_slice: Path) -> None:
    """NeMo writes label maps, stats and caches beside its inputs: only its scratch copy may get them."""
    found = {str(p.relative_to(data_slice)) for p in data_slice.rglob("*")}
    expected = {"tc3", "ner3"}
    for split in ("train", "dev", "test"):
        expected |= {f"tc3/{split}.tsv", f"tc3/{split}.ids"}
        expected |= {f"ner3/text_{split}.txt", f"ner3/labels_{split}.txt"}
    assert found == expected


@pytest.mark.parametrize("task", TASKS)
def test_mlflow_run_has_tags_params_curves_and_artifacts(trained: dict, mlflow_env: dict, task: str) -> None:
    import os

    os.environ["MLFLOW_TRACKING_URI"] = mlflow_env["MLFLOW_TRACKING_URI"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_env["MLFLOW_TRACKING_URI"])
    run = client.get_run(trained[task]["result"]["run_id"])
    tags = run.data.tags
    assert {"data_version", "git_commit", "profile", "task", "config_fingerprint", "image"} <= set(tags)
    assert tags["profile"] == "tiny" and tags["task"] == task
    assert tags["config_fingerprint"] == trained[task]["result"]["config_fingerprint"]
    assert run.data.params["model.optim.lr"] == "0.002"
    assert run.data.params["trainer.max_epochs"] == "3"
    curve = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in curve] == [1, 2, 3]
    gate = "macro_f1" if task == "classifier" else "entity_f1"
    assert len(client.get_metric_history(run.info.run_id, f"val_{gate}")) == 3
    assert f"test_{gate}" in run.data.metrics
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "model.nemo", "config.yaml", "dev_history.json", "plots"} <= top
    nemo = (trained[task]["out"] / "model.nemo").read_bytes()
    assert tags["nemo_sha256"] == hashlib.sha256(nemo).hexdigest()
    assert {a.path for a in client.list_artifacts(run.info.run_id, "plots")} == {
        "plots/confusion_matrix.png",
        "plots/per_class_f1.png",
    }
    root = Path(mlflow_env["NCBI_RETRAIN_MLFLOW_ARTIFACT_ROOT"])
    assert run.info.artifact_uri.startswith(root.resolve().as_uri())  # a local dir, not the CWD


def test_pyfunc_loads_back_and_predicts_in_a_fresh_process(
    trained: dict, train_python: Path, mlflow_env: dict
) -> None:
    code = (
        "import json, sys, mlflow\n"
        "out = {}\n"
        "for task, uri in json.loads(sys.argv[1]).items():\n"
        "    texts = ['Germline mutations in BRCA1 predispose to breast cancer .',\n"
        "             'Huntington disease is inherited .']\n"
        "    df = mlflow.pyfunc.load_model(uri).predict(texts)\n"
        "    out[task] = df.to_dict(orient='records')\n"
        "print(json.dumps(out))\n"
    )
    uris = json.dumps({t: trained[t]["result"]["model_uri"] for t in TASKS})
    proc = subprocess.run(
        [str(train_python), "-c", code, uris], capture_output=True, text=True, env=mlflow_env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(out["classifier"]) == 2 and out["classifier"][0]["label"] in (0, 1, 2)
    probs = [out["classifier"][0][k] for k in ("p_cancer", "p_neurological", "p_other")]
    assert sum(probs) == pytest.approx(1.0, abs=1e-5)
    assert len(out["ner"][0]["tags"].split()) == 9  # one tag per whitespace token
    assert isinstance(json.loads(out["ner"][0]["entities"]), list)


def test_the_logged_pyfunc_requires_what_ner_serving_imports(
    trained: dict, train_python: Path, mlflow_env: dict
) -> None:
    """A model server installs the logged requirements.txt only: each distribution that NER serving imports
    beyond NeMo's stack (Ab3P, pytorch-crf, seqeval), seen in a fresh process after a real prediction, is
    listed at the version the model was trained with."""
    code = (
        "import json, sys, mlflow, importlib.metadata as md\n"
        "uri = sys.argv[1]\n"
        "mlflow.pyfunc.load_model(uri).predict(['Two patients with SJS recovered .'])\n"
        "reqs = open(mlflow.pyfunc.get_model_dependencies(uri)).read().split()\n"
        "dists = md.packages_distributions()\n"
        "used = {m: f'{dists[m][0]}=={md.version(dists[m][0])}' for m in ('pyab3p', 'torchcrf', 'seqeval')\n"
        "        if m in sys.modules}\n"
        "print(json.dumps({'used': used, 'reqs': reqs}))\n"
    )
    proc = subprocess.run(
        [str(train_python), "-c", code, trained["ner"]["result"]["model_uri"]],
        capture_output=True,
        text=True,
        env=mlflow_env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(out["used"]) == {"pyab3p", "torchcrf", "seqeval"}
    assert set(out["used"].values()) <= set(out["reqs"])


@pytest.mark.parametrize("task", TASKS)
def test_nemo_restores_after_the_encoder_dir_is_gone(
    trained: dict, train_python: Path, mlflow_env: dict, tmp_path: Path, task: str
) -> None:
    cfg = yaml.safe_load((trained[task]["out"] / "config.yaml").read_text())
    encoder = Path(cfg["model"]["language_model"]["pretrained_model_name"])
    assert not encoder.exists()  # the tiny encoder was built in a scratch dir that train removed
    moved = tmp_path / "elsewhere.nemo"  # and the artefact does not depend on where it lies
    moved.write_bytes((trained[task]["out"] / "model.nemo").read_bytes())
    text = "Germline mutations in BRCA1 predispose to breast cancer ."
    proc = run_cli(train_python, ["predict", task, "--model", str(moved), "--json", text], mlflow_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = json.loads(proc.stdout.strip().splitlines()[-1])["predictions"][0]
    if task == "classifier":
        assert row["label"] in (0, 1, 2) and len(row["probabilities"]) == 3
    else:
        assert len(row["tags"]) == len(text.split()) and set(row["tags"]) <= {"B", "I", "O"}


@pytest.mark.parametrize("task", TASKS)
def test_evaluate_a_models_uri_reproduces_the_training_metrics(
    trained: dict, train_python: Path, data_slice: Path, mlflow_env: dict, tmp_path: Path, task: str
) -> None:
    out = tmp_path / "metrics.json"
    uri = trained[task]["result"]["model_uri"]
    proc = run_cli(
        train_python,
        ["evaluate", task, "--model", uri, "--data", str(data_slice), "--out", str(out)],
        mlflow_env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    train_doc = json.loads((trained[task]["out"] / "metrics.json").read_text())
    assert doc["model"] == uri
    assert doc["metrics"] == train_doc["metrics"]
    assert doc["items"] == train_doc["items"]


def test_same_seed_same_cpu_same_metrics(trained: dict, data_slice: Path, tmp_path: Path) -> None:
    from tasks.training.train import train

    result = train("ner", data_slice, tmp_path / "again", "tiny", [], use_mlflow=False)
    first = json.loads((trained["ner"]["out"] / "metrics.json").read_text())
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again["metrics"] == first["metrics"]
    assert again["items"] == first["items"]
    assert result["config_fingerprint"] == trained["ner"]["result"]["config_fingerprint"]


@pytest.mark.parametrize("task", TASKS)
def test_the_per_epoch_dev_pass_scores_what_the_full_scoring_does(
    trained: dict, data_slice: Path, task: str
) -> None:
    """Each epoch's dev pass computes the gate metric alone (`gate_score`); it must be the full
    scoring's gate metric for the same model and split (the decoder's spans scored by both paths;
    the abbreviation step rarely fires on this slice, and both share `_predict` for it)."""
    from tasks.training.artifact import restore_nemo
    from tasks.training.data import read_split
    from tasks.training.evaluate import gate_score, score
    from tasks.vocab import GATE_METRIC

    model = restore_nemo(trained[task]["out"] / "model.nemo", task)
    if task == "ner":  # the session's tiny tagger finds no entity on the slice: score fixed random
        import torch  # per-subword logits instead, so both paths decode and score many spans

        table = torch.randn(
            model.tokenizer.vocab_size, len(model._cfg.label_ids), generator=torch.Generator().manual_seed(0)
        )
        model.forward = lambda input_ids, **_: table[input_ids]
    dev = read_split(task, data_slice, "dev")
    full = score(model, task, dev)[0][GATE_METRIC[task]]
    assert 0.0 < full < 1.0  # a real, non-degenerate score: equality below means something
    assert gate_score(model, task, dev) == full
