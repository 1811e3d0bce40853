"""The docker launcher against podman's Docker API, with the trainer image built from docker/.

The main test runs the `ncbi_retrain` DAG's training step (`tasks.pipeline.train`, tiny profile) inside
the image and reads its MLflow run and files back from the host; the others prove the failure paths.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from dag_helpers import small_slice

from tasks.vocab import RunParams

pytestmark = pytest.mark.container

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def test_image_is_the_cli_as_a_non_root_user_offline(settings_env, client):
    from tasks.launch import Job
    from tasks.launch.docker import DockerLauncher

    config = client.images.get(DockerLauncher().image).attrs["Config"]
    assert config["User"] == "trainer"
    assert config["Entrypoint"] == ["ncbi-retrain"]
    assert "HF_HUB_OFFLINE=1" in config["Env"]
    result = DockerLauncher(user="").run(Job(["--help"], name="help"))
    assert result.exit_code == 0
    assert "train" in result.stdout and "evaluate" in result.stdout
    uid = DockerLauncher(user="", entrypoint=["id", "-u"]).run(Job([], name="uid")).stdout.strip()
    assert uid != "0"


def test_container_runs_as_the_caller_with_mounts_at_the_same_path(settings_env, tmp_path, leftovers):
    from tasks.launch import Job
    from tasks.launch.docker import DockerLauncher

    (tmp_path / "in.txt").write_text("hello\n")
    script = (
        f"import os; p = {str(tmp_path)!r}; print(open(p + '/in.txt').read().strip(), os.getuid()); "
        "open(p + '/out.txt', 'w').write('written inside')"
    )
    result = DockerLauncher(entrypoint=["python", "-c", script]).run(
        Job([], mounts=[tmp_path], name="mounts", env={"NCBI_RETRAIN_X": "1"})
    )
    assert result.stdout.strip() == f"hello {os.getuid()}"
    out = tmp_path / "out.txt"
    assert out.read_text() == "written inside"
    assert out.stat().st_uid == os.getuid()
    assert leftovers("mounts") == []


def test_train_step_runs_in_the_image_and_is_visible_from_the_host(
    settings_env, imported_data: Path, tmp_path: Path, leftovers, client
):
    """`ncbi_retrain`'s train task, through the docker launcher: MLflow run + files land on the host."""
    import mlflow
    from tasks.pipeline import train

    project = tmp_path / "project"
    small_slice(imported_data, project / "data")
    store = tmp_path / "mlflow"  # outside the project dir: the launcher must mount it too
    settings_env(
        NCBI_RETRAIN_PROJECT_DIR=str(project),
        MLFLOW_TRACKING_URI=f"sqlite:///{store}/mlflow.db",
        NCBI_RETRAIN_MLFLOW_ARTIFACT_ROOT=str(store / "artifacts"),
        NCBI_RETRAIN_GIT_COMMIT=COMMIT,
    )
    out = train("classifier", RunParams(profile="tiny"), str(project / "data"), "v-test", "container-run-1")

    metrics = json.loads(Path(out["metrics"]).read_text())
    assert metrics["task"] == "classifier"
    assert metrics["split"] == "test"
    assert 0.0 <= metrics["metrics"]["macro_f1"] <= 1.0
    assert Path(out["out"]).is_relative_to(project)

    mlflow.set_tracking_uri(f"sqlite:///{store}/mlflow.db")
    run = mlflow.get_run(out["run_id"])
    assert run.info.status == "FINISHED"
    assert "test_macro_f1" in run.data.metrics or any("macro_f1" in k for k in run.data.metrics)
    assert run.data.tags["image"] == client.images.get(os.environ["NCBI_RETRAIN_TRAINER_IMAGE"]).id
    assert run.data.tags["dag_run_id"] == "container-run-1"
    assert run.data.tags["git_commit"] == COMMIT
    assert run.data.tags["data_version"] == "v-test"
    # The artifacts are on the host's disk under the artifact root, readable without the container.
    local = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="metrics.json"))
    assert json.loads(local.read_text())["task"] == "classifier"
    assert str(store / "artifacts") in run.info.artifact_uri
    assert leftovers("train-classifier") == []


