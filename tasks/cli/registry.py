"""CLI commands: gate, register, promote, rollback, models list / history, lineage.

MLflow is imported inside the command bodies (through `tasks.registry`), so `--help` stays fast.
The store is `MLFLOW_TRACKING_URI` (or `NCBI_RETRAIN_MLFLOW_TRACKING_URI`); an unreachable server
fails in seconds with exit code 3.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from tasks.errors import GateFailed, UsageError
from tasks.vocab import MODELS

MODEL_HELP = "classifier or ner (or a full registered model name)."


def _emit(obj: Any, as_json: bool, human: str) -> None:
    typer.echo(json.dumps(obj, default=str) if as_json else human)


def _model_arg(model: str) -> str:
    if model not in MODELS:
        raise UsageError(f"unknown model {model!r}: expected classifier or ner")
    return model


def gate(
    model: str = typer.Argument(..., help="classifier or ner."),
    candidate: Path = typer.Option(..., "--candidate", help="The candidate's metrics.json (test split)."),
    champion: str = typer.Option(
        ..., "--champion", help="The champion's metrics.json on the same split and data version, or 'none'."
    ),
    out: Path = typer.Option(..., "--out", help="Decision JSON to write; <stem>.md and plots go beside it."),
    profile: str = typer.Option(
        "cpu",
        "--profile",
        envvar="NCBI_RETRAIN_PROFILE",
        help="tiny, cpu or gpu: picks the floor and checks.",
    ),
    policy: Path | None = typer.Option(None, "--policy", help="Gate policy YAML (default tasks/gates.yaml)."),
    exit_zero: bool = typer.Option(False, "--exit-zero", help="Exit 0 even when the gate fails."),
    as_json: bool = typer.Option(False, "--json", help="Print the decision as one JSON object."),
) -> None:
    """Decide whether a candidate may replace the champion; exit 4 when the gate fails.

    Checks: the floor on the gate metric (classifier macro-F1, NER strict entity F1); a paired bootstrap
    of candidate minus champion over test items (non-inferior or superior, per tasks/gates.yaml); per-class
    F1 drops (classifier); behavioural sentences (cpu/gpu profiles). With `--champion none` the floor and
    the behavioural checks decide. Example:

        ncbi-retrain gate classifier --candidate runs/c/metrics.json --champion none --out gate/c.json
    """
    from tasks.gates import decide, load_metrics, load_policy, write_decision

    kind = _model_arg(model)
    cand = load_metrics(candidate)
    champ = None if champion.lower() == "none" else load_metrics(Path(champion))
    decision = decide(kind, cand, champ, profile, load_policy(kind, policy))
    path = write_decision(decision, out)
    doc = decision.to_dict()
    doc.pop("bootstrap_diffs", None)
    doc["out"] = str(path)
    human = [f"gate {decision.gate}: {decision.reason}"]
    human += [f"  {'ok  ' if c.passed else 'FAIL'} {c.name}: {c.detail}" for c in decision.checks]
    human.append(f"decision: {path} (report {path.with_suffix('.md')})")
    _emit(doc, as_json, "\n".join(human))
    if not decision.passed and not exit_zero:
        raise GateFailed(f"gate failed for {kind} (decision {path}, report {path.with_suffix('.md')})")


def register_cmd(
    model: str = typer.Argument(..., help=MODEL_HELP),
    run_id: str = typer.Option(..., "--run-id", help="The MLflow run whose pyfunc `model` is registered."),
    decision: Path | None = typer.Option(None, "--decision", help="Gate decision JSON written by `gate`."),
    tag: list[str] = typer.Option([], "--tag", help="Extra version tag KEY=VALUE (repeatable)."),
    as_json: bool = typer.Option(
        False, "--json", help="Print one JSON object with at least name and version."
    ),
) -> None:
    """Register a run's model as a version with lineage and gate tags; it gets alias `challenger`.

    Idempotent: registering the same run again returns the same version. `champion` never moves here.
    """
    from tasks.gates import load_decision
    from tasks.registry import register_run

    tags = {}
    for item in tag:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--tag {item!r} is not KEY=VALUE")
        tags[key] = value
    dec = load_decision(decision) if decision else None
    rv = register_run(model, run_id, dec, tags or None)
    state = "registered" if rv.created else "already registered"
    _emit(
        rv.to_dict(),
        as_json,
        f"{state}: {rv.name} version {rv.version} (run {rv.run_id}, gate {rv.tags.get('gate')}, "
        f"aliases {', '.join(rv.aliases) or '-'})",
    )


def promote_cmd(
    name: str = typer.Argument(..., help=MODEL_HELP),
    version: str = typer.Argument(..., help="The version to make champion."),
    reason: str = typer.Option(..., "--reason", help="Why (recorded in the alias history)."),
    actor: str | None = typer.Option(
        None, "--actor", help="Who (default: NCBI_RETRAIN_ACTOR or the OS user)."
    ),
    force: bool = typer.Option(False, "--force", help="Promote even a version whose gate failed (recorded)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Move alias `champion` to VERSION after checking its .nemo (present, a readable tar, sha256)."""
    from tasks.registry import promote

    res = promote(name, version, reason, actor, force=force)
    verb = "promoted" if res["moved"] else "already champion"
    _emit(res, as_json, f"{verb}: {res['name']} version {res['version']} (was {res['from'] or 'none'})")


