"""The retraining pipeline: one function per DAG task, no Airflow import (each is testable on its own).

    pull_data -> validate_data -> per model: plan -> [train job] -> train_result -> champion
                 -> [re-score job] -> gate -> register -> promote;  then summarize

The bracketed steps are jobs in the training env, run by the Airflow operator that `Settings.launcher`
names (BashOperator, DockerOperator, KubernetesPodOperator); the steps around them build the job and read
its `--json` result. Each step takes and returns the typed records of `tasks.vocab` (`DataRef`, `Plan`,
`TrainResult`, ...): the DAG passes `record.dump()` on through XCom. Files live under the run's work
directory, `Settings.work_dir/<dag run id>/`, and in MLflow.

Modules (no cycles: `rundir` and `jobs` import no other module of this package):
- `rundir`: the run's work directory and the code version;
- `jobs`: the job spec (argv + env) shared by the three operators, and reading a job's result;
- `steps`: data, plan, champion metrics, gate, register, promote;
- `summary`: the run summary and the demo's result table;
- `failures`: failure records, the run's failure summary and the webhook;
- `manual`: the manual champion moves of `ncbi_promote`.
"""
