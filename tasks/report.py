"""The gate decision as a Markdown report with PNG plots (matplotlib, Agg backend: no display)."""

from __future__ import annotations

from pathlib import Path

from tasks.vocab import GateDecision, class_name


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # headless workers: never a GUI backend
    import matplotlib.pyplot as plt

    return plt


def _confusion_png(decision: GateDecision, path: Path) -> None:
    plt = _plt()
    cm = decision.confusion_matrix or []
    names = [class_name(c) for c in decision.labels]
    fig, ax = plt.subplots(figsize=(4.2, 3.6), dpi=110)
    im = ax.imshow(cm, cmap="Blues")
    for i, row in enumerate(cm):
        for j, v in enumerate(row):
            peak = max(max(r) for r in cm) if cm else 0
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > peak / 2 else "black")
    ax.set_xticks(range(len(names)), names, rotation=20)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title("Challenger confusion matrix (test)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _per_class_png(decision: GateDecision, path: Path) -> None:
    plt = _plt()
    keys = list(decision.per_class_f1)
    names = [class_name(k) for k in keys]
    cand = [decision.per_class_f1[k]["candidate"] or 0.0 for k in keys]
    champ = [decision.per_class_f1[k]["champion"] for k in keys]
    fig, ax = plt.subplots(figsize=(4.8, 3.2), dpi=110)
    xs = range(len(keys))
    width = 0.38
    ax.bar([x - width / 2 for x in xs], cand, width, label="challenger")
    if any(v is not None for v in champ):
        ax.bar([x + width / 2 for x in xs], [v or 0.0 for v in champ], width, label="champion")
    ax.set_xticks(list(xs), names)
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1")
    ax.set_title("Per-class F1 (test)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _bootstrap_png(decision: GateDecision, path: Path) -> None:
    plt = _plt()
    boot = next(c for c in decision.checks if c.name.startswith("bootstrap_"))
    n = boot.numbers
    fig, ax = plt.subplots(figsize=(5.2, 3.2), dpi=110)
    ax.hist(decision.bootstrap_diffs, bins=50, color="#777", alpha=0.8)
    ax.axvline(n["ci_low"], color="tab:blue", ls="--", label=f"{round(n['confidence'] * 100)}% CI")
    ax.axvline(n["ci_high"], color="tab:blue", ls="--")
    ax.axvline(n["threshold"], color="tab:red", label=f"threshold {n['threshold']:+.3f}")
    ax.axvline(n["observed_diff"], color="black", label=f"observed {n['observed_diff']:+.3f}")
    ax.set_xlabel(f"{decision.metric}: challenger - champion")
    ax.set_title(f"Paired bootstrap, {n['resamples']} resamples")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, dict):
        return ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items())
    if isinstance(v, list):
        return "; ".join(_fmt(x) for x in v) or "-"
    return str(v)


def render_report(
    decision: GateDecision, out_dir: Path, stem: str, json_name: str | None = None
) -> list[Path]:
    """Write `<stem>.md` and its plots into `out_dir`; return the files written (report last)."""
    out_dir = Path(out_dir)
    files: list[Path] = []
    plots: list[tuple[str, str]] = []
    if decision.confusion_matrix:
        p = out_dir / f"{stem}.confusion.png"
        _confusion_png(decision, p)
        files.append(p)
        plots.append(("Confusion matrix", p.name))
    if decision.per_class_f1:
        p = out_dir / f"{stem}.per_class_f1.png"
        _per_class_png(decision, p)
        files.append(p)
        plots.append(("Per-class F1, challenger vs champion", p.name))
    if decision.bootstrap_diffs:
        p = out_dir / f"{stem}.bootstrap.png"
        _bootstrap_png(decision, p)
        files.append(p)
        plots.append(("Bootstrap distribution of the difference", p.name))

    champ = "none" if decision.champion_value is None else f"{decision.champion_value:.4f}"
    lines = [
        f"# Gate decision: {decision.model} — **{decision.gate.upper()}**",
        "",
        decision.reason,
        "",
        "| | |",
        "|---|---|",
        f"| profile | {decision.profile} |",
        f"| metric | {decision.metric} |",
        f"| challenger | {decision.candidate_value:.4f} (`{decision.candidate_model}`) |",
        f"| champion | {champ} (`{decision.champion_model}`) |",
        f"| data version | `{decision.data_version}` |",
        f"| decided at | {decision.decided_at} |",
        f"| policy | {decision.policy.get('source', '')} (mode {decision.policy.get('mode')}, "
        f"margin {decision.policy.get('margin')}) |",
    ]
    if json_name:
        lines.append(f"| decision JSON | `{json_name}` |")
    lines += ["", "## Checks", "", "| check | result | detail | numbers |", "|---|---|---|---|"]
    for c in decision.checks:
        numbers = _fmt({k: v for k, v in c.numbers.items() if k != "failures"})
        lines.append(f"| {c.name} | {'pass' if c.passed else '**FAIL**'} | {c.detail} | {numbers} |")
    for title, name in plots:
        lines += ["", f"## {title}", "", f"![{title}]({name})"]
    if decision.drift:
        from tasks.drift import to_markdown

        lines += ["", to_markdown(decision.drift).rstrip("\n")]
    report = out_dir / f"{stem}.md"
    report.write_text("\n".join(lines) + "\n")
    files.append(report)
    return files
