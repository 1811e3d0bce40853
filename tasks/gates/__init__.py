"""The promotion gate: `policy` (tasks/gates.yaml, validated), `decision` (the checks and the reason),
`documents` (metrics.json in, decision JSON + Markdown report out). The statistics are `tasks.stats`.

Runs in both environments (numpy, scipy, scikit-learn, pydantic, matplotlib for the report).
"""

from tasks.gates.decision import decide
from tasks.gates.documents import load_decision, load_metrics, write_decision
from tasks.gates.policy import POLICY_FILE, GatePolicy, load_policy

__all__ = [
    "POLICY_FILE",
    "GatePolicy",
    "decide",
    "load_decision",
    "load_metrics",
    "load_policy",
    "write_decision",
]
