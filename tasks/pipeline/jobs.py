"""The job spec: the one `ncbi-retrain` command (argv + env) that every launcher's operator runs.

The DAG picks the operator when it is parsed (`Settings.launcher`): `local` a BashOperator running the
training venv's CLI, `docker` a DockerOperator of the trainer image, `kubernetes` a KubernetesPodOperator.
This module builds what they run, so all three launch the same command with the same environment, and
reads the job's result back: the command's last output line is its `--json` object (the XCom of the
Bash and Docker operators); in a pod the CLI also writes it to `NCBI_RETRAIN_RESULT_FILE`, the file
the KubernetesPodOperator's sidecar pushes. Nothing here imports Airflow, Docker or Kubernetes.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tasks.errors import JobFailed
from tasks.pipeline.rundir import run_dir
from tasks.settings import Settings, get_settings
from tasks.vocab import DataRef, JobSpec, Model, RunParams

TRY_LOCK_WAIT_S = 900  # how long a try waits for an earlier try's job of the same task (bash_script)
RESULT_FILE_ENV = "NCBI_RETRAIN_RESULT_FILE"  # the CLI also writes its --json object there
K8S_RESULT_FILE = "/airflow/xcom/return.json"  # what the KubernetesPodOperator's XCom sidecar reads
CHECKPOINTS = "checkpoints"  # <run dir>/<model>/checkpoints: shared by the tries of one DAG run
# The worker's variables a training container also gets (credentials among them: they never go into
# XCom or the serialized DAG); the job's own env wins over them.
_FORWARDED = ("NCBI_RETRAIN_", "MLFLOW_", "AWS_", "HF_", "TRANSFORMERS_OFFLINE")
# Host-side choices that mean nothing inside the container.
_NOT_FORWARDED = {"NCBI_RETRAIN_LAUNCHER", "NCBI_RETRAIN_TRAIN_VENV"}
_NOT_FORWARDED_PREFIXES = ("NCBI_RETRAIN_DOCKER_", "NCBI_RETRAIN_K8S_")


def job_env(settings: Settings, dag_run_id: str, data_version: str, commit: str) -> dict[str, str]:
    """The job's environment: where MLflow is, and the lineage a container cannot find by itself."""
    env = {
        "MLFLOW_TRACKING_URI": settings.tracking_uri(),  # a relative SQLite path made absolute
        "NCBI_RETRAIN_DAG_RUN_ID": dag_run_id,
        "NCBI_RETRAIN_GIT_COMMIT": commit,  # containers have no .git
        "NCBI_RETRAIN_DATA_VERSION": data_version,  # nor data.dvc
        "NCBI_RETRAIN_PROJECT_DIR": str(settings.project_dir),
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
        "TRANSFORMERS_OFFLINE": os.environ.get("TRANSFORMERS_OFFLINE", "1"),
        "PYTHONUNBUFFERED": "1",  # progress lines reach the Airflow task log as they are printed
    }
    if settings.is_local_store():  # runs and artifacts land where the orchestrator reads them
        env["NCBI_RETRAIN_MLFLOW_ARTIFACT_ROOT"] = str(settings.path(settings.mlflow_artifact_root).resolve())
    if settings.launcher != "local":
        env["NCBI_RETRAIN_IMAGE"] = settings.trainer_image  # the docker operator records the image ID
    if settings.launcher == "kubernetes":
        env[RESULT_FILE_ENV] = K8S_RESULT_FILE
    return env


def train_job(
    model: Model | str,
    options: RunParams,
    data: DataRef,
    dag_run_id: str,
    commit: str,
    settings: Settings | None = None,
) -> JobSpec:
    """`ncbi-retrain train MODEL ... --json`, with `--out <run dir>/MODEL/try-N` added per try.

    Every try gets the same `--checkpoints <run dir>/MODEL/checkpoints`: a try that dies (killed, OOM,
    lost worker) leaves its per-epoch checkpoints there and the next try resumes from the newest
    complete one; the trainer's `progress.json` (what `make demo` shows live) lives there too."""
    settings = settings or get_settings()
    model = Model(model)
    work = run_dir(dag_run_id, settings) / model.value
    argv = ["train", model.value, "--data", data.data_dir, "--profile", options.profile.value]
    argv += ["--data-version", data.data_version, "--checkpoints", str(work / CHECKPOINTS)]
    argv += ["--json", *options.overrides()]
    return JobSpec(
        name=f"train-{model.value}",
        argv=argv,
        env=job_env(settings, dag_run_id, data.data_version, commit),
        out_dir=str(work),
    )


