"""DAG integrity, as Airflow tests its own examples: import, structure, and nothing heavy at parse time."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"

DAG_FILES = sorted(DAGS.glob("*.py"))
SHARED = DAGS / "ncbi_common"  # what the DAG files share: a package, not a DAG
HEAVY = ("torch", "nemo", "pandas", "mlflow", "great_expectations", "dvc", "transformers", "lightning")


def test_dagbag_has_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert (
        set(dagbag.dag_ids)
        == {p.stem for p in DAG_FILES}
        == {
            "ncbi_retrain",
            "ncbi_promote",
            "ncbi_champion",
        }
    )


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_shape(dagbag, path):
    dag = dagbag.get_dag(path.stem)
    assert dag.dag_id == path.stem
    assert dag.tags and "ncbi-disease" in dag.tags
    assert dag.catchup is False and dag.max_active_runs == 1
    assert dag.doc_md and dag.doc_md.lstrip().startswith(f"# {path.stem}")
    for task in dag.tasks:
        assert task.owner == "ml-platform", task.task_id
        assert task.retries is not None, task.task_id
        assert task.execution_timeout is not None and task.execution_timeout <= timedelta(hours=7), (
            task.task_id
        )


def test_shared_module_is_ignored_and_not_a_dag(dagbag):
    assert "ncbi_common/" in (DAGS / ".airflowignore").read_text().splitlines()
    assert (SHARED / "__init__.py").exists()
    assert not any(Path(d.fileloc).is_relative_to(SHARED) for d in dagbag.dags.values())


def test_retrain_flow_pools_queues_retries_and_assets(dagbag):
    from airflow.providers.standard.operators.bash import BashOperator

    dag = dagbag.get_dag("ncbi_retrain")
    assert dag.schedule == "0 2 * * *"  # nightly by default (NCBI_RETRAIN_SCHEDULE)
    for model in ("classifier", "ner"):
        train = dag.get_task(f"{model}.train")
        rescore = dag.get_task(f"{model}.rescore_champion")
        assert isinstance(train, BashOperator) and isinstance(rescore, BashOperator)  # launcher: local
        for job in (train, rescore):
            assert (job.pool, job.queue) == ("gpu", "gpu")  # Settings.gpu_pool / gpu_queue
        assert train.retries >= 1 and train.retry_exponential_backoff
        assert train.upstream_task_ids == {f"{model}.plan"}  # plan -> train, never before
        assert dag.get_task(f"{model}.plan").upstream_task_ids == {"pull_data", "validate_data"}
        assert dag.get_task(f"{model}.train_result").upstream_task_ids == {f"{model}.plan", f"{model}.train"}
        assert rescore.upstream_task_ids == {f"{model}.champion"}
        gate = dag.get_task(f"{model}.gate")
        assert gate.trigger_rule == "none_failed_min_one_success"  # runs when re-scoring was skipped
        assert gate.upstream_task_ids == {f"{model}.train_result", f"{model}.champion", rescore.task_id}
        promote = dag.get_task(f"{model}.promote")
        assert [a.name for a in promote.outlets] == [f"ncbi-disease-{model}@champion"]
        assert promote.upstream_task_ids == {f"{model}.register", f"{model}.gate", f"{model}.approval"}
        assert promote.trigger_rule == "none_failed_min_one_success"  # runs when the approval skipped
    assert dag.get_task("validate_data").upstream_task_ids == {"pull_data"}
    assert dag.get_task("summarize").trigger_rule == "none_failed"
    assert dag.on_failure_callback is not None
    assert all(t.on_failure_callback for t in dag.tasks)


def test_retrain_flow_asks_for_approval_with_the_providers_hitl_operator(dagbag):
    """promote=approve: between register and promote, the standard provider's HITL operator (Approve /
    Reject, a reason; Reject when nobody answers within NCBI_RETRAIN_APPROVAL_TIMEOUT, default 24 h),
    skipped (tests/dags/test_retrain_runs.py) when its request says no approval is needed."""
    from airflow.providers.standard.operators.hitl import HITLOperator

    dag = dagbag.get_dag("ncbi_retrain")
    for model in ("classifier", "ner"):
        request = dag.get_task(f"{model}.approval_request")
        assert request.upstream_task_ids == {f"{model}.register", f"{model}.gate", f"{model}.train_result"}
        approval = dag.get_task(f"{model}.approval")
        assert isinstance(approval, HITLOperator)
        assert approval.upstream_task_ids == {request.task_id}
        assert approval.options == ["Approve", "Reject"] and approval.defaults == ["Reject"]
        assert approval.response_timeout == timedelta(hours=24)
        assert list(approval.params.keys()) == ["reason"]
        assert approval.params.get_param("reason").value is None  # the form submits without one
        assert f"{model}.approval_request" in approval.subject and "body" in approval.body


def test_retrain_flow_routes_training_to_the_gpu_queue(dagbag):
    """Train and re-score run where the GPU workers listen (Celery queue), everything else on the default."""
    dag = dagbag.get_dag("ncbi_retrain")
    for model in ("classifier", "ner"):
        assert dag.get_task(f"{model}.train").queue == "gpu"  # Settings.gpu_queue's default
        assert dag.get_task(f"{model}.rescore_champion").queue == "gpu"
    others = {t.queue for t in dag.tasks if not t.task_id.endswith((".train", ".rescore_champion"))}
    assert others == {"default"}


def _schema(params) -> dict[str, dict]:
    return {k: params.get_param(k).schema for k in params}


def test_retrain_params_form(dagbag):
    """Every field the form may leave empty is nullable with a None default (the UI's trigger form refuses
    an empty string in a `string` field); enums are drop-downs with the vocabulary's values."""
    from tasks.vocab import RunParams

    params = dagbag.get_dag("ncbi_retrain").params
    assert set(params.keys()) == {
        "data_revision",
        "models",
        "profile",
        "epochs",
        "learning_rate",
        "encoder",
        "max_seq_length",
        "promote",
        "force",
    }
    schema = _schema(params)
    assert schema["models"]["enum"] == ["both", "classifier", "ner"]
    assert schema["profile"]["enum"] == ["tiny", "cpu", "gpu"]
    assert schema["promote"]["enum"] == ["auto", "approve", "never"]
    assert schema["force"]["type"] == "boolean"
    optional = {"data_revision", "epochs", "learning_rate", "encoder", "max_seq_length"}
    for key in optional:
        assert "null" in schema[key]["type"], key
        assert params.get_param(key).value is None, key
    for key in set(params.keys()) - optional:  # the rest always has a valid value
        assert params.get_param(key).value is not None, key
    assert params.validate() == {
        "data_revision": None,
        "models": "both",
        "profile": "cpu",
        "epochs": None,
        "learning_rate": None,
        "encoder": None,
        "max_seq_length": None,
        "promote": "auto",
        "force": False,
    }
    defaults = RunParams.from_params(params.validate())  # what the tasks make of an untouched form
    assert defaults.models is None and defaults.overrides() == [] and defaults.data_revision is None


