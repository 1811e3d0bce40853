"""Checking MLflow's webhook deliveries: signature, timestamp, payload shape, and which ones are ours."""

from __future__ import annotations

import json
import time

import pytest

from tasks.registry import webhooks
from tasks.registry.webhooks import PayloadInvalid, SignatureInvalid, check_delivery, route, sign
from tasks.vocab import Model

SECRET = "the-shared-secret"
NAME = "ncbi-disease-classifier"


def _signed(body: bytes, secret: str = SECRET, delivery_id: str = "d-1", age_s: int = 0):
    return body, sign(secret, delivery_id, int(time.time()) - age_s, body)


def test_a_delivery_signed_by_mlflows_own_signer_is_accepted():
    from mlflow.webhooks.delivery import _generate_hmac_signature

    body = webhooks.alias_event_body(NAME, "champion", "3")
    ts = str(int(time.time()))
    headers = {
        "X-MLflow-Delivery-Id": "abc",
        "X-MLflow-Timestamp": ts,
        "X-MLflow-Signature": _generate_hmac_signature(SECRET, "abc", ts, body.decode()),
    }
    d = check_delivery(body, headers, SECRET)
    assert (d.delivery_id, d.name, d.alias, d.version, d.action) == ("abc", NAME, "champion", "3", "created")
    assert sign(SECRET, "abc", int(ts), body)["X-MLflow-Signature"] == headers["X-MLflow-Signature"]


def test_header_names_are_case_insensitive():
    body, headers = _signed(webhooks.alias_event_body(NAME, "champion", "1"))
    assert check_delivery(body, {k.lower(): v for k, v in headers.items()}, SECRET).version == "1"


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda b, h: (b, sign("another-secret", "d-1", int(time.time()), b)), id="wrong-secret"),
        pytest.param(lambda b, h: (b.replace(b'"3"', b'"4"'), h), id="body-changed"),
        pytest.param(lambda b, h: (b, h | {"X-MLflow-Delivery-Id": "d-2"}), id="id-changed"),
        pytest.param(lambda b, h: (b, h | {"X-MLflow-Signature": "v1,bm90IGEgc2lnbmF0dXJl"}), id="forged"),
        pytest.param(lambda b, h: (b, h | {"X-MLflow-Signature": "garbage"}), id="garbled-header"),
        pytest.param(lambda b, h: (b, h | {"X-MLflow-Signature": "v1,###"}), id="not-base64"),
        pytest.param(lambda b, h: (b, {k: v for k, v in h.items() if "Signature" not in k}), id="unsigned"),
        pytest.param(lambda b, h: (b, h | {"X-MLflow-Timestamp": "soon"}), id="bad-timestamp"),
    ],
)
def test_forged_or_altered_deliveries_are_refused(tamper):
    body, headers = tamper(*_signed(webhooks.alias_event_body(NAME, "champion", "3")))
    with pytest.raises(SignatureInvalid):
        check_delivery(body, headers, SECRET)


@pytest.mark.parametrize("age_s", [6 * 60, -6 * 60], ids=["stale", "from-the-future"])
def test_a_correctly_signed_delivery_outside_five_minutes_is_refused(age_s):
    body, headers = _signed(webhooks.alias_event_body(NAME, "champion", "3"), age_s=age_s)
    with pytest.raises(SignatureInvalid, match="too"):
        check_delivery(body, headers, SECRET)


def test_within_five_minutes_is_accepted():
    body, headers = _signed(webhooks.alias_event_body(NAME, "champion", "3"), age_s=4 * 60)
    assert check_delivery(body, headers, SECRET).version == "3"


def test_no_secret_refuses_everything():
    body, headers = _signed(webhooks.alias_event_body(NAME, "champion", "3"))
    with pytest.raises(SignatureInvalid, match="no webhook secret"):
        check_delivery(body, headers, "")


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"not json at all", "not JSON"),
        (json.dumps({"entity": "model_version_alias", "action": "created"}).encode(), "timestamp"),
        (
            json.dumps(
                {
                    "entity": "model_version_alias",
                    "action": "created",
                    "timestamp": "t",
                    "data": {"alias": "x"},
                }
            ).encode(),
            "data.name",
        ),
        (
            json.dumps(
                {
                    "entity": "model_version_alias",
                    "action": "created",
                    "timestamp": "t",
                    "data": {"name": NAME, "alias": "champion"},
                }
            ).encode(),
            "data.version",
        ),
    ],
    ids=["not-json", "no-timestamp", "no-name", "created-without-version"],
)
def test_authentic_but_malformed_bodies_are_payload_errors(body, match):
    body, headers = _signed(body)
    with pytest.raises(PayloadInvalid, match=match):
        check_delivery(body, headers, SECRET)


@pytest.mark.parametrize(
    ("name", "alias", "action", "expected"),
    [
        ("ncbi-disease-classifier", "champion", "created", Model.classifier),
        ("ncbi-disease-ner", "champion", "deleted", Model.ner),
        ("ncbi-disease-ner", "challenger", "created", None),
        ("someone-elses-model", "champion", "created", None),
    ],
)
def test_only_the_champion_of_our_two_models_is_routed(name, alias, action, expected):
    version = None if action == "deleted" else "2"
    body, headers = _signed(webhooks.alias_event_body(name, alias, version, action))
    model, why = route(check_delivery(body, headers, SECRET))
    assert model == expected and why


def test_other_events_are_not_alias_moves():
    doc = {"entity": "registered_model", "action": "created", "timestamp": "t", "data": {"name": NAME}}
    body, headers = _signed(json.dumps(doc).encode())
    model, why = route(check_delivery(body, headers, SECRET))
    assert model is None and "not an alias move" in why


def test_the_asset_event_extra_names_the_move_and_the_delivery():
    body, headers = _signed(webhooks.alias_event_body(NAME, "champion", "7"), delivery_id="d-42")
    delivery = check_delivery(body, headers, SECRET)
    extra = webhooks.asset_event_extra(delivery, Model.classifier)
    assert {k: extra[k] for k in ("model", "version", "alias", "action", "delivery_id")} == {
        "model": "classifier",
        "version": "7",
        "alias": "champion",
        "action": "created",
        "delivery_id": "d-42",
    }
    assert extra["timestamp"] == json.loads(body)["timestamp"]