def rescore_job(
    model: Model | str,
    data: DataRef,
    dag_run_id: str,
    out: Path,
    commit: str,
    settings: Settings | None = None,
) -> JobSpec:
    """`ncbi-retrain evaluate MODEL --model models:/NAME@champion ... --json`: the champion on this data."""
    settings = settings or get_settings()
    model = Model(model)
    argv = ["evaluate", model.value, "--model", f"models:/{model.registered_name}@champion"]
    argv += ["--data", data.data_dir, "--out", str(out), "--data-version", data.data_version, "--json"]
    return JobSpec(
        name=f"rescore-{model.value}-champion",
        argv=argv,
        env=job_env(settings, dag_run_id, data.data_version, commit),
    )


def mount_paths(settings: Settings | None = None) -> list[Path]:
    """Host folders a job reads and writes, at the same path inside a container or pod: the project
    (data, run folders), the work dir, and a local MLflow store; nested ones dropped."""
    settings = settings or get_settings()
    paths = [settings.project_dir, settings.path(settings.work_dir), settings.path(settings.data_dir)]
    uri = settings.tracking_uri()
    if uri.startswith("sqlite:///"):
        paths.append(Path(uri.removeprefix("sqlite:///")).parent)
    if settings.is_local_store():
        paths.append(settings.path(settings.mlflow_artifact_root))
    unique: list[Path] = []
    for p in (Path(p).resolve() for p in paths):
        if not any(p == q or q in p.parents for q in unique):
            unique = [q for q in unique if p not in q.parents] + [p]
    return unique


def ensure_mount_paths(settings: Settings | None = None) -> list[Path]:
    """Create missing mount sources (an engine refuses a bind mount of a missing folder)."""
    paths = mount_paths(settings)
    for p in paths:
        p.mkdir(parents=True, exist_ok=True)
    return paths


def smoke_job(model: Model | str, dag_run_id: str, settings: Settings | None = None) -> JobSpec:
    """`ncbi-retrain predict` through `models:/NAME@champion` on the behavioural sentences (the NeMo
    tutorial's three first): the champion guard's smoke test, run by the launcher's operator."""
    from tasks.pipeline.rundir import code_version
    from tasks.registry.card import smoke_cases
    from tasks.vocab import Alias

    settings = settings or get_settings()
    model = Model(model)
    uri = f"models:/{model.registered_name}@{Alias.champion}"
    argv = ["predict", model.value, "--model", uri, "--json", *(c["text"] for c in smoke_cases(model))]
    env = job_env(settings, dag_run_id, data_version="", commit=code_version())
    env.pop("NCBI_RETRAIN_DATA_VERSION")  # predicting involves no data version
    return JobSpec(name=f"smoke-{model.value}", argv=argv, env=env)


