"""Training-env tests (run by `.venv-train/bin/pytest tests/train`): NeMo, torch, seqeval."""

from __future__ import annotations

import pytest

pytest.importorskip("nemo", reason="needs the training env (.venv-train)")
