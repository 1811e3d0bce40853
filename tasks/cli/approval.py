"""CLI command: `approve` (answer a pending approval of `ncbi_retrain` through Airflow's REST API)."""

from __future__ import annotations

import json

import typer

from tasks.vocab import Model


def approve(
    model: Model = typer.Argument(..., help="classifier or ner."),
    run: str = typer.Option(..., "--run", help="The ncbi_retrain DAG run id (as the Airflow UI shows it)."),
    reject: bool = typer.Option(False, "--reject", help="Reject: the version stays challenger only."),
    reason: str = typer.Option(..., "--reason", help="Why (recorded on the version and in the run summary)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Approve (or --reject) the new champion that an ncbi_retrain run with promote=approve waits on.

    Answers the run's approval task (the UI's required actions) through Airflow's REST API as the user
    NCBI_RETRAIN_AIRFLOW_USER (default admin) with NCBI_RETRAIN_AIRFLOW_PASSWORD, at
    NCBI_RETRAIN_AIRFLOW_URL (default http://127.0.0.1:8080); that user is recorded as the approver.
    Approve moves `champion` when the run's promote task runs next; reject leaves it. Example:

        ncbi-retrain approve classifier --run manual__2026-12-01T02:00:00+00:00 --reason "F1 +0.02, checked"
    """
    from tasks.airflow_api import answer_approval

    res = answer_approval(model, run, not reject, reason)
    verb = "approved" if not reject else "rejected"
    then = "champion moves when the run's promote task runs" if not reject else "champion stays as it is"
    human = f"{verb}: {res['model']} in run {res['dag_run_id']} as {res['by']} ({res['reason']}); {then}"
    typer.echo(json.dumps(res) if as_json else human)


def register(app: typer.Typer) -> None:
    """Add this module's command to the root app."""
    app.command("approve")(approve)