def bash_script(job: JobSpec, try_number: int, venv: Path) -> str:
    """The BashOperator's command for one try: the job's env, then the venv's CLI.

    stderr (the job's progress) streams into the task log; stdout is held in a file and printed when the
    job ends, so the `--json` line is the last line the BashOperator pushes even when a library writes to
    stderr while the interpreter exits.

    A job with tries (`out_dir`) first takes the lock `<out_dir>/.job.lock` (util-linux `flock`): after a
    scheduler crash Airflow resets the running try and starts the next one at once, while the reset try's
    job may still run until its supervisor learns of the reset at its next heartbeat (it may even finish).
    The job inherits the locked descriptor, so the lock lasts exactly as long as the job, even when this
    shell is killed: the next try waits for it (up to TRY_LOCK_WAIT_S, then exits 75 to be retried) instead
    of training beside it on the same GPU."""
    q = shlex.quote
    cli = Path(venv) / "bin" / "ncbi-retrain"
    missing = f"training env not found: {cli} does not exist (run make setup or set NCBI_RETRAIN_TRAIN_VENV)"
    lines = [f"# {job.name}, try {try_number}, in the training env {venv}"]
    lines += [f"export {k}={q(v)}" for k, v in sorted(job.env.items())]
    lines += [
        f"export VIRTUAL_ENV={q(str(venv))}",
        'export PATH="$VIRTUAL_ENV/bin:$PATH"',
        "unset PYTHONHOME",
        f"[ -x {q(str(cli))} ] || {{ echo {q(missing)} >&2; exit 127; }}",
    ]
    if job.out_dir is not None:
        lock = f"{job.out_dir}/.job.lock"
        waiting = f"{job.name}, try {try_number}: waiting for an earlier try's job to end (it holds {lock})"
        busy = (
            f"{job.name}, try {try_number}: an earlier try's job still holds {lock} after "
            f"{TRY_LOCK_WAIT_S} s; not starting beside it (exit 75: retry later)"
        )
        lines += [
            f"mkdir -p {q(job.out_dir)} && exec 9>>{q(lock)}",
            f"flock -n 9 || {{ echo {q(waiting)} >&2; flock -w {TRY_LOCK_WAIT_S} 9 || "
            f"{{ echo {q(busy)} >&2; exit 75; }}; }}",
        ]
    lines += [
        "out=$(mktemp) && trap 'rm -f \"$out\"' EXIT",
        shlex.join([str(cli), *job.argv_for(try_number)]) + ' >"$out"',
        "rc=$?",
        'cat "$out"',
        "exit $rc",
    ]
    return "\n".join(lines) + "\n"


def forwarded_env(environ: Mapping[str, str], job: Mapping[str, str]) -> dict[str, str]:
    """The worker's settings and credentials a training container also needs (not in `job`)."""
    return {
        k: v
        for k, v in environ.items()
        if k.startswith(_FORWARDED)
        and k not in _NOT_FORWARDED
        and not k.startswith(_NOT_FORWARDED_PREFIXES)
        and k not in job
    }


def job_result(output: Any, name: str) -> dict[str, Any]:
    """The job's `--json` object from its operator's XCom: the pod's result file (already a dict), or the
    Bash / Docker operator's last output line."""
    if isinstance(output, Mapping):
        return dict(output)
    last = str(output or "").strip().splitlines()[-1:] or [""]
    try:
        doc = json.loads(last[0])
    except json.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict):
        raise JobFailed(
            f"{name}: the job's last output line is not its --json result object (got {last[0][:200]!r})"
        )
    return doc


def explain_exit(
    name: str,
    code: int,
    *,
    image: str,
    mem_limit: str | None = None,
    oom_killed: bool = False,
    log_lines: Iterable[str] = (),
) -> str:
    """One sentence for a failed container: how it ended (OOM named), in which image, its last lines."""
    if oom_killed:
        how = f"was killed for exceeding its memory limit {mem_limit or ''} (OOM)"
    elif code == 137 and mem_limit:
        # podman on cgroup v1 does not report OOMKilled: a SIGKILL under a limit is the OOM killer.
        how = f"was killed by SIGKILL (exit 137) under its memory limit {mem_limit}: out of memory (OOM)"
    elif code == 137:
        how = "was killed by SIGKILL (exit 137: out of memory, or stopped by the engine)"
    else:
        how = f"exited with code {code}"
    tail = [line for line in log_lines if line.strip()][-10:]
    return f"{name} {how} in {image}; last log lines: {' | '.join(tail) or '(no output)'}"


def missing_image(image: str, url: str, detail: str) -> str:
    """One sentence for a trainer image the engine neither has nor can pull."""
    return (
        f"trainer image {image!r} is not on the container engine at {url} and could not be pulled "
        f"({detail.strip()[:300]}): build it (`scripts/podman.sh build` or "
        "`docker build -f docker/trainer.Dockerfile .`), push it to a registry the engine can reach, "
        "or set NCBI_RETRAIN_TRAINER_IMAGE"
    )
