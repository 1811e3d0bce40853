"""Airflow plugin: the receiver of MLflow's registry webhooks, inside the api-server (nothing new to run).

`POST /ncbi-retrain/mlflow-webhook` (set `AIRFLOW__CORE__PLUGINS_FOLDER` to this folder):

| delivery | answer | Asset event |
|---|---|---|
| signature or timestamp wrong (forged, or older than 5 min) | 401 | none |
| authentic, body not MLflow's alias-event shape | 422 | none |
| another model, another alias, another event | 202, ignored | none |
| a delivery id already recorded (MLflow's retry, a replay) | 200, duplicate | none |
| `champion` of ncbi-disease-classifier / -ner set or deleted | 200, recorded | one on `NAME@champion` |

The checks themselves are `tasks.registry.webhooks` (no Airflow there); this file is the Airflow side:
it records the Asset event through Airflow's own `asset_manager.register_asset_change` (what the REST API's
`POST /api/v2/assets/events` calls), which queues the `ncbi_champion` DAG.

De-duplication: the Asset event itself carries the delivery id in its extra, and a delivery older than
5 minutes is refused as stale, so looking for the id among the asset's events of the last 10 minutes
(under a row lock on the asset) catches every redelivery, also after a restart, with no table or
Variable of our own to grow and prune.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from airflow.plugins_manager import AirflowPlugin
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

log = logging.getLogger(__name__)

app = FastAPI(
    title="ncbi-retrain MLflow webhook receiver",
    description="Turns MLflow alias moves of the ncbi-disease models into Airflow Asset events.",
    docs_url=None,
    redoc_url=None,
)


@app.post("/mlflow-webhook")
async def mlflow_webhook(request: Request) -> JSONResponse:
    """Verify, de-duplicate and record one MLflow webhook delivery."""
    body = await request.body()
    status, doc = await run_in_threadpool(receive, body, dict(request.headers))
    return JSONResponse(doc, status_code=status)


def receive(body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """The whole decision for one delivery: (HTTP status, JSON answer)."""
    from tasks.registry import webhooks
    from tasks.settings import Settings

    secret = Settings().mlflow_webhook_secret  # read per delivery: a rotated secret needs no restart
    if secret is None:
        log.error("NCBI_RETRAIN_MLFLOW_WEBHOOK_SECRET is not set: refusing every MLflow delivery")
        return 503, {"status": "unconfigured", "detail": "the receiver has no webhook secret"}
    try:
        delivery = webhooks.check_delivery(body, headers, secret.get_secret_value())
    except webhooks.SignatureInvalid as exc:
        log.warning("MLflow webhook: %s", exc)
        return 401, {"status": "refused", "detail": "bad signature or stale timestamp"}
    except webhooks.PayloadInvalid as exc:
        log.warning("MLflow webhook: %s", exc)
        return 422, {"status": "malformed", "detail": str(exc)}
    model, why = webhooks.route(delivery)
    if model is None:
        log.info("MLflow webhook %s ignored: %s", delivery.delivery_id, why)
        return 202, {"status": "ignored", "detail": why, "delivery_id": delivery.delivery_id}
    return record(webhooks.asset_event_extra(delivery, model), model.value)


def record(extra: dict[str, Any], model: str) -> tuple[int, dict[str, Any]]:
    """Record the Asset event unless this delivery id was recorded already."""
    from datetime import UTC, datetime, timedelta

    from airflow.assets.manager import asset_manager
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from airflow.utils.sqlalchemy import with_row_locks
    from sqlalchemy import select

    from tasks.registry.webhooks import STALE_AFTER_S
    from tasks.vocab import champion_asset_name, champion_asset_uri

    name, uri = champion_asset_name(model), champion_asset_uri(model)
    delivery_id = extra["delivery_id"]
    with create_session() as session:
        query = select(AssetModel).where(AssetModel.name == name, AssetModel.uri == uri)
        asset = session.scalar(with_row_locks(query, session=session, key_share=False))
        if asset is None:  # no DAG declares it yet: MLflow retries a 503
            return 503, {"status": "unknown-asset", "detail": f"Airflow does not know the Asset {name} yet"}
        since = datetime.now(UTC) - timedelta(seconds=2 * STALE_AFTER_S + 60)
        recent = session.scalars(
            select(AssetEvent.extra).where(AssetEvent.asset_id == asset.id, AssetEvent.timestamp >= since)
        )
        if any((e or {}).get("delivery_id") == delivery_id for e in recent):
            log.info("MLflow webhook %s: duplicate delivery, already recorded", delivery_id)
            return 200, {"status": "duplicate", "delivery_id": delivery_id}
        event = asset_manager.register_asset_change(
            asset=asset, extra=extra, source_is_api=True, session=session
        )
        if event is None:
            return 503, {"status": "unknown-asset", "detail": f"Airflow does not know the Asset {name} yet"}
        event_id = event.id
    log.info("MLflow webhook %s: Asset event %s on %s (%s)", delivery_id, event_id, name, extra)
    return 200, {"status": "recorded", "delivery_id": delivery_id, "asset": name, "asset_event_id": event_id}


class NcbiRetrainWebhooks(AirflowPlugin):
    """Mounts the receiver at /ncbi-retrain in the api-server."""

    name = "ncbi_retrain_webhooks"
    fastapi_apps: ClassVar[list[dict[str, Any]]] = [
        {"app": app, "url_prefix": "/ncbi-retrain", "name": "ncbi-retrain MLflow webhooks"}
    ]
