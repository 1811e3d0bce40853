"""A stable hash of a resolved training config (pyyaml + hashlib only: the DAG imports it).

The DAG skips training when data version, code (git commit) and this fingerprint all equal the
champion's tags. Comments and key order in the YAML files do not change it; values do.
"""

from __future__ import annotations

import hashlib
import json

from tasks.training.config import compose


def config_fingerprint(model: str, profile: str, overrides: list[str] | tuple[str, ...] = ()) -> str:
    """sha256 (hex, 16 chars) of the composed config of `model` under `profile` with `overrides`."""
    cfg = compose(model, profile, list(overrides))
    canonical = json.dumps({"model": model, "profile": profile, "config": cfg}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]
