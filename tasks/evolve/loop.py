"""The loop, end to end, on a scratch project: three data versions through the `ncbi_retrain` DAG.

- v1: the release with a seeded half of its train PMIDs (`data import` from PubTator alone), published
  (git commit + tag `v1`) and trained through the DAG: it becomes champion;
- v2: the other half added with `data add`, published, retrained: the gate decides with its CI;
- v3: v2 with annotation noise in the train split (entity spans dropped or shifted by one token, abstracts
  relabelled; `tasks.evolve.data.add_noise`), published, retrained: the gate must refuse it and `champion`
  must stay where it was.

Everything lives under one folder (`Loop.root`): `project/` (git + DVC, its DVC remote in `.dvc/config`),
`dvc-remote/`, `mlflow.db` + `mlartifacts/`, `airflow-home/` (SQLite), `sources/` (the PubTator halves),
`logs/` (one `airflow dags test` log per version), and the outcome `evolve.json` + `evolve.md`. The DAG
runs as it is, through `airflow dags test` in a subprocess whose environment points every setting at that
folder; the user's checkout, its `data/`, `data.dvc` and MLflow store are never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock  # patch.dict: the environment set for a block and restored

from tasks.errors import DataError, UsageError
from tasks.evolve.data import add_noise, write_sources
from tasks.files import atomic_write_json, atomic_write_text
from tasks.vocab import MODELS, SPLITS, Model, Profile

ROOT = Path(__file__).resolve().parents[2]  # this checkout: the DAGs and the training env come from here
GIT = ["git", "-c", "user.name=ncbi-retrain evolve", "-c", "user.email=evolve@ncbi-retrain.invalid"]
VERSIONS = ("v1", "v2", "v3")


@dataclass(frozen=True)
class Loop:
    """What the loop runs with. `sample` keeps a seeded share of the train and dev documents first (a
    smaller corpus for tests; test stays whole); `policy` is a gates.yaml for the gate
    (`NCBI_RETRAIN_GATE_POLICY`)."""

    root: Path
    profile: Profile = Profile.cpu
    release: Path = Path("../shared/data/ncbi_disease/original")
    mesh: Path = Path("../shared/data/mesh/2017MeshTree.txt")
    seed: int = 20261202
    share: float = 0.5  # of the train PMIDs in v1
    span_noise: float = 0.3  # of v3's train entities dropped or shifted by one token
    label_noise: float = 0.3  # of v3's train abstracts relabelled
    epochs: int | None = None  # None: the profile's
    sample: float | None = None
    policy: Path | None = None
    train_venv: Path = ROOT / ".venv-train"

    @property
    def repo(self) -> Path:
        return self.root / "project"

    def settings_env(self) -> dict[str, str]:
        """The `NCBI_RETRAIN_*` / MLflow / Airflow settings of the scratch project (absolute paths)."""
        env = {
            "NCBI_RETRAIN_PROJECT_DIR": str(self.repo),
            "NCBI_RETRAIN_DVC_REMOTE_URL": str(self.root / "dvc-remote"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{self.root / 'mlflow.db'}",
            "NCBI_RETRAIN_MLFLOW_ARTIFACT_ROOT": str(self.root / "mlartifacts"),
            "NCBI_RETRAIN_TRAIN_VENV": str(self.train_venv),
            "NCBI_RETRAIN_LAUNCHER": "local",
            "NCBI_RETRAIN_SCHEDULE": "none",
            "AIRFLOW_HOME": str(self.root / "airflow-home"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "DVC_NO_ANALYTICS": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "GIT_PYTHON_REFRESH": "quiet",
        }
        if self.policy is not None:
            env["NCBI_RETRAIN_GATE_POLICY"] = str(self.policy.resolve())
        return env

    def conf(self, tag: str) -> dict[str, Any]:
        """The DAG run's Params."""
        conf: dict[str, Any] = {"profile": self.profile.value, "data_revision": tag, "promote": "auto"}
        if self.epochs is not None:
            conf["epochs"] = self.epochs
        return conf


