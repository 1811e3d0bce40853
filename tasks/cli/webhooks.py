"""CLI commands: `webhooks install` (MLflow's registry webhook into Airflow's receiver), `access setup`."""

from __future__ import annotations

import json

import typer

webhooks_app = typer.Typer(
    help="MLflow registry webhooks: alias moves reach Airflow's ncbi_champion DAG.", no_args_is_help=True
)


@webhooks_app.command("install")
def install(
    url: str | None = typer.Option(
        None,
        "--url",
        help="The receiver (default NCBI_RETRAIN_MLFLOW_WEBHOOK_URL: "
        "http://127.0.0.1:8080/ncbi-retrain/mlflow-webhook).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Create the webhook `ncbi-retrain-champion` on the MLflow server, or update it (idempotent).

    It sends `model_version_alias.created` / `.deleted`, signed with NCBI_RETRAIN_MLFLOW_WEBHOOK_SECRET
    (the Airflow api-server's receiver checks it with the same secret). Needs an MLflow admin account
    (MLFLOW_TRACKING_USERNAME / _PASSWORD). The MLflow server must allow the URL: https in production;
    a loopback http URL needs MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https and
    MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true in the server's environment (as `make up` sets).
    """
    from tasks.registry.webhooks import install_webhook

    res = install_webhook(url)
    verb = "created" if res["created"] else "updated"
    human = f"{verb}: webhook {res['name']} ({res['id']}) -> {res['url']} on {', '.join(res['events'])}"
    typer.echo(json.dumps(res) if as_json else human)


access_app = typer.Typer(help="Who may move aliases on the registered models.", no_args_is_help=True)


@access_app.command("setup")
def access_setup(
    pipeline_user: str = typer.Option("ncbi-pipeline", "--pipeline-user", help="Gets MANAGE on both models."),
    reader_user: str | None = typer.Option(None, "--reader-user", help="Gets READ on both models."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Create the pipeline (MANAGE) and reader (READ) users on MLflow's auth app; idempotent.

    Passwords from NCBI_RETRAIN_PIPELINE_PASSWORD / NCBI_RETRAIN_READER_PASSWORD; run as an MLflow admin.
    Only the pipeline (and admins) can then move `champion` / `challenger`.
    """
    from tasks.registry.access import setup_access

    res = setup_access(pipeline_user, reader_user)
    human = "; ".join(
        f"{u}: {v['permission']} on {', '.join(res['models'])}" for u, v in res["users"].items()
    )
    typer.echo(json.dumps(res) if as_json else human)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.add_typer(webhooks_app, name="webhooks")
    app.add_typer(access_app, name="access")
