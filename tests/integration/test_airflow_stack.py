"""The real stack: Airflow's four components on PostgreSQL (LocalExecutor), a run triggered through the
REST API with conf, awaited to success, and its models visible in an MLflow server.

Reuses the `postgres`, `mlflow_server`, `project` and `retrain_env` fixtures of
tests/integration/conftest.py and the helpers of stack_helpers.py. Training is real (tiny profile, one
epoch, on a small slice of the corpus, in the training env via the local launcher).
"""

from __future__ import annotations

import pytest
from stack_helpers import Rest, airflow_env, core_components, running

pytestmark = pytest.mark.integration
RUN_DEADLINE_S = 1200  # a bound for a broken stack, not a performance assertion


@pytest.fixture
def airflow_stack(postgres, retrain_env, tmp_path):
    """api-server + scheduler + dag-processor + triggerer (LocalExecutor) on a fresh database."""
    stack = airflow_env(postgres, tmp_path, "LocalExecutor", **retrain_env)
    with running(stack, core_components(stack), tmp_path):
        yield stack


def test_rest_triggered_run_registers_both_models(airflow_stack, mlflow_server, project):
    rest = Rest(airflow_stack.url, airflow_stack.password)
    rest.wait_dag("ncbi_retrain")  # the dag-processor's first parse
    status, dag = rest("PATCH", "dags/ncbi_retrain", {"is_paused": False})
    assert status == 200 and dag["is_paused"] is False

    conf = {"profile": "tiny", "epochs": 1, "models": "both", "promote": "auto"}
    status, run = rest("POST", "dags/ncbi_retrain/dagRuns", {"logical_date": None, "conf": conf})
    assert status == 200, run
    run_id = run["dag_run_id"]
    assert run["conf"] == conf

    run = rest.wait_run("ncbi_retrain", run_id, RUN_DEADLINE_S)
    states = {k: t["state"] for k, t in rest.task_instances("ncbi_retrain", run_id).items()}
    detail = [p.read_text() for p in (project["repo"] / "runs").glob("*/failure.md")]
    assert run["state"] == "success", (states, detail)
    assert states["classifier.promote"] == states["ner.promote"] == "success"

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)
    for name in ("ncbi-disease-classifier", "ncbi-disease-ner"):
        champion = client.get_model_version_by_alias(name, "champion")
        assert champion.tags["dag_run_id"] == run_id
        # one version per DAG run (the session's MLflow server may hold other tests' runs too)
        versions = client.search_model_versions(f"name='{name}'")
        assert [v.version for v in versions if v.tags.get("dag_run_id") == run_id] == [champion.version]
        assert champion.tags["data_version"] == project["data_version"]
        assert champion.tags["gate"] == "passed"