def test_promote_params_form(dagbag):
    """`reason` is required (no default): the form and the REST API refuse a run without it."""
    from airflow.sdk.definitions.param import ParamValidationError

    dag = dagbag.get_dag("ncbi_promote")
    assert dag.schedule is None
    assert {t.task_id for t in dag.tasks} == {"move_classifier_champion", "move_ner_champion"}
    schema = _schema(dag.params)
    assert schema["version"]["pattern"] == r"^([0-9]+|previous)$"
    assert schema["model"]["enum"] == ["classifier", "ner"]
    assert schema["reason"]["type"] == "string" and schema["reason"]["minLength"] == 3
    assert not dag.params.get_param("reason").has_value
    with pytest.raises(ParamValidationError, match="no default"):
        copy.deepcopy(dag.params).validate()  # what creating a run without `reason` does
    form = copy.deepcopy(dag.params)
    with pytest.raises(ParamValidationError, match="reason"):
        form["reason"] = "no"
    form["reason"] = "bad data"
    assert form.validate()["reason"] == "bad data"


def test_champion_dag_runs_on_either_champion_asset(dagbag):
    from tasks.vocab import MODELS, champion_asset_name, champion_asset_uri

    dag = dagbag.get_dag("ncbi_champion")
    # Either asset (AssetAny, `|`), not both: a move of one model's champion is enough to run.
    condition = dag.timetable.asset_condition
    assert type(condition).__name__ == "AssetAny"
    assert {(a.name, a.uri) for a in condition.objects} == {
        (champion_asset_name(m), champion_asset_uri(m)) for m in MODELS
    }
    for model in ("classifier", "ner"):
        assert dag.get_task(f"{model}.check").upstream_task_ids == set()
        smoke = dag.get_task(f"{model}.smoke")  # the launcher's operator, as the retrain DAG's training
        assert type(smoke).__name__ == "BashOperator" and smoke.upstream_task_ids == {f"{model}.check"}
        assert f"task_ids='{model}.check'" in smoke.bash_command and smoke.pool == "gpu"
        assert dag.get_task(f"{model}.card").upstream_task_ids == {f"{model}.check", f"{model}.smoke"}
    assert dag.on_failure_callback is not None and all(t.on_failure_callback for t in dag.tasks)


_PROBE = r"""
import importlib.util, json, sys, time
import airflow.sdk  # the framework itself is not what is measured
path = sys.argv[1]
best = None
for i in range(3):
    spec = importlib.util.spec_from_file_location(f"dagfile_{i}", path)
    mod = importlib.util.module_from_spec(spec)
    t = time.perf_counter()
    spec.loader.exec_module(mod)
    took = time.perf_counter() - t
    best = took if best is None else min(best, took)
heavy = sorted(m for m in json.loads(sys.argv[2]) if m in sys.modules)
print(json.dumps({"best_s": best, "heavy": heavy}))
"""


@pytest.mark.parametrize(
    "path", [*DAG_FILES, SHARED / "__init__.py", SHARED / "jobs.py"], ids=lambda p: p.name
)
def test_parse_is_light_and_fast(path):
    """No torch / NeMo / pandas / mlflow at module level (DAG files and the shared package), and each file
    parses in <= 0.3 s (best of 3; the DAG folder is on sys.path, as Airflow puts it)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(DAGS)])}
    out = (
        subprocess.run(
            [sys.executable, "-c", _PROBE, str(path), json.dumps(HEAVY)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    got = json.loads(out)
    assert got["heavy"] == [], f"{path.name} imports {got['heavy']} at parse time"
    assert got["best_s"] <= 0.3, f"{path.name} parses in {got['best_s']:.3f} s"


def test_dags_are_ruff_air_clean():
    ruff = Path(sys.executable).with_name("ruff")
    if not ruff.exists():
        pytest.skip("ruff not installed in this env")
    res = subprocess.run(
        [str(ruff), "check", "--select", "AIR", "--no-cache", str(DAGS)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stdout + res.stderr