# ----------------------------------------------------------------------------------------- outcomes
@dataclass
class ModelOutcome:
    """One model in one version's DAG run."""

    trained: bool
    metric: str | None = None
    value: float | None = None
    ci: tuple[float, float] | None = None
    champion_value: float | None = None  # the champion re-scored on this version's test split
    champion_ci: tuple[float, float] | None = None
    diff: float | None = None
    diff_ci: tuple[float, float] | None = None
    gate: str | None = None
    reason: str | None = None
    registered: str | None = None
    champion_before: str | None = None
    champion_after: str | None = None


@dataclass
class VersionOutcome:
    """One data version: how it was made, its DAG run and each model's outcome."""

    tag: str
    data_version: str
    made: str  # how the version was made, one line
    dag_run_id: str
    run_dir: str
    models: dict[str, ModelOutcome]
    drift_warnings: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)  # what the loop verified about the data

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -------------------------------------------------------------------------------------- the loop
def run_loop(loop: Loop, echo: Callable[[str], None] = print) -> list[VersionOutcome]:
    """Make v1, v2, v3, run the DAG on each, and write `evolve.json` + `evolve.md` under `loop.root`."""
    prepare(loop)
    outcomes: list[VersionOutcome] = []
    with settings_applied(loop.settings_env()):
        sources = write_sources(
            loop.release, loop.root / "sources", share=loop.share, seed=loop.seed, sample=loop.sample
        )
        atomic_write_json(loop.root / "sources" / "halves.json", sources.to_dict())
        _airflow(loop, "db", "migrate", log="airflow-db.log")
        _airflow(loop, "pools", "set", "gpu", "1", "training jobs", log="airflow-db.log")
        for tag in VERSIONS:
            made, checks = make_version(loop, tag, sources)
            version = publish_version(loop.repo, tag, made)
            echo(f"\n== {tag}: data {version}: {made}")
            outcome = run_version(loop, tag, version, made)
            outcome.checks = checks
            outcomes.append(outcome)
            echo(version_table(outcome))
            write_outcome(loop, outcomes)
    echo("\n" + verdict(outcomes)[1])
    return outcomes


