"""The run's data drift: its data version against each champion's, or against the previous published one.

`run_drift` (called by the validate step) picks the references, materialises each from the DVC cache /
remote at a commit that recorded it (`tasks.versioning.published_versions`), compares it with the run's
data (`tasks.drift`) and writes `<run dir>/validation/drift.json` and `drift.md`; `drift_for` (the gate step)
reads back the comparison that concerns one model's champion. References:

- each model's champion: its version tag `data_version`, found in the project's git history (any ref);
- for a model without a champion (or whose champion's version is in no commit here), and for the
  validation report when there is no other reference: the newest version before the run's own among the
  commits reachable from the run's data commit ("the previous published version").

Drift informs, it never stops a run: a reference that cannot be found or fetched is a note in the report.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tasks import drift
from tasks.errors import NcbiRetrainError
from tasks.files import atomic_write_json, atomic_write_text
from tasks.pipeline.rundir import run_dir
from tasks.settings import get_settings
from tasks.vocab import MODELS, DataRef, Model

log = logging.getLogger(__name__)

PREVIOUS = "the previous published version"


def _champions() -> dict[str, tuple[str, str | None]]:
    """Model -> (champion version, the data version it was trained on) for the models with a champion."""
    from tasks.registry import champion_version

    out = {}
    for model in MODELS:
        if champion := champion_version(model.value):
            out[model.value] = (str(champion["version"]), (champion.get("tags") or {}).get("data_version"))
    return out


def references(data: DataRef, repo: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The versions to compare the run's data with ({data_version, commit, why, models}: `models` are those
    whose gate report shows that comparison) and notes on what could not be used."""
    from tasks.versioning import published_versions

    notes: list[str] = []
    refs: dict[str, dict[str, Any]] = {}
    commit_of: dict[str, str] = {}
    for commit, version in reversed(published_versions(repo)):  # every ref; the oldest commit wins
        commit_of.setdefault(version, commit)

    def add(version: str, why: str, models: list[str]) -> None:
        ref = refs.setdefault(version, {"data_version": version, "commit": commit_of[version], "why": []})
        ref["why"].append(why)
        ref.setdefault("models", []).extend(models)

    uncovered = []
    champions = _champions()
    for model in (m.value for m in MODELS):
        if model not in champions:
            uncovered.append(model)
            continue
        number, version = champions[model]
        if version == data.data_version:
            notes.append(f"{model} champion v{number} was trained on this run's data version: no drift")
        elif version in commit_of:
            add(version, f"data of the {model} champion v{number}", [model])
        else:
            notes.append(f"{model} champion v{number}: its data version {version} is in no commit of {repo}")
            uncovered.append(model)
    if uncovered or not refs:
        earlier = published_versions(repo, data.commit or data.revision or "HEAD")
        previous = next((v for _, v in earlier if v != data.data_version), None)
        if previous is None:
            notes.append(f"no data version before {data.data_version} in the history of {repo}")
        else:
            commit_of.setdefault(previous, next(c for c, v in earlier if v == previous))
            add(previous, PREVIOUS, uncovered)
    return [{**r, "why": "; ".join(r["why"])} for r in refs.values()], notes


def run_drift(data: DataRef, dag_run_id: str) -> Path | None:
    """Compare the run's data with its references; write `validation/drift.json` + `drift.md`; return the
    JSON's path (None when no reference could be compared)."""
    from tasks.versioning import discard, materialize

    settings = get_settings()
    out = run_dir(dag_run_id, settings) / "validation"
    current = {"data_version": data.data_version, "commit": data.commit, "why": "this run"}
    try:
        refs, notes = references(data, settings.project_dir)
    except NcbiRetrainError as exc:
        refs, notes = [], [f"no reference version: {exc}"]
    comparisons = []
    for ref in refs:
        folder = out / f"reference-{ref['data_version'].removesuffix('.dir')}"
        try:
            got = materialize(settings.project_dir, ref["commit"], folder)
            comparisons.append(
                drift.drift(Path(got.path), Path(data.data_dir), reference=ref, current=current)
            )
        except NcbiRetrainError as exc:
            notes.append(f"{ref['why']} ({ref['data_version']}) could not be read: {exc}")
        finally:
            discard(folder)
    for note in notes:
        log.warning("drift: %s", note)
    for doc in comparisons:
        for line in drift.summary_lines(doc):
            log.info("%s", line)
    if not comparisons:
        return None
    doc = {
        "schema": drift.SCHEMA,
        "data_version": data.data_version,
        "comparisons": comparisons,
        "notes": notes,
    }
    sections = [drift.to_markdown(c, heading="##") for c in comparisons]
    text = "# Data drift of this run\n\n" + "\n".join(sections)
    if notes:
        text += "\n" + "".join(f"- note: {n}\n" for n in notes)
    atomic_write_text(out / "drift.md", text)
    return atomic_write_json(out / "drift.json", doc)


def drift_for(model: Model | str, dag_run_id: str) -> dict[str, Any] | None:
    """The comparison the validate step made for `model`: with its champion's data, or with the previous
    version when it has no champion; None when there is none (e.g. the champion is on this data)."""
    import json

    path = run_dir(dag_run_id) / "validation" / "drift.json"
    if not path.is_file():
        return None
    model = Model(model).value
    comparisons = json.loads(path.read_text()).get("comparisons") or []
    return next((c for c in comparisons if model in (c.get("from") or {}).get("models", [])), None)
