#!/usr/bin/env bash
# `make up` / `make down`: the real stack on this machine, without containers, everything on 127.0.0.1.
#   PostgreSQL cluster in .stack/pg (databases airflow, mlflow, mlflow_auth; password auth)
#   MLflow tracking + registry server on it, authentication on (--app-name basic-auth); users
#   ncbi-pipeline (MANAGE on both registered models: the only account that moves aliases) and
#   ncbi-reader (READ); the registry webhook `ncbi-retrain-champion` into Airflow's receiver plugin
#   Airflow api-server (+ plugins/: the webhook receiver), scheduler, dag-processor, triggerer
#   (PARALLELISM=4, --skip-serve-logs: no log server on 0.0.0.0), as ncbi-pipeline
# Executor: NCBI_STACK_EXECUTOR (`make up EXECUTOR=...`): `local` (LocalExecutor, the default) or `celery`
#   (CeleryExecutor): Redis as the broker (Debian's redis-server, 127.0.0.1, password, no persistence) and
#   two Celery workers, `worker-default` (queue `default`) and `worker-gpu` (queue NCBI_RETRAIN_GPU_QUEUE,
#   default `gpu`: the DAG routes train/evaluate there), each with --skip-serve-logs; each records its name
#   as the task instances' host (NCBI_RETRAIN_WORKER_NAME), so the UI shows which worker ran what.
# Scheduled runs: NCBI_RETRAIN_PROFILE (default cpu) is their profile and the form's default;
#   NCBI_RETRAIN_SCHEDULE (cron, default 02:00 UTC; `none`: manual runs only); NCBI_RETRAIN_PROMOTE (default
#   auto; `approve`: a person approves each new champion, within NCBI_RETRAIN_APPROVAL_TIMEOUT, default 24 h).
# State in .stack/ (or NCBI_STACK_DIR): PIDs in .stack/*.pid (down stops each by its PID, with its
# process group), logs in .stack/logs/.
# Secrets: from the environment when set (NCBI_STACK_PG_PASSWORD, MLFLOW_AUTH_ADMIN_PASSWORD,
# NCBI_STACK_AIRFLOW_PASSWORD, NCBI_STACK_REDIS_PASSWORD, NCBI_RETRAIN_PIPELINE_PASSWORD,
# NCBI_RETRAIN_READER_PASSWORD, NCBI_RETRAIN_MLFLOW_WEBHOOK_SECRET), otherwise generated once into
# .stack/secrets.env (mode 600, untracked); a secret added by a newer version is appended to an existing file.
# Ports: NCBI_STACK_PG_PORT (5433), NCBI_STACK_MLFLOW_PORT (5000), NCBI_STACK_AIRFLOW_PORT (8080),
# NCBI_STACK_REDIS_PORT (6380).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STACK=${NCBI_STACK_DIR:-$ROOT/.stack}  # state, logs, PIDs, secrets (tests point it elsewhere)
BIN=$ROOT/.venv/bin
PG_PORT=${NCBI_STACK_PG_PORT:-5433}
MLFLOW_PORT=${NCBI_STACK_MLFLOW_PORT:-5000}
AIRFLOW_PORT=${NCBI_STACK_AIRFLOW_PORT:-8080}
REDIS_PORT=${NCBI_STACK_REDIS_PORT:-6380}
EXECUTOR=${NCBI_STACK_EXECUTOR:-local}
PG_BIN=${PG_BINDIR:-$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -1)")}
# In start order; `down` stops them in reverse (workers first, the broker after the scheduler).
COMPONENTS=(mlflow redis airflow-api-server airflow-scheduler airflow-dag-processor airflow-triggerer
  airflow-worker airflow-worker-gpu)

as_pg() { if ((EUID == 0)); then runuser -u postgres -- "$@"; else "$@"; fi; }
log() { printf 'stack: %s\n' "$*"; }

