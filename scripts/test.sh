#!/usr/bin/env bash
# The README's test command: every tier, in the environment each belongs to.
#   orchestration tests (.venv):  tests/ except tests/train  (data, validation, gates, registry, DAGs,
#                                 integration on real servers, the fault-injection tier tests/faults
#                                 ending with `faults survived N/N`, containers when podman is available)
#   training tests (.venv-train): tests/train                (NeMo tiny models, metrics, pyfunc)
# Extra arguments go to both pytest runs (e.g. -m "not container").
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
run() {  # pytest exit 5 ("no tests collected") is a failure here: a tier that ran nothing proves nothing
  "$@"; local rc=$?
  if ((rc != 0)); then echo "test: '$*' exited $rc" >&2; status=1; fi
}
run .venv/bin/pytest tests --ignore=tests/train "$@"
run .venv-train/bin/pytest tests/train "$@"
exit $status
