"""Drift between two data versions (`tasks.drift`): counts, class balance, entities per sentence, vocabulary
overlap, added and removed PMIDs, and the warnings (test split changed, PMIDs removed, shares moved)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.drift import compare, drift, profile, summary_lines, to_markdown

BASE = {
    "train": [("1", "Breast cancer risk .", 0, "B I O O"), ("2", "Seizures in mice .", 1, "B O O O")],
    "dev": [("3", "A gene .", 2, "O O O")],
    "test": [("4", "Colon cancer .", 0, "B I O"), ("5", "No disease here .", 2, "O O O O")],
}


def write(root: Path, splits: dict[str, list[tuple[str, str, int, str]]]) -> Path:
    """A data directory in the import's layout: one tc3 row and one ner3 sentence per document."""
    (root / "tc3").mkdir(parents=True)
    (root / "ner3").mkdir()
    for split, docs in splits.items():
        (root / "tc3" / f"{split}.tsv").write_text("".join(f"{t}\t{y}\n" for _, t, y, _ in docs))
        (root / "tc3" / f"{split}.ids").write_text("".join(f"{p}\n" for p, *_ in docs))
        (root / "ner3" / f"text_{split}.txt").write_text("".join(f"{t}\n" for _, t, _, _ in docs))
        (root / "ner3" / f"labels_{split}.txt").write_text("".join(f"{g}\n" for *_, g in docs))
    return root


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return write(tmp_path / "old", BASE)


def test_identical_versions_have_no_drift(base: Path):
    doc = drift(base, base)
    assert not any(s["changed"] for s in doc["splits"].values())
    assert doc["warnings"] == []
    assert doc["splits"]["train"]["vocabulary"]["jaccard"] == 1.0
    pmids = doc["splits"]["train"]["pmids"]
    assert pmids == {"added": 0, "removed": 0, "added_sample": [], "removed_sample": []}


def test_added_documents_show_in_counts_shares_density_vocabulary_and_pmids(base: Path, tmp_path: Path):
    grown = dict(BASE, train=[*BASE["train"], ("6", "Epilepsy and migraine .", 1, "B O B O")])
    doc = drift(base, write(tmp_path / "new", grown), reference={"data_version": "a.dir"})
    train = doc["splits"]["train"]
    assert train["changed"] and not doc["splits"]["test"]["changed"] and not doc["splits"]["dev"]["changed"]
    assert train["abstracts"] == {"from": 2, "to": 3, "change": 1}
    assert train["entities"] == {"from": 2, "to": 4, "change": 2}
    assert train["entities_per_sentence"]["from"] == 1.0 and train["entities_per_sentence"]["to"] == 1.3333
    assert train["class_share"]["1"] == {"from": 0.5, "to": 0.6667, "change": 0.1667}
    assert train["pmids"]["added"] == 1 and train["pmids"]["added_sample"] == ["6"]
    v = train["vocabulary"]
    assert (v["from"], v["to"], v["shared"]) == (7, 10, 7)  # lower-cased types; "." shared
    assert v["jaccard"] == 0.7 and v["new_token_share"] == round(3 / 12, 4)
    assert doc["from"] == {"data_version": "a.dir"}
    # The share of class neurological moved by 17 points: worth a look; the test split did not change.
    assert any("share of class neurological" in w for w in doc["warnings"])
    assert not any("test split" in w for w in doc["warnings"])


def test_a_changed_test_split_is_a_warning(base: Path, tmp_path: Path):
    changed = dict(BASE, test=[*BASE["test"], ("7", "Gliomas .", 0, "B O")])
    doc = drift(base, write(tmp_path / "new", changed))
    assert doc["splits"]["test"]["changed"]
    assert doc["warnings"][0].startswith("the test split changed (2 -> 3 abstracts")
    assert "champions are only comparable on one test split" in doc["warnings"][0]


def test_relabelled_test_rows_count_as_a_changed_test_split(base: Path, tmp_path: Path):
    relabelled = dict(BASE, test=[BASE["test"][0], ("5", "No disease here .", 1, "O O O O")])
    doc = drift(base, write(tmp_path / "new", relabelled))
    assert doc["splits"]["test"]["changed"] and doc["splits"]["test"]["pmids"]["added"] == 0
    assert any("test split changed" in w for w in doc["warnings"])


def test_removed_pmids_and_a_density_drop_are_warnings(base: Path, tmp_path: Path):
    shrunk = dict(BASE, train=[("1", "Breast cancer risk .", 0, "O O O O"), BASE["train"][1]])
    shrunk["dev"] = []
    doc = drift(base, write(tmp_path / "new", shrunk))
    assert doc["splits"]["dev"]["pmids"]["removed_sample"] == ["3"]
    assert "dev: 1 PMIDs removed (e.g. 3)" in doc["warnings"]
    assert "train: entities per sentence moved 1.000 -> 0.500" in doc["warnings"]


def test_test_oov_rate_follows_the_train_vocabulary(base: Path, tmp_path: Path):
    grown = dict(BASE, train=[*BASE["train"], ("8", "Colon disease here .", 0, "B I O O")])
    doc = compare(profile(base), profile(write(tmp_path / "new", grown)))
    assert doc["test_oov"]["from"] > doc["test_oov"]["to"]


def test_reports_render_every_split_and_the_warnings(base: Path, tmp_path: Path):
    changed = dict(BASE, test=[*BASE["test"], ("7", "Gliomas .", 0, "B O")])
    reference = {"data_version": "a.dir", "why": "champion"}
    doc = drift(base, write(tmp_path / "new", changed), reference=reference)
    md = to_markdown(doc)
    assert md.startswith("## Data drift\n") and "From `a.dir` (champion)" in md
    assert "| test | yes | 2 → 3 (+1) |" in md and "| dev | no | 1 |" in md
    assert "- **warning**: the test split changed" in md
    lines = summary_lines(doc)
    assert lines[1].startswith("  train unchanged") and lines[3].startswith("  test  2 -> 3 abstracts")
    assert lines[-1].startswith("  warning: ")


def test_the_data_drift_command(base: Path, tmp_path: Path, capsys):
    from tasks.cli import run

    grown = dict(BASE, train=[*BASE["train"], ("6", "Epilepsy .", 1, "B O")])
    new = write(tmp_path / "new", grown)
    assert run(["data", "drift", str(base), str(new), "--out", str(tmp_path / "drift.md")]) == 0
    assert "train 2 -> 3 abstracts" in capsys.readouterr().out
    assert (tmp_path / "drift.md").read_text().startswith("# Data drift")
    assert run(["data", "drift", str(base), str(tmp_path / "nope")]) == 2
    assert "nope: not a data directory" in capsys.readouterr().err
