"""MLflow registry webhooks: installing ours on the tracking server, and checking a delivery from it.

What MLflow 3.17.2 sends (mlflow/webhooks/delivery.py): a POST whose body is
`{"entity": "model_version_alias", "action": "created"|"deleted", "timestamp": ISO-8601, "data": {"name",
"alias"[, "version"]}}`, with the headers `X-MLflow-Delivery-Id` (a UUID per delivery),
`X-MLflow-Timestamp` (Unix seconds) and `X-MLflow-Signature` = `v1,<base64 HMAC-SHA256 of
"{delivery_id}.{timestamp}.{body}">` keyed with the secret's UTF-8 bytes. That is the Standard Webhooks
scheme under other header names, so the check is the `standardwebhooks` library's (constant-time
compare, timestamp tolerance 5 minutes): a stale or future delivery fails like a forged one.

No Airflow here: the receiver plugin (plugins/ncbi_retrain_webhooks.py) calls `check_delivery`, then
records what `asset_event_extra` returns as an Asset event.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from tasks.errors import UsageError
from tasks.registry.service import client, mlflow_call
from tasks.settings import get_settings
from tasks.vocab import MODELS, Alias, Model

WEBHOOK_NAME = "ncbi-retrain-champion"
EVENTS = ("model_version_alias.created", "model_version_alias.deleted")
STALE_AFTER_S = 300  # the standardwebhooks tolerance; the receiver's de-duplication window builds on it


class SignatureInvalid(Exception):
    """The delivery is not signed with our secret, or its timestamp is stale (HTTP 401)."""


class PayloadInvalid(Exception):
    """The delivery is authentic but its body is not an MLflow alias event (HTTP 422)."""


class _AliasData(BaseModel):  # ModelVersionAlias{Created,Deleted}Payload
    model_config = ConfigDict(extra="ignore")
    name: str
    alias: str
    version: str | None = None


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore")
    entity: str
    action: str
    timestamp: str
    data: dict[str, Any]


class Delivery(BaseModel):
    """One authenticated webhook delivery from MLflow."""

    model_config = ConfigDict(frozen=True)

    delivery_id: str
    sent_at: int  # X-MLflow-Timestamp, Unix seconds
    timestamp: str  # the payload's ISO-8601 time of the event
    entity: str
    action: str
    name: str | None = None
    alias: str | None = None
    version: str | None = None


def _headers() -> tuple[str, str, str]:
    from mlflow.webhooks.constants import (
        WEBHOOK_DELIVERY_ID_HEADER,
        WEBHOOK_SIGNATURE_HEADER,
        WEBHOOK_TIMESTAMP_HEADER,
    )

    return WEBHOOK_DELIVERY_ID_HEADER, WEBHOOK_TIMESTAMP_HEADER, WEBHOOK_SIGNATURE_HEADER


def check_delivery(body: bytes, headers: Mapping[str, str], secret: str) -> Delivery:
    """Authenticate a delivery (signature + timestamp), then parse its body.

    Raises SignatureInvalid before anything of the body is trusted, PayloadInvalid for an authentic
    body that is not an alias event of MLflow's shape.
    """
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    if not secret:
        raise SignatureInvalid("no webhook secret is configured: every delivery is refused")
    id_h, ts_h, sig_h = _headers()
    lower = {k.lower(): v for k, v in headers.items()}
    delivery_id, sent_at, signature = (lower.get(h.lower(), "") for h in (id_h, ts_h, sig_h))
    standard = {"webhook-id": delivery_id, "webhook-timestamp": sent_at, "webhook-signature": signature}
    try:
        # MLflow keys the HMAC with the secret's UTF-8 bytes (bytes are used as the key as they are).
        Webhook(secret.encode("utf-8")).verify(body, standard, json_parse=False)
    except (WebhookVerificationError, ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise SignatureInvalid(f"delivery {delivery_id or '(no id)'} refused: {exc}") from None
    try:
        doc = _Payload.model_validate(json.loads(body))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PayloadInvalid(f"delivery {delivery_id}: body is not JSON ({exc})") from None
    except ValidationError as exc:
        raise PayloadInvalid(f"delivery {delivery_id}: {_first_error(exc)}") from None
    fields: dict[str, Any] = {}
    if doc.entity == "model_version_alias":
        try:
            data = _AliasData.model_validate(doc.data)
        except ValidationError as exc:
            raise PayloadInvalid(f"delivery {delivery_id}: data.{_first_error(exc)}") from None
        if doc.action == "created" and not data.version:
            raise PayloadInvalid(f"delivery {delivery_id}: data.version is missing for an alias creation")
        fields = data.model_dump()
    return Delivery(
        delivery_id=delivery_id,
        sent_at=int(float(sent_at)),
        timestamp=doc.timestamp,
        entity=doc.entity,
        action=doc.action,
        **fields,
    )


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return f"{'.'.join(str(p) for p in err['loc'])}: {err['msg'][:1].lower()}{err['msg'][1:]}"


def route(delivery: Delivery) -> tuple[Model | None, str]:
    """Which of our models the delivery concerns (None: ignore it), with the reason in one sentence."""
    if delivery.entity != "model_version_alias" or delivery.action not in ("created", "deleted"):
        return None, f"event {delivery.entity}.{delivery.action} is not an alias move"
    model = next((m for m in MODELS if m.registered_name == delivery.name), None)
    if model is None:
        return None, f"registered model {delivery.name!r} is not one of ours"
    if delivery.alias != Alias.champion:
        return None, f"alias {delivery.alias!r} of {delivery.name} is not {Alias.champion}"
    return model, f"{delivery.alias} of {delivery.name} {delivery.action}"


def asset_event_extra(delivery: Delivery, model: Model) -> dict[str, Any]:
    """The extra of the Asset event recorded for an accepted delivery."""
    return {
        "model": model.value,
        "version": delivery.version,
        "alias": delivery.alias,
        "action": delivery.action,
        "delivery_id": delivery.delivery_id,
        "timestamp": delivery.timestamp,
        "source": "mlflow-webhook",
    }


# ------------------------------------------------------------------------------------- install
def install_webhook(url: str | None = None, secret: str | None = None) -> dict[str, Any]:
    """Create our webhook on the MLflow server, or update it in place (idempotent: one per server).

    `url` defaults to `Settings.mlflow_webhook_url`, `secret` to `Settings.mlflow_webhook_secret`
    (NCBI_RETRAIN_MLFLOW_WEBHOOK_SECRET). Needs an MLflow admin (MLflow restricts webhooks to admins).
    """
    settings = get_settings()
    url = url or settings.mlflow_webhook_url
    if secret is None and settings.mlflow_webhook_secret is not None:
        secret = settings.mlflow_webhook_secret.get_secret_value()
    if not secret:
        raise UsageError(
            "no webhook secret: set NCBI_RETRAIN_MLFLOW_WEBHOOK_SECRET (the Airflow receiver needs the same)"
        )
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"webhook url {url!r} is not an http(s) URL")
    mlflow_client = client()
    description = "Alias moves of the ncbi-disease models, verified by Airflow's ncbi_champion DAG."
    with mlflow_call("list the webhooks"):
        ours = [w for w in _all_webhooks(mlflow_client) if w.name == WEBHOOK_NAME]
    if not ours:
        with mlflow_call(f"create the webhook {WEBHOOK_NAME}"):
            hook = mlflow_client.create_webhook(
                name=WEBHOOK_NAME, url=url, events=list(EVENTS), description=description, secret=secret
            )
        created = True
    else:
        with mlflow_call(f"update the webhook {WEBHOOK_NAME}"):
            for extra in ours[1:]:  # a second one would deliver every move twice
                mlflow_client.delete_webhook(extra.webhook_id)
            hook = mlflow_client.update_webhook(
                ours[0].webhook_id,
                url=url,
                events=list(EVENTS),
                description=description,
                secret=secret,
                status="ACTIVE",
            )
        created = False
    return {
        "id": hook.webhook_id,
        "name": hook.name,
        "url": hook.url,
        "events": [str(e) for e in hook.events],
        "status": str(hook.status),
        "created": created,
    }


def _all_webhooks(mlflow_client: Any) -> list[Any]:
    found, token = [], None
    while True:
        page = mlflow_client.list_webhooks(max_results=100, page_token=token)
        found += list(page)
        token = page.token
        if not token:
            return found


def sign(secret: str, delivery_id: str, sent_at: int, body: bytes) -> dict[str, str]:
    """The headers MLflow would send for `body` (tests and `webhooks test` use it; MLflow's own
    signer is private, so this goes through the same standardwebhooks library)."""
    from datetime import UTC, datetime

    from standardwebhooks.webhooks import Webhook

    id_h, ts_h, sig_h = _headers()
    signature = Webhook(secret.encode("utf-8")).sign(
        delivery_id, datetime.fromtimestamp(sent_at, UTC), body.decode("utf-8")
    )
    return {"Content-Type": "application/json", id_h: delivery_id, ts_h: str(sent_at), sig_h: signature}


def alias_event_body(name: str, alias: str, version: str | None, action: str = "created") -> bytes:
    """A body of MLflow's shape for an alias move (for tests and for checking a receiver by hand)."""
    from datetime import UTC, datetime

    data: dict[str, Any] = {"name": name, "alias": alias}
    if version is not None:
        data["version"] = str(version)
    doc = {
        "entity": "model_version_alias",
        "action": action,
        "timestamp": datetime.now(UTC).isoformat(),
        "data": data,
    }
    return json.dumps(doc).encode()
