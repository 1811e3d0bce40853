"""The training env as `make setup` builds it."""

from __future__ import annotations

import importlib.metadata
import sys
from importlib.util import cache_from_source
from pathlib import Path

# Each train job is a new process importing these; without .pyc files it compiles them from source.
HOT_PATH = ("nemo_toolkit", "megatron_core", "lightning", "transformers", "torch")


def test_the_training_env_ships_compiled_bytecode():
    # Most of these files were never imported by this process: their .pyc can only come from the
    # install (setup's compileall after uv, or pip's default), not from a first import.
    uncompiled: dict[str, str] = {}
    for dist in HOT_PATH:
        sources = [f.locate() for f in importlib.metadata.distribution(dist).files or [] if f.suffix == ".py"]
        assert sources, f"{dist} lists no .py files"
        missing = sum(not Path(cache_from_source(str(s))).is_file() for s in sources)
        if missing > 0.01 * len(sources):  # torch ships one file in 3.12-only syntax
            uncompiled[dist] = f"{missing} of {len(sources)}"
    assert not uncompiled, f"modules without .pyc in {sys.prefix} (run `make setup`): {uncompiled}"