secrets() {
  umask 077
  gen() { "$BIN/python" -c 'import secrets; print(secrets.token_urlsafe(24))'; }
  fernet() { "$BIN/python" -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())'; }
  local name value
  touch "$STACK/secrets.env"
  for name in NCBI_STACK_PG_PASSWORD MLFLOW_AUTH_ADMIN_PASSWORD NCBI_STACK_AIRFLOW_PASSWORD \
    NCBI_STACK_JWT_SECRET NCBI_STACK_API_SECRET_KEY MLFLOW_FLASK_SERVER_SECRET_KEY \
    NCBI_STACK_REDIS_PASSWORD NCBI_RETRAIN_PIPELINE_PASSWORD NCBI_RETRAIN_READER_PASSWORD \
    NCBI_RETRAIN_MLFLOW_WEBHOOK_SECRET MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY; do
    grep -q "^$name=.\+" "$STACK/secrets.env" && continue
    case $name in
      MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY) value=${!name:-$(fernet)} ;;  # a Fernet key, shared by MLflow's workers
      NCBI_STACK_JWT_SECRET | NCBI_STACK_API_SECRET_KEY | MLFLOW_FLASK_SERVER_SECRET_KEY) value=$(gen) ;;
      *) value=${!name:-$(gen)} ;;
    esac
    [[ -n $value ]] || { log "could not generate $name"; exit 1; }
    echo "$name=$value" >>"$STACK/secrets.env"
  done
  set -a
  # shellcheck disable=SC1091
  source "$STACK/secrets.env"
  set +a
  umask 022
}

environment() {  # what every component (and the training jobs they start) sees
  local pg="postgres:$NCBI_STACK_PG_PASSWORD@127.0.0.1:$PG_PORT"
  export PGPASSWORD=$NCBI_STACK_PG_PASSWORD
  export MLFLOW_AUTH_DATABASE_URI="postgresql://$pg/mlflow_auth"
  export MLFLOW_AUTH_ADMIN_USERNAME=admin MLFLOW_AUTH_CONFIG_PATH=$STACK/mlflow/basic_auth.ini
  export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
  # Webhooks to the loopback receiver: MLflow allows only https and public addresses by default.
  export MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true
  export NCBI_RETRAIN_MLFLOW_WEBHOOK_URL=http://127.0.0.1:$AIRFLOW_PORT/ncbi-retrain/mlflow-webhook
  export MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT
  export MLFLOW_TRACKING_USERNAME=admin MLFLOW_TRACKING_PASSWORD=$MLFLOW_AUTH_ADMIN_PASSWORD
  export MLFLOW_HTTP_REQUEST_MAX_RETRIES=3 MLFLOW_HTTP_REQUEST_TIMEOUT=30
  export AIRFLOW_HOME=$STACK/airflow
  export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="postgresql+psycopg2://$pg/airflow"
  export AIRFLOW__CORE__PARALLELISM=4
  case $EXECUTOR in
    local) export AIRFLOW__CORE__EXECUTOR=LocalExecutor ;;
    celery)
      export AIRFLOW__CORE__EXECUTOR=CeleryExecutor
      export AIRFLOW__CELERY__BROKER_URL="redis://:$NCBI_STACK_REDIS_PASSWORD@127.0.0.1:$REDIS_PORT/0"
      # result backend: Airflow's default, the metadata database (db+postgresql)
      export AIRFLOW__CORE__HOSTNAME_CALLABLE=tasks.settings.worker_hostname
      ;;
    *) log "unknown executor '$EXECUTOR' (make up EXECUTOR=...): expected local or celery"; exit 2 ;;
  esac
  export NCBI_RETRAIN_GPU_QUEUE=${NCBI_RETRAIN_GPU_QUEUE:-gpu}
  export NCBI_RETRAIN_PROFILE=${NCBI_RETRAIN_PROFILE:-cpu}  # scheduled runs' profile, the form's default
  export AIRFLOW__CORE__DAGS_FOLDER=$ROOT/dags AIRFLOW__CORE__LOAD_EXAMPLES=False
  export AIRFLOW__CORE__PLUGINS_FOLDER=$ROOT/plugins
  export AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:$AIRFLOW_PORT/execution/
  export AIRFLOW__API__BASE_URL=http://127.0.0.1:$AIRFLOW_PORT
  export AIRFLOW__API_AUTH__JWT_SECRET=$NCBI_STACK_JWT_SECRET AIRFLOW__API__SECRET_KEY=$NCBI_STACK_API_SECRET_KEY
  export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=admin:admin
  export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=$STACK/airflow/passwords.json
  export NCBI_RETRAIN_PROJECT_DIR=$ROOT NCBI_RETRAIN_TRAIN_VENV=$ROOT/.venv-train
  export DVC_NO_ANALYTICS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
}