def rollback_cmd(
    name: str = typer.Argument(..., help=MODEL_HELP),
    to: str | None = typer.Option(
        None, "--to", help="Target version (default: the champion before this one)."
    ),
    reason: str = typer.Option(..., "--reason", help="Why (recorded in the alias history)."),
    actor: str | None = typer.Option(
        None, "--actor", help="Who (default: NCBI_RETRAIN_ACTOR or the OS user)."
    ),
    force: bool = typer.Option(False, "--force", help="Allow a target whose gate failed (recorded)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Move alias `champion` back to an earlier version; the move is recorded."""
    from tasks.registry import rollback

    res = rollback(name, to, reason, actor, force=force)
    _emit(res, as_json, f"rolled back: {res['name']} champion {res['from'] or 'none'} -> {res['version']}")


models_app = typer.Typer(help="Inspect registered models: versions and alias history.", no_args_is_help=True)


@models_app.command("list")
def models_list(
    name: str | None = typer.Argument(None, help=MODEL_HELP + " Default: every registered model."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of versions."),
) -> None:
    """Versions with their aliases, gate, gate metric and data version."""
    from tasks.registry import list_versions

    rows = list_versions(name)
    lines = [f"{'name':<26} {'ver':>4} {'aliases':<22} {'gate':<7} {'test_f1':>8}  data_version"]
    for r in rows:
        f1 = "-" if r["test_f1"] is None else f"{r['test_f1']:.4f}"
        lines.append(
            f"{r['name']:<26} {r['version']:>4} {','.join(r['aliases']) or '-':<22} {r['gate'] or '-':<7} "
            f"{f1:>8}  {r['data_version']}"
        )
    _emit(rows, as_json, "\n".join(lines) if rows else "no registered versions")


@models_app.command("history")
def models_history(
    name: str = typer.Argument(..., help=MODEL_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of moves."),
) -> None:
    """Every alias move of a registered model: when, who, alias, from, to, why."""
    from tasks.registry import history

    moves = history(name)
    lines = [
        f"{m['when']}  {m['who']:<14} {m['alias']:<10} {m['from'] or '-':>4} -> {m['to'] or '-':<4}  "
        f"{m['why']}"
        for m in moves
    ]
    _emit(moves, as_json, "\n".join(lines) if lines else "no alias moves recorded")


def lineage_cmd(
    ref: str = typer.Argument(..., help="NAME@ALIAS (e.g. classifier@champion) or NAME/VERSION."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """The chain behind a version: data md5 -> git commit -> image -> run -> gate decision."""
    from tasks.registry import lineage

    info = lineage(ref)
    lines = [f"{info['name']} version {info['version']} ({', '.join(info['aliases']) or 'no alias'})"]
    lines += [
        f"  {'└─' if i == len(info['chain']) - 1 else '├─'} {step}" for i, step in enumerate(info["chain"])
    ]
    lines += [
        f"     {'ok  ' if c['passed'] else 'FAIL'} {c['name']}: {c['detail']}" for c in info["gate"]["checks"]
    ]
    _emit(info, as_json, "\n".join(lines))


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("gate")(gate)
    app.command("register")(register_cmd)
    app.command("promote")(promote_cmd)
    app.command("rollback")(rollback_cmd)
    app.command("lineage")(lineage_cmd)
    app.add_typer(models_app, name="models")
