"""Training with NeMo 2.4.1: configs (YAML in NeMo's shape), train / evaluate / predict, pyfunc wrapper.

Only `config` and `data` are importable without NeMo (the orchestration env uses `config`); the
others need the training env (`train` imports Lightning at module level; the rest import NeMo, torch
and MLflow inside their functions).
"""