def test_missing_image_is_a_clear_error(settings_env):
    from tasks.launch import Job, JobFailed
    from tasks.launch.docker import DockerLauncher

    with pytest.raises(JobFailed, match=r"trainer image 'localhost/no-such-trainer:0' not found"):
        DockerLauncher(image="localhost/no-such-trainer:0").run(Job(["--help"]))


def test_non_zero_exit_fails_with_the_last_log_lines(settings_env, tmp_path, leftovers):
    from tasks.launch import Job, JobFailed
    from tasks.launch.docker import DockerLauncher

    job = Job(
        ["train", "classifier", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")],
        mounts=[tmp_path],
        name="bad-data",
    )
    with pytest.raises(JobFailed) as err:
        DockerLauncher().run(job)
    msg = str(err.value)
    assert "bad-data exited with code 2" in msg
    assert f"{tmp_path / 'missing'}" in msg and "does not exist" in msg  # the CLI's own error line
    assert leftovers("bad-data") == []


def test_oom_kill_fails_with_the_reason_and_last_lines(settings_env, leftovers):
    from tasks.launch import Job, JobFailed
    from tasks.launch.docker import DockerLauncher

    hog = "print('allocating 1 GiB', flush=True); b = bytearray(1 << 30); print('not reached')"
    launcher = DockerLauncher(mem_limit="64m", entrypoint=["python", "-c", hog])
    with pytest.raises(JobFailed) as err:
        launcher.run(Job([], name="hog"))
    msg = str(err.value)
    assert "memory limit 64m" in msg and ("OOM" in msg or "out of memory" in msg)
    assert "allocating 1 GiB" in msg and "not reached" not in msg
    assert leftovers("hog") == []


def test_timeout_stops_and_removes_the_container(settings_env, leftovers):
    from tasks.launch import Job, JobFailed
    from tasks.launch.docker import DockerLauncher

    # Never finishes by itself, so the outcome does not depend on how fast this machine is.
    forever = "import time; print('started', flush=True); time.sleep(86400)"
    expected = r"sleeper timed out after 2 s; container stopped and removed.*started"
    with pytest.raises(JobFailed, match=expected):
        DockerLauncher(entrypoint=["python", "-c", forever]).run(Job([], name="sleeper", timeout_s=2))
    assert leftovers("sleeper") == []


def test_train_step_timeout_registers_nothing(
    settings_env, imported_data: Path, tmp_path: Path, leftovers, monkeypatch
):
    """A training job past its deadline: the task fails, no container is left, the registry stays empty."""
    import mlflow
    import tasks.pipeline as pipeline
    from tasks.launch import JobFailed

    project = tmp_path / "project"
    small_slice(imported_data, project / "data")
    settings_env(
        NCBI_RETRAIN_PROJECT_DIR=str(project),
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db",
        NCBI_RETRAIN_GIT_COMMIT=COMMIT,
    )
    # One second cannot cover interpreter start + NeMo import (7-13 s), let alone a fit.
    monkeypatch.setattr(pipeline, "TRAIN_TIMEOUT_S", {"tiny": 1})
    with pytest.raises(JobFailed, match="train-classifier timed out after 1 s"):
        pipeline.train("classifier", RunParams(profile="tiny"), str(project / "data"), "v", "t-1")
    assert leftovers("train-classifier") == []
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert client.search_registered_models() == []
    finished = [
        r
        for e in client.search_experiments()
        for r in client.search_runs([e.experiment_id])
        if r.info.status == "FINISHED"
    ]
    assert finished == []


def test_gpu_jobs_request_devices_and_shared_memory(settings_env, tmp_path):
    from tasks.launch import Job
    from tasks.launch.docker import DockerLauncher

    launcher = DockerLauncher()
    kwargs = launcher.create_kwargs(Job(["train", "ner"], gpus=2, mounts=[tmp_path]), "sha256:abc")
    (req,) = kwargs["device_requests"]
    assert req["Count"] == 2 and req["Capabilities"] == [["gpu"]]
    assert kwargs["shm_size"] == "8g"
    assert kwargs["mounts"][0]["Source"] == kwargs["mounts"][0]["Target"] == str(tmp_path.resolve())
    assert kwargs["environment"]["NCBI_RETRAIN_IMAGE"] == "sha256:abc"
    assert "device_requests" not in launcher.create_kwargs(Job(["train", "ner"]), "sha256:abc")
