#!/usr/bin/env bash
# The main job (`make demo PROFILE=cpu|tiny`; setup is make's prerequisite):
#   import the NCBI release (NCBI_SHARED_DATA, default ../shared/data) into data/, publish it to the
#   default DVC remote, run the ncbi_retrain DAG once with `airflow dags test` on SQLite
#   (AIRFLOW_HOME=airflow-home/, gitignored), register and promote into the local MLflow store
#   (mlruns/), and print the result table (ending with the DAG run's duration by Airflow's clock) and
#   how to open the UIs. While the DAG runs, a live table shows each model's training (stage, epoch,
#   step/total, ETA, last dev score) and its gate.
# Running it again with nothing changed skips training and says why (data, code and config equal
# the champion's). Extra DAG params: DEMO_CONF='{"force": true}' make demo.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${1:-cpu}
case $PROFILE in tiny | cpu | gpu) ;; *) echo "demo: PROFILE must be tiny, cpu or gpu (got '$PROFILE')" >&2; exit 2 ;; esac
ROOT=$PWD
SHARED=${NCBI_SHARED_DATA:-$ROOT/../shared/data}
BIN=$ROOT/.venv/bin

export AIRFLOW_HOME=${AIRFLOW_HOME:-$ROOT/airflow-home}
export AIRFLOW__CORE__DAGS_FOLDER=$ROOT/dags
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__UNIT_TEST_MODE=False
export NCBI_RETRAIN_PROJECT_DIR=$ROOT
export NCBI_RETRAIN_SCHEDULE=${NCBI_RETRAIN_SCHEDULE:-"0 2 * * *"}
export DVC_NO_ANALYTICS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export MLFLOW_HTTP_REQUEST_MAX_RETRIES=${MLFLOW_HTTP_REQUEST_MAX_RETRIES:-2}
export GIT_PYTHON_REFRESH=quiet PYTHONWARNINGS=ignore
mkdir -p "$AIRFLOW_HOME/logs" runs
started=$(date +%s)
say() { printf '\n== %s (%ds)\n' "$*" $(($(date +%s) - started)); }

say "1/4 import the NCBI disease corpus from $SHARED"
[[ -f $SHARED/ncbi_disease/original/NCBItrainset_corpus.txt ]] || {
  echo "demo: the staged corpus is not at $SHARED (set NCBI_SHARED_DATA)" >&2; exit 2; }
# Deterministic import: the same release always gives the same bytes, hence the same data version.
"$BIN/ncbi-retrain" data import --pubtator "$SHARED/ncbi_disease/original" --iob "$SHARED/ncbi_disease/iob" \
  --mesh "$SHARED/mesh/2017MeshTree.txt" --out data --force

say "2/4 publish data/ to the DVC remote"
"$BIN/ncbi-retrain" data publish

say "3/4 run the ncbi_retrain DAG (profile $PROFILE) with airflow dags test"
"$BIN/airflow" db migrate >"$AIRFLOW_HOME/logs/db-migrate.log" 2>&1 || {
  tail -20 "$AIRFLOW_HOME/logs/db-migrate.log" >&2; exit 1; }
"$BIN/airflow" pools set "${NCBI_RETRAIN_GPU_POOL:-gpu}" 1 "training jobs (one accelerator here)" >/dev/null
# The tiny demo trains two epochs (the whole corpus, a random 2-layer BERT): ~3 minutes on 2 idle cores.
conf=$("$BIN/python" -c '
import json, os, sys
c = json.loads(os.environ.get("DEMO_CONF") or "{}")
c.setdefault("profile", sys.argv[1])
if c["profile"] == "tiny":
    c.setdefault("epochs", 2)
print(json.dumps(c))' "$PROFILE")
stamp=$(mktemp)
since=$(date +%s)
log=$AIRFLOW_HOME/logs/demo-$(date -u +%Y%m%dT%H%M%SZ).log
echo "conf $conf; full log: $log"
# The DAG runs in the background; the foreground shows each model's progress live (stage, epoch, steps,
# ETA, last dev score) from the progress.json its trainer keeps in runs/<run>/<model>/checkpoints/.
"$BIN/airflow" dags test ncbi_retrain -c "$conf" >"$log" 2>&1 &
dag=$!
trap 'kill "$dag" 2>/dev/null; wait "$dag" 2>/dev/null; exit 130' INT TERM
"$BIN/python" -m tasks.training.progress runs --since "$since" --pid "$dag" \
  --title "ncbi_retrain (profile $PROFILE)" || true
set +e
wait "$dag"
rc=$?
set -e
trap - INT TERM
# The run's work dir is the one folder under runs/ this run created.
run=$(find runs -mindepth 1 -maxdepth 1 -type d -newer "$stamp" -printf '%T@ %p\n' | sort -n | tail -1 | cut -d' ' -f2-)
rm -f "$stamp"
if [[ -z $run || ! -f $run/summary.json ]]; then
  echo "demo: the DAG run did not finish (airflow exited $rc); last log lines:" >&2
  grep -E "ERROR|error:|Error|failed" "$log" | tail -15 >&2 || tail -30 "$log" >&2
  [[ -n $run && -f $run/failure.md ]] && cat "$run/failure.md" >&2
  exit 1
fi

say "4/4 result ($run)"
"$BIN/python" -c 'import sys; from tasks.pipeline.summary import result_table; print(result_table(sys.argv[1]))' "$run/summary.json"
cat <<EOF

Open the UIs (each binds 127.0.0.1; Ctrl-C to stop):
  MLflow:      $BIN/mlflow ui --backend-store-uri sqlite:///$ROOT/mlruns/mlflow.db --host 127.0.0.1 --port 5000
  Airflow:     AIRFLOW_HOME=$AIRFLOW_HOME AIRFLOW__CORE__DAGS_FOLDER=$ROOT/dags $BIN/airflow api-server -H 127.0.0.1 -p 8080
               (user admin, password in $AIRFLOW_HOME/simple_auth_manager_passwords.json.generated)
  TensorBoard: $ROOT/.venv-train/bin/tensorboard --logdir $ROOT/runs --host 127.0.0.1 --port 6006
Registry:      $BIN/ncbi-retrain models list; $BIN/ncbi-retrain lineage ncbi-disease-ner@champion
Run files:     $run (summary.json, decisions with reports, training outputs)
Done in $(($(date +%s) - started)) s.
EOF