running() { [[ -f $STACK/$1.pid ]] && kill -0 "$(cat "$STACK/$1.pid")" 2>/dev/null; }

start() {  # start NAME CMD...: own session (so `down` can stop its workers too), log and PID in .stack
  local name=$1; shift
  if running "$name"; then log "$name already running (pid $(cat "$STACK/$name.pid"))"; return; fi
  setsid "$@" >"$STACK/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$STACK/$name.pid"
  log "$name started (pid $!, log .stack/logs/$name.log)"
}

wait_http() {  # wait_http NAME URL: until it answers, or fail with the log tail
  for _ in $(seq 1 240); do
    if curl -fsS -o /dev/null "$2" 2>/dev/null; then return 0; fi
    running "$1" || { log "$1 exited:"; tail -20 "$STACK/logs/$1.log" >&2; return 1; }
    sleep 0.5
  done
  log "$1 did not answer at $2 within 120 s:"; tail -20 "$STACK/logs/$1.log" >&2; return 1
}

postgres_up() {
  [[ -x $PG_BIN/initdb ]] || { log "PostgreSQL server binaries not found (set PG_BINDIR)"; exit 1; }
  if [[ ! -f $STACK/pg/PG_VERSION ]]; then
    mkdir -p "$STACK/pg" "$STACK/pg-run"
    local pw=$STACK/pg-run/pwfile
    printf '%s\n' "$NCBI_STACK_PG_PASSWORD" >"$pw"
    ((EUID == 0)) && chown -R postgres:postgres "$STACK/pg" "$STACK/pg-run"
    as_pg "$PG_BIN/initdb" -D "$STACK/pg" -U postgres -A scram-sha-256 --pwfile="$pw" --no-sync >"$STACK/logs/initdb.log"
    rm -f "$pw"
  fi
  if ! as_pg "$PG_BIN/pg_ctl" -D "$STACK/pg" status >/dev/null 2>&1; then
    as_pg "$PG_BIN/pg_ctl" -D "$STACK/pg" -l "$STACK/pg-run/server.log" -w start \
      -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -c unix_socket_directories=$STACK/pg-run" >/dev/null
    log "postgres started on 127.0.0.1:$PG_PORT (data .stack/pg)"
  fi
  for db in airflow mlflow mlflow_auth; do
    "$PG_BIN/psql" -w -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$db'" \
      | grep -q 1 || "$PG_BIN/createdb" -w -h 127.0.0.1 -p "$PG_PORT" -U postgres "$db"
  done
}