def prepare(loop: Loop) -> None:
    """A new scratch folder; refuses one that holds anything but an earlier loop's files."""
    root = loop.root
    if root.exists() and any(root.iterdir()):
        if not (root / "project").is_dir() and not (root / "sources").is_dir():
            raise UsageError(
                f"{root}: exists, is not empty and holds no earlier loop; choose another folder."
            )
        _remove(root)
    if not loop.release.is_dir():
        raise UsageError(f"{loop.release}: not found (the NCBI release's PubTator folder; set --release).")
    if not loop.mesh.is_file():
        raise UsageError(f"{loop.mesh}: not found (the MeSH 2017 tree file; set --mesh).")
    repo = loop.repo
    repo.mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    dvc = str(Path(sys.executable).parent / "dvc")
    subprocess.run([dvc, "init", "-q"], cwd=repo, check=True)
    remote = [dvc, "remote", "add", "-d", "local", str(root / "dvc-remote")]
    subprocess.run(remote, cwd=repo, check=True, capture_output=True)
    (repo / ".gitignore").write_text("/runs/\n/mlruns/\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "scratch project of the evolve loop")


def make_version(loop: Loop, tag: str, sources: Any) -> tuple[str, list[str]]:
    """Write the data of `tag` into the scratch project's `data/`; returns how, and what was checked."""
    from tasks.data_add import add_documents
    from tasks.datasets import import_corpus

    data = loop.repo / "data"
    if tag == "v1":
        manifest = import_corpus(str(sources.first), None, str(loop.mesh), data)
        rows = manifest["splits"]["train"]["tc3"]["rows"]
        return f"data import from PubTator, train restricted to {rows} of its PMIDs (seed {loop.seed})", []
    if tag == "v2":
        added = add_documents(data, str(sources.added), split="train", mesh=str(loop.mesh))["added"]
        made = f"data add of the other {added['documents']} train abstracts ({added['sentences']} sentences)"
        return made, reproduces_release(loop, sources, data)
    noise = add_noise(data, span_fraction=loop.span_noise, label_fraction=loop.label_noise, seed=loop.seed)
    made = (
        f"v2 with noise in train: {noise.spans.chosen} of {noise.spans.entities} entity spans "
        f"({loop.span_noise:.0%}) dropped ({noise.spans.dropped}) or shifted by one token "
        f"({noise.spans.shifted}); {noise.relabelled} of {noise.rows} abstracts relabelled "
        f"({loop.label_noise:.0%})"
    )
    return made, []


def reproduces_release(loop: Loop, sources: Any, data: Path) -> list[str]:
    """v2 against a direct import of the same documents: tc3 identical for every split, ner3 dev and test
    identical, ner3 train the same sentences (the added ones follow v1's). Raises DataError otherwise."""
    import tempfile

    from tasks.datasets import import_corpus

    with tempfile.TemporaryDirectory(prefix="evolve-full-", dir=loop.root) as tmp:
        full = Path(tmp) / "data"
        import_corpus(str(sources.whole), None, str(loop.mesh), full)
        differs = [
            rel
            for split in SPLITS
            for rel in (f"tc3/{split}.tsv", f"tc3/{split}.ids")
            + ((f"ner3/text_{split}.txt", f"ner3/labels_{split}.txt") if split != "train" else ())
            if (full / rel).read_bytes() != (data / rel).read_bytes()
        ]

        def pairs(root: Path) -> list[tuple[str, str]]:
            text = (root / "ner3" / "text_train.txt").read_text().splitlines()
            return sorted(
                zip(text, (root / "ner3" / "labels_train.txt").read_text().splitlines(), strict=True)
            )

        same, want = pairs(data), pairs(full)
    if differs or same != want:
        what = ", ".join(differs) or f"ner3 train ({len(same)} sentences, {len(want)} expected)"
        raise DataError(f"v2 does not reproduce the release's splits: {what} differ from a direct import.")
    return [
        "v2 = v1 + data add reproduces the release: tc3 of every split and ner3 dev/test "
        f"byte-identical to a direct import, ner3 train the same {len(same)} sentences "
        "(the added documents' sentences follow v1's)"
    ]


def publish_version(repo: Path, tag: str, message: str) -> str:
    """`data publish` (dvc add + push), then commit data.dvc and tag it; returns the data version."""
    from tasks.versioning import publish

    version = publish(repo)
    _git(repo, "add", "data.dvc", ".gitignore")
    _git(repo, "commit", "-q", "-m", f"data {tag}: {message}")
    _git(repo, "tag", tag)
    return version


def run_version(loop: Loop, tag: str, version: str, made: str) -> VersionOutcome:
    """One `airflow dags test ncbi_retrain` on revision `tag`; the outcome from its files and the registry."""
    runs = loop.repo / "runs"
    before_dirs = set(runs.iterdir()) if runs.is_dir() else set()
    champions = {m.value: _champion(m) for m in MODELS}
    log = f"dag-{tag}.log"
    rc = _airflow(
        loop, "dags", "test", "ncbi_retrain", "-c", json.dumps(loop.conf(tag)), log=log, check=False
    )
    new = sorted((set(runs.iterdir()) if runs.is_dir() else set()) - before_dirs)
    run = new[-1] if new else None
    if run is None or not (run / "summary.json").is_file():
        failure = run / "failure.md" if run else None
        detail = failure.read_text() if failure and failure.is_file() else f"see {loop.root / 'logs' / log}"
        raise DataError(f"the DAG run of {tag} did not finish (airflow exited {rc}): {detail}")
    summary = json.loads((run / "summary.json").read_text())
    models = {
        m.value: _model_outcome(run, m, summary["models"][m.value], champions[m.value], _champion(m))
        for m in MODELS
    }
    drift_file = run / "validation" / "drift.json"
    warnings = []
    if drift_file.is_file():
        # One comparison per champion's data version: say which, or the same warning shows twice with
        # two different "from" numbers and no way to tell them apart.
        warnings = [
            f"{w} (against {c['from']['why']})"
            for c in json.loads(drift_file.read_text())["comparisons"]
            for w in c["warnings"]
        ]
    return VersionOutcome(tag, version, made, summary["dag_run_id"], str(run), models, warnings)


def _model_outcome(
    run: Path, model: Model, s: dict[str, Any], before: str | None, after: str | None
) -> ModelOutcome:
    out = ModelOutcome(
        trained=bool(s.get("trained")),
        metric=s.get("metric"),
        value=s.get("value"),
        champion_value=s.get("champion_value"),
        gate=s.get("gate"),
        reason=s.get("gate_reason") or s.get("reason"),
        registered=s.get("version"),
        champion_before=before,
        champion_after=after,
    )
    folder = run / model.value
    tries = sorted(folder.glob("try-*/metrics.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    if tries and out.metric:
        out.ci = _ci(tries[-1], out.metric)
    for name in ("champion-metrics.json", "champion-recorded/metrics.json"):
        if (folder / name).is_file() and out.metric:
            out.champion_ci = _ci(folder / name, out.metric)
            break
    if (folder / "decision.json").is_file():
        decision = json.loads((folder / "decision.json").read_text())
        boot = next((c for c in decision["checks"] if c["name"].startswith("bootstrap_")), None)
        if boot:
            n = boot["numbers"]
            out.diff, out.diff_ci = n["observed_diff"], (n["ci_low"], n["ci_high"])
    return out


def _ci(metrics_file: Path, metric: str) -> tuple[float, float] | None:
    ci = json.loads(metrics_file.read_text())["metrics"].get(f"{metric}_ci")
    return (ci["low"], ci["high"]) if ci else None


def _champion(model: Model) -> str | None:
    from tasks.registry import champion_version

    return (champion_version(model.value) or {}).get("version")


# ------------------------------------------------------------------------------------------ output
def _f1(value: float | None, ci: tuple[float, float] | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    fmt = "{:+.3f}" if signed else "{:.3f}"
    return fmt.format(value) + (f" [{fmt.format(ci[0])}, {fmt.format(ci[1])}]" if ci else "")


def _v(version: str | None) -> str:
    return "none" if version is None else f"v{version}"


def version_table(v: VersionOutcome) -> str:
    """One version's Markdown table: F1 with 95% CIs, the champion on the same test split, the gate."""
    rows = [
        "| model | F1 [95% CI] | champion F1 [95% CI] | difference [95% CI] | gate | registered | champion |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in v.models.items():
        moved = m.champion_before != m.champion_after
        champion = (
            f"{_v(m.champion_before)} → **{_v(m.champion_after)}**"
            if moved
            else f"{_v(m.champion_after)} (kept)"
        )
        rows.append(
            f"| {name} ({m.metric or '-'}) | {_f1(m.value, m.ci)} | {_f1(m.champion_value, m.champion_ci)} | "
            f"{_f1(m.diff, m.diff_ci, signed=True)} | {m.gate or 'not trained'} | "
            f"{'v' + m.registered if m.registered else '-'} | {champion} |"
        )
    lines = [*rows, ""]
    lines += [f"- {name}: {m.reason}" for name, m in v.models.items() if m.reason]
    lines += [f"- data check: {c}" for c in v.checks]
    lines += [f"- drift warning: {w}" for w in v.drift_warnings]
    return "\n".join(lines)


def verdict(outcomes: list[VersionOutcome]) -> tuple[bool, str]:
    """Did the loop prove its point: v1 champion of both models, v3 refused and no champion moved by it?"""
    by_tag = {o.tag: o for o in outcomes}
    problems = []
    if v1 := by_tag.get("v1"):
        problems += [
            f"v1 {n} did not become champion" for n, m in v1.models.items() if m.champion_after is None
        ]
    if v3 := by_tag.get("v3"):
        for name, m in v3.models.items():
            if m.gate != "failed":
                problems.append(f"v3 {name}: the gate did not refuse it ({m.gate}: {m.reason})")
            if m.champion_before != m.champion_after:
                problems.append(f"v3 {name}: champion moved v{m.champion_before} -> v{m.champion_after}")
    else:
        problems.append("v3 did not run")
    if problems:
        return False, "The loop's claim does NOT hold: " + "; ".join(problems) + "."
    champions = ", ".join(f"{n} v{m.champion_after}" for n, m in by_tag["v3"].models.items())
    return True, f"v3 refused by the gate for both models; champion unchanged ({champions})."


def write_outcome(loop: Loop, outcomes: list[VersionOutcome]) -> None:
    """`evolve.json` (every number) and `evolve.md` (the tables) under the loop's root."""
    ok, text = verdict(outcomes)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(loop).items()}
    atomic_write_json(
        loop.root / "evolve.json",
        {"loop": settings, "passed": ok, "verdict": text, "versions": [o.to_dict() for o in outcomes]},
    )
    parts = [f"# Evolve loop, profile {loop.profile.value}", ""]
    for o in outcomes:
        parts += [f"## {o.tag}: {o.made}", "", f"Data version `{o.data_version}`, run `{o.dag_run_id}`.", ""]
        parts += [version_table(o), ""]
    parts.append(text)
    atomic_write_text(loop.root / "evolve.md", "\n".join(parts) + "\n")


# ----------------------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def settings_applied(env: dict[str, str]) -> Iterator[None]:
    """This process's settings pointed at the scratch project for the block (the loop's own DVC and
    registry calls), restored afterwards."""
    from tasks.settings import get_settings

    try:
        with mock.patch.dict(os.environ, env):
            get_settings.cache_clear()
            yield
    finally:
        get_settings.cache_clear()  # read again from the restored environment


def _child_env(loop: Loop) -> dict[str, str]:
    """The subprocess's environment: this one without other deployments' settings, plus the loop's."""
    keep = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("NCBI_RETRAIN_", "AIRFLOW_", "AIRFLOW__", "MLFLOW_TRACKING_"))
        or k == "NCBI_RETRAIN_GIT_COMMIT"  # the code version, where there is no .git: not a location
    }
    return {**keep, **loop.settings_env(), "NCBI_RETRAIN_RETRY_DELAY_S": "5"}


def _airflow(loop: Loop, *args: str, log: str, check: bool = True) -> int:
    """`airflow ARGS` of this environment, output appended to `logs/LOG`."""
    logs = loop.root / "logs"
    logs.mkdir(exist_ok=True)
    with (logs / log).open("ab") as out:
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "airflow"), *args],
            cwd=ROOT,
            env=_child_env(loop),
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if check and proc.returncode != 0:
        raise UsageError(f"airflow {' '.join(args[:2])} exited {proc.returncode}; see {logs / log}.")
    return proc.returncode


def _git(repo: Path, *args: str) -> str:
    return subprocess.run([*GIT, *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def _remove(root: Path) -> None:
    """Remove an earlier loop's folder (materialised data folders are read-only)."""
    for folder in [root, *root.rglob("*")]:
        if folder.is_dir() and not folder.is_symlink():
            folder.chmod(folder.stat().st_mode | stat.S_IWUSR | stat.S_IXUSR)
    shutil.rmtree(root)
