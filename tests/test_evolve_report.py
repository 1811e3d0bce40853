"""The evolve loop's verdict and tables (pure functions over its outcomes), and its scratch folder rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.errors import UsageError
from tasks.evolve.loop import Loop, ModelOutcome, VersionOutcome, prepare, verdict, version_table


def outcome(tag: str, **models: ModelOutcome) -> VersionOutcome:
    return VersionOutcome(tag, f"{tag}.dir", f"made {tag}", f"run-{tag}", f"/runs/{tag}", dict(models))


def model(gate: str, before: str | None, after: str | None, registered: str, **kw) -> ModelOutcome:
    return ModelOutcome(
        True, "entity_f1", 0.5, (0.4, 0.6), gate=gate, registered=registered, champion_before=before,
        champion_after=after, reason=f"{gate} because", **kw,
    )  # fmt: skip


GOOD = [
    outcome("v1", classifier=model("passed", None, "1", "1"), ner=model("passed", None, "1", "1")),
    outcome("v2", classifier=model("passed", "1", "2", "2"), ner=model("failed", "1", "1", "2")),
    outcome("v3", classifier=model("failed", "2", "2", "3"), ner=model("failed", "1", "1", "3")),
]


def test_the_claim_holds_when_v3_is_refused_and_no_champion_moves():
    ok, text = verdict(GOOD)
    assert (
        ok and text == "v3 refused by the gate for both models; champion unchanged (classifier v2, ner v1)."
    )


@pytest.mark.parametrize(
    ("v3_ner", "problem"),
    [
        (model("passed", "1", "3", "3"), "v3 ner: the gate did not refuse it"),
        (model("failed", "1", "3", "3"), "v3 ner: champion moved v1 -> v3"),
    ],
)
def test_the_claim_fails_when_v3_gets_through(v3_ner, problem):
    ok, text = verdict([*GOOD[:2], outcome("v3", classifier=GOOD[2].models["classifier"], ner=v3_ner)])
    assert not ok and problem in text and text.startswith("The loop's claim does NOT hold")


def test_a_loop_that_stopped_early_does_not_hold():
    assert verdict(GOOD[:2]) == (False, "The loop's claim does NOT hold: v3 did not run.")


def test_the_version_table_shows_cis_gate_and_where_the_champion_went():
    v2 = outcome(
        "v2",
        classifier=model("passed", "1", "2", "2", champion_value=0.4, diff=0.1, diff_ci=(0.02, 0.2)),
        ner=model("failed", "1", "1", "2"),
    )
    v2.drift_warnings = ["train: entities per sentence moved 0.947 -> 0.801"]
    table = version_table(v2)
    row = "| classifier (entity_f1) | 0.500 [0.400, 0.600] | 0.400 | +0.100 [+0.020, +0.200] | passed | v2 |"
    assert f"{row} v1 → **v2** |" in table
    assert "| ner (entity_f1) | 0.500 [0.400, 0.600] | - | - | failed | v2 | v1 (kept) |" in table
    assert "- drift warning: train: entities per sentence moved 0.947 -> 0.801" in table


def test_the_scratch_folder_must_be_new_or_an_earlier_loop(tmp_path: Path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UsageError, match="holds no earlier loop"):
        prepare(Loop(root=tmp_path / "mine"))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(UsageError, match="nope: not found"):
        prepare(Loop(root=tmp_path / "new", release=tmp_path / "nope"))
    assert not (tmp_path / "new").exists()
