"""The MLflow model registry: register, promote, rollback, list, history and lineage.

Conventions (docs/architecture.md): registered models `ncbi-disease-classifier` / `ncbi-disease-ner`;
version tags `data_version`, `git_commit`, `image`, `dag_run_id`, `config_fingerprint`, `gate`,
`gate_reason`, `test_f1`; aliases are the only promotion mechanism and every move is recorded on the
registered model as the tag `alias_history`.

Alias rules:
- `challenger` marks the latest registered candidate, whatever its gate said (so a failed candidate
  is visible and comparable); it is set after the version exists with all its tags.
- `champion` moves only through `promote` / `rollback`: never onto a version whose gate failed unless
  forced by hand (`force=True`, recorded), and never onto a version whose `.nemo` is missing or corrupt.
- Assigning `champion` drops `challenger` from that version.

Modules, one responsibility each (MLflow is imported only when a function is called):
- `service`: the MLflow client (bounded HTTP retries) and the translation of its errors;
- `aliases`: moving an alias and recording the move (the history, paged across tags);
- `register`: `register_run`, idempotent and race-safe;
- `champion`: `promote` / `rollback` and the `.nemo` check (`verify_nemo`);
- `views`: `list_versions`, `history`, `lineage`, `champion_version`, `champion_metrics`;
- `webhooks`: MLflow's webhook into Airflow (`install_webhook`) and the check of a delivery;
- `guard`: what the `ncbi_champion` DAG runs (verify the champion, record outside moves, revert);
- `card`: the smoke test through `models:/NAME@champion` and the version's model card;
- `access`: who may move aliases (MLflow basic-auth users and permissions).
"""

from __future__ import annotations

from tasks.registry.champion import promote, rollback, verify_nemo
from tasks.registry.register import RegisteredVersion, register_run
from tasks.registry.service import registered_name
from tasks.registry.views import champion_metrics, champion_version, history, lineage, list_versions

__all__ = [
    "RegisteredVersion",
    "champion_metrics",
    "champion_version",
    "history",
    "lineage",
    "list_versions",
    "promote",
    "register_run",
    "registered_name",
    "rollback",
    "verify_nemo",
]