redis_up() {  # the Celery broker: loopback only, a password, nothing persisted
  command -v redis-server >/dev/null \
    || { log "redis-server not found: apt-get install redis-server (EXECUTOR=celery needs it)"; exit 1; }
  "$BIN/python" -c 'import airflow.providers.celery' 2>/dev/null \
    || { log "the Celery provider is missing from .venv: run make setup"; exit 1; }
  mkdir -p "$STACK/redis"
  (umask 077; cat >"$STACK/redis/redis.conf" <<EOF
bind 127.0.0.1
port $REDIS_PORT
protected-mode yes
requirepass $NCBI_STACK_REDIS_PASSWORD
save ""
appendonly no
dir $STACK/redis
EOF
  )
  start redis redis-server "$STACK/redis/redis.conf"
  for _ in $(seq 1 60); do
    [[ $(REDISCLI_AUTH=$NCBI_STACK_REDIS_PASSWORD redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]] \
      && return 0
    running redis || { log "redis exited:"; tail -20 "$STACK/logs/redis.log" >&2; return 1; }
    sleep 0.5
  done
  log "redis did not answer on 127.0.0.1:$REDIS_PORT within 30 s"; return 1
}

up() {
  mkdir -p "$STACK/logs" "$STACK/mlflow/artifacts" "$STACK/airflow"
  if running airflow-scheduler && [[ $(cat "$STACK/executor" 2>/dev/null) != "$EXECUTOR" ]]; then
    log "the stack is running with EXECUTOR=$(cat "$STACK/executor" 2>/dev/null || echo local): make down first"
    exit 2
  fi
  echo "$EXECUTOR" >"$STACK/executor"
  secrets
  environment
  postgres_up
  if [[ $EXECUTOR == celery ]]; then redis_up; fi
  sed "s|\${MLFLOW_AUTH_DATABASE_URI}|$MLFLOW_AUTH_DATABASE_URI|" mlflow/basic_auth.ini >"$STACK/mlflow/basic_auth.ini"
  chmod 600 "$STACK/mlflow/basic_auth.ini"
  start mlflow "$BIN/mlflow" server --app-name basic-auth --host 127.0.0.1 --port "$MLFLOW_PORT" \
    --backend-store-uri "postgresql://postgres:$NCBI_STACK_PG_PASSWORD@127.0.0.1:$PG_PORT/mlflow" \
    --artifacts-destination "$STACK/mlflow/artifacts" --workers 2
  wait_http mlflow "http://127.0.0.1:$MLFLOW_PORT/health"
  # As the MLflow admin: the pipeline and reader accounts, then the webhook (both idempotent).
  "$BIN/ncbi-retrain" access setup --pipeline-user ncbi-pipeline --reader-user ncbi-reader
  "$BIN/ncbi-retrain" webhooks install
  # Airflow (and the training jobs it starts) work as the pipeline's account, not as the admin.
  export MLFLOW_TRACKING_USERNAME=ncbi-pipeline MLFLOW_TRACKING_PASSWORD=$NCBI_RETRAIN_PIPELINE_PASSWORD
  (umask 077; printf '{"admin": "%s"}\n' "$NCBI_STACK_AIRFLOW_PASSWORD" >"$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
  "$BIN/airflow" db migrate >"$STACK/logs/airflow-db-migrate.log" 2>&1 \
    || { tail -20 "$STACK/logs/airflow-db-migrate.log" >&2; exit 1; }
  "$BIN/airflow" pools set "${NCBI_RETRAIN_GPU_POOL:-gpu}" 1 "training jobs (one accelerator here)" >/dev/null
  start airflow-api-server "$BIN/airflow" api-server -H 127.0.0.1 -p "$AIRFLOW_PORT"
  start airflow-scheduler "$BIN/airflow" scheduler --skip-serve-logs
  start airflow-dag-processor "$BIN/airflow" dag-processor
  start airflow-triggerer "$BIN/airflow" triggerer --skip-serve-logs
  if [[ $EXECUTOR == celery ]]; then  # no log servers: the api-server reads their logs in .stack/airflow/logs
    start airflow-worker env NCBI_RETRAIN_WORKER_NAME=worker-default \
      "$BIN/airflow" celery worker -q default -c 2 -H default@%h --skip-serve-logs
    start airflow-worker-gpu env NCBI_RETRAIN_WORKER_NAME=worker-gpu \
      "$BIN/airflow" celery worker -q "$NCBI_RETRAIN_GPU_QUEUE" -c 1 -H gpu@%h --skip-serve-logs
  fi
  wait_http airflow-api-server "http://127.0.0.1:$AIRFLOW_PORT/api/v2/monitor/health"
  local schedule=${NCBI_RETRAIN_SCHEDULE:-0 2 * * *} workers="" took=""
  case $NCBI_RETRAIN_PROFILE in
    cpu) took=" (about 25 minutes on 2 CPU cores)" ;;
    tiny) took=" (a few minutes; a random tiny BERT, for trying the stack only)" ;;
  esac
  [[ $EXECUTOR == celery ]] && workers=", Redis 127.0.0.1:$REDIS_PORT, worker-default + worker-gpu (queue $NCBI_RETRAIN_GPU_QUEUE)"
  cat <<EOF
stack: up ($AIRFLOW__CORE__EXECUTOR$workers)
  Airflow  http://127.0.0.1:$AIRFLOW_PORT   user admin, password NCBI_STACK_AIRFLOW_PASSWORD in .stack/secrets.env
  MLflow   http://127.0.0.1:$MLFLOW_PORT   user admin, password MLFLOW_AUTH_ADMIN_PASSWORD in .stack/secrets.env
           (ncbi-pipeline moves aliases; ncbi-reader reads: NCBI_RETRAIN_{PIPELINE,READER}_PASSWORD)
  Webhook  MLflow alias moves -> $NCBI_RETRAIN_MLFLOW_WEBHOOK_URL -> DAG ncbi_champion
  Postgres 127.0.0.1:$PG_PORT    user postgres, password NCBI_STACK_PG_PASSWORD in .stack/secrets.env

  Both DAGs start PAUSED: nothing runs until you unpause one (UI toggle, or PATCH /api/v2/dags/ID).
EOF
  if [[ ${schedule,,} =~ ^(none|manual)?$ ]]; then
    echo "  ncbi_retrain has no schedule (NCBI_RETRAIN_SCHEDULE=$schedule): it runs only when triggered."
  else
    cat <<EOF
  Unpausing ncbi_retrain starts its latest scheduled run at once (cron '$schedule', UTC) with profile
  $NCBI_RETRAIN_PROFILE$took, and a manual run waits behind it (one run at a time).
  Manual runs only: make down; NCBI_RETRAIN_SCHEDULE=none make up.
  Scheduled runs' profile: NCBI_RETRAIN_PROFILE=tiny|cpu|gpu make up.
EOF
  fi
  cat <<EOF
  Trigger: the Trigger button on the DAG's page (the Params form), or
           curl -X POST http://127.0.0.1:$AIRFLOW_PORT/auth/token -H 'Content-Type: application/json' \\
             -d '{"username": "admin", "password": "..."}'   then POST /api/v2/dags/ncbi_retrain/dagRuns
  Approve: a run with promote=approve (scheduled runs: NCBI_RETRAIN_PROMOTE=${NCBI_RETRAIN_PROMOTE:-auto}) waits
           under Required actions in the UI until someone approves or rejects it (no answer within
           ${NCBI_RETRAIN_APPROVAL_TIMEOUT:-24 h}, NCBI_RETRAIN_APPROVAL_TIMEOUT, counts as a reject); from a shell:
           export NCBI_RETRAIN_AIRFLOW_URL=http://127.0.0.1:$AIRFLOW_PORT NCBI_RETRAIN_AIRFLOW_USER=admin
           export NCBI_RETRAIN_AIRFLOW_PASSWORD=\$(sed -n 's/^NCBI_STACK_AIRFLOW_PASSWORD=//p' $STACK/secrets.env)
           $BIN/ncbi-retrain approve classifier --run RUN_ID --reason "why" [--reject]
  Stop:    make down
EOF
}

stop_pid() {  # stop_pid NAME: TERM its process group, wait, then KILL what is left
  local name=$1 pid
  [[ -f $STACK/$name.pid ]] || return 0
  pid=$(cat "$STACK/$name.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    log "$name stopped (pid $pid)"
  fi
  rm -f "$STACK/$name.pid"
}

down() {
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do stop_pid "${COMPONENTS[i]}"; done
  if [[ -f $STACK/pg/PG_VERSION ]] && as_pg "$PG_BIN/pg_ctl" -D "$STACK/pg" status >/dev/null 2>&1; then
    as_pg "$PG_BIN/pg_ctl" -D "$STACK/pg" -m fast -w stop >/dev/null
    log "postgres stopped"
  fi
  log "down (data kept in .stack/; remove it for a fresh stack)"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  *) echo "usage: scripts/stack.sh up|down" >&2; exit 2 ;;
esac
