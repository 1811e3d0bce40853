"""The api-server plugin that receives MLflow's webhooks, on Airflow's real metadata DB (SQLite here).

A delivery for our champion records one Asset event; a forged, stale or malformed one, another
model's, and a redelivery of the same id (also after a restart: the ids live in the DB) record none.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

from tasks.registry import webhooks
from tasks.vocab import MODELS, champion_asset_name, champion_asset_uri

ROOT = Path(__file__).resolve().parents[2]
SECRET = "receiver-test-secret"


def _load_plugin(tag: str):
    """The plugin module as the api-server loads it (a file in the plugins folder), fresh each call."""
    spec = importlib.util.spec_from_file_location(
        f"ncbi_retrain_webhooks_{tag}", ROOT / "plugins" / "ncbi_retrain_webhooks.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def assets(airflow_db):
    """The two champion Assets as the dag-processor would have stored them."""
    from airflow.models.asset import AssetActive, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        for model in MODELS:
            name, uri = champion_asset_name(model), champion_asset_uri(model)
            if session.scalar(select(AssetModel).where(AssetModel.name == name)) is None:
                session.add(AssetModel(name=name, uri=uri))
                session.add(AssetActive(name=name, uri=uri))
    return airflow_db


@pytest.fixture
def client(assets, monkeypatch):
    from fastapi.testclient import TestClient

    monkeypatch.setenv("NCBI_RETRAIN_MLFLOW_WEBHOOK_SECRET", SECRET)
    return TestClient(_load_plugin("test").app)


def _events(model: str) -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(AssetEvent.extra)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.name == champion_asset_name(model))
        )
        return [dict(r) for r in rows]


def _post(
    client, name="ncbi-disease-ner", alias="champion", version="2", delivery_id="d-1", secret=SECRET, age=0
):
    body = webhooks.alias_event_body(name, alias, version)
    headers = webhooks.sign(secret, delivery_id, int(time.time()) - age, body)
    return client.post("/mlflow-webhook", content=body, headers=headers)


def test_a_champion_move_records_one_asset_event_with_the_move(client):
    before = len(_events("ner"))
    res = _post(client, version="5", delivery_id="move-5")
    assert res.status_code == 200 and res.json()["status"] == "recorded", res.text
    events = _events("ner")
    assert len(events) == before + 1
    extra = events[-1]
    assert {k: extra[k] for k in ("model", "version", "alias", "action", "delivery_id")} == {
        "model": "ner",
        "version": "5",
        "alias": "champion",
        "action": "created",
        "delivery_id": "move-5",
    }
    assert extra["timestamp"]


def test_a_redelivery_is_a_duplicate_also_after_a_restart(client, monkeypatch):
    from fastapi.testclient import TestClient

    assert _post(client, name="ncbi-disease-classifier", delivery_id="once").json()["status"] == "recorded"
    count = len(_events("classifier"))
    again = _post(client, name="ncbi-disease-classifier", delivery_id="once")
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    restarted = TestClient(_load_plugin("restarted").app)  # nothing kept in memory
    assert (
        _post(restarted, name="ncbi-disease-classifier", delivery_id="once").json()["status"] == "duplicate"
    )
    assert len(_events("classifier")) == count
    assert (
        _post(restarted, name="ncbi-disease-classifier", delivery_id="twice").json()["status"] == "recorded"
    )


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"secret": "not-the-secret"}, 401),
        ({"age": 6 * 60}, 401),
        ({"name": "someone-elses-model"}, 202),
        ({"alias": "challenger"}, 202),
    ],
    ids=["forged", "stale", "other-model", "other-alias"],
)
def test_refused_and_ignored_deliveries_record_nothing(client, kwargs, status):
    before = {m: len(_events(m)) for m in MODELS}
    res = _post(client, delivery_id=f"refused-{status}-{len(kwargs)}", **kwargs)
    assert res.status_code == status, res.text
    assert {m: len(_events(m)) for m in MODELS} == before


def test_a_malformed_body_is_422_and_records_nothing(client):
    before = len(_events("ner"))
    body = b'{"entity": "model_version_alias", "action": "created"}'
    res = client.post(
        "/mlflow-webhook", content=body, headers=webhooks.sign(SECRET, "m-1", int(time.time()), body)
    )
    assert res.status_code == 422 and "timestamp" in res.json()["detail"]
    assert len(_events("ner")) == before


def test_without_a_secret_the_receiver_refuses_with_503(assets, monkeypatch):
    from fastapi.testclient import TestClient

    monkeypatch.delenv("NCBI_RETRAIN_MLFLOW_WEBHOOK_SECRET", raising=False)
    res = _post(TestClient(_load_plugin("unconfigured").app), delivery_id="no-secret")
    assert res.status_code == 503


def test_the_plugin_mounts_the_app_outside_airflows_reserved_prefixes():
    from airflow.api_fastapi.app import RESERVED_URL_PREFIXES

    plugin = _load_plugin("mount").NcbiRetrainWebhooks
    (mount,) = plugin.fastapi_apps
    assert mount["url_prefix"] == "/ncbi-retrain"
    assert not any(mount["url_prefix"].startswith(p) for p in RESERVED_URL_PREFIXES)
