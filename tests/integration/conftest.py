"""Integration tier: real servers on 127.0.0.1. The `postgres` and `mlflow_server` fixtures (and the
helpers below) live in tests/servers.py, shared with the fault tier; tests/conftest.py registers them."""

from __future__ import annotations

from servers import (  # noqa: F401  (helpers the integration tests import from here)
    MlflowProcess,
    MlflowServer,
    PostgresCluster,
    free_port,
    stop_process_group,
    wait_http,
)
