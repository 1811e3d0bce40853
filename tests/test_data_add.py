"""`data add`: new annotated abstracts (tests/fixtures/add/new_abstracts.txt, three made-up documents)
appended to a copy of the imported release; every refusal names file:line and leaves data/ byte for byte
as it was."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tasks.cli import run
from tasks.settings import get_settings

NEW = Path(__file__).parent / "fixtures" / "add" / "new_abstracts.txt"
NEW_LABELS = {"90000001": 0, "90000002": 1, "90000003": 2}  # cancer (C04), neurological (C10), other


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def add_args(data: Path, pubtator: Path, *extra: str) -> list[str]:
    return ["data", "add", "--pubtator", str(pubtator), "--data", str(data), *extra]


@pytest.fixture
def mesh(shared_data: Path) -> str:
    return str(shared_data / "mesh" / "2017MeshTree.txt")


def test_add_appends_documents_and_records_them(
    data_copy: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from tasks.validation import validate_dir

    # no --mesh: the tree MANIFEST.json records, found under Settings.shared_data/mesh/ by name and sha256
    monkeypatch.setenv("NCBI_RETRAIN_SHARED_DATA", str(shared_data))
    get_settings.cache_clear()
    before = tree_bytes(data_copy)
    try:
        assert run([*add_args(data_copy, NEW), "--json"]) == 0
    finally:
        get_settings.cache_clear()
    summary = json.loads(capsys.readouterr().out)
    after = tree_bytes(data_copy)

    # other splits untouched; the train split grows
    changed = {n for n in after if after[n] != before.get(n)}
    assert changed == {
        "MANIFEST.json",
        "tc3/train.tsv",
        "tc3/train.ids",
        "ner3/text_train.txt",
        "ner3/labels_train.txt",
    }
    ids = lines(data_copy / "tc3" / "train.ids")
    rows = lines(data_copy / "tc3" / "train.tsv")
    old_ids = before["tc3/train.ids"].decode().splitlines()
    assert sorted(ids) == ids and set(ids) == set(old_ids) | set(NEW_LABELS)  # sorted as strings
    labels = {pmid: int(row.rsplit("\t", 1)[1]) for pmid, row in zip(ids, rows, strict=True)}
    assert {p: labels[p] for p in NEW_LABELS} == NEW_LABELS
    old_rows = dict(zip(old_ids, before["tc3/train.tsv"].decode().splitlines(), strict=True))
    assert all(row == old_rows[p] for p, row in zip(ids, rows, strict=True) if p in old_rows)

    # ner3: the old sentences first (their indices are NER item ids), the new ones appended in PMID order
    text, tags = lines(data_copy / "ner3" / "text_train.txt"), lines(data_copy / "ner3" / "labels_train.txt")
    old_text = before["ner3/text_train.txt"].decode().splitlines()
    assert text[: len(old_text)] == old_text
    new = list(zip(text[len(old_text) :], tags[len(old_text) :], strict=True))
    assert new[:4] == [
        ("Germline BRCA2 variants in familial breast cancer .", "O O O O B I I O"),
        (
            "Breast cancer ( BC ) risk was studied in 120 families , e . g . those with two affected "
            "sisters .",
            "B I O B O O O O O O O O O O O O O O O O O O",
        ),
        (
            "Carriers had a 2 . 5 - fold higher risk of ovarian cancer than non - carriers ( P < 0 . 01 ) .",
            "O O O O O O O O O O O B I O O O O O O O O O O O O",
        ),
        ("Smith et al . reported a similar excess of Hodgkin ' s disease .", "O O O O O O O O O B I I I O"),
    ]
    assert new[-1] == ("No liver cirrhosis was seen .", "O B I O O O")
    assert len(new) == 11

    manifest = json.loads(after["MANIFEST.json"])
    entry = manifest["added"][-1]
    assert entry == summary["added"]
    assert entry["source"] == "new_abstracts.txt" and entry["split"] == "train"
    assert entry["sha256"] == hashlib.sha256(NEW.read_bytes()).hexdigest()
    assert (entry["documents"], entry["mentions"], entry["sentences"], entry["entities"]) == (3, 14, 11, 14)
    assert entry["pmids"] == sorted(NEW_LABELS)
    counts = manifest["splits"]["train"]
    assert counts["tc3"]["rows"] == 595 and counts["tc3"]["per_class"] == {"0": 108, "1": 247, "2": 240}
    assert counts["ner3"]["sentences"] == 5424 + 11 and counts["ner3"]["entities"] == 5134 + 14
    assert counts["pubtator"] == {"unique_pmids": 595, "mentions": 5134 + 14}
    for name, digest in manifest["files"].items():
        assert hashlib.sha256(after[name]).hexdigest() == digest, name
    assert validate_dir(data_copy).valid

    # the same file again: every PMID is now present
    assert run(add_args(data_copy, NEW)) == 1
    err = capsys.readouterr().err
    assert f"{NEW}:1: PMID 90000003 is already in the train split (tc3/train.ids:" in err
    assert tree_bytes(data_copy) == after


def test_test_split_is_frozen_unless_unfrozen(data_copy: Path, mesh: str, capsys) -> None:
    before = tree_bytes(data_copy)
    assert run([*add_args(data_copy, NEW, "--split", "test"), "--mesh", mesh]) == 2
    assert "the test split is frozen" in capsys.readouterr().err
    assert tree_bytes(data_copy) == before

    assert (
        run([*add_args(data_copy, NEW, "--split", "test", "--unfreeze-test"), "--mesh", mesh, "--json"]) == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["added"]["split"] == "test" and summary["added"]["unfroze_test"] is True
    assert summary["splits"]["test"]["tc3"]["rows"] == 103
    manifest = json.loads((data_copy / "MANIFEST.json").read_text())
    assert any("added to the test split (--unfreeze-test)" in w for w in manifest["warnings"])
    assert lines(data_copy / "tc3" / "train.ids") == before["tc3/train.ids"].decode().splitlines()


def replace_line(n: int, new: str) -> Callable[[str, Path], str]:
    def edit(text: str, _data: Path) -> str:
        out = text.split("\n")
        out[n - 1] = new
        return "\n".join(out)

    return edit


def field(n: int, i: int, value: str) -> Callable[[str, Path], str]:
    def edit(text: str, _data: Path) -> str:
        out = text.split("\n")
        parts = out[n - 1].split("\t")
        parts[i] = value
        out[n - 1] = "\t".join(parts)
        return "\n".join(out)

    return edit


def pmid_of_dev(text: str, data: Path) -> str:
    return text.replace("90000002", lines(data / "tc3" / "dev.ids")[0])


def text_of_test(text: str, data: Path) -> str:
    """Document 90000003 with the title and abstract of a test document (title + " " + abstract)."""
    row = lines(data / "tc3" / "test.tsv")[0].rsplit("\t", 1)[0]
    title, abstract = re.match(r"(.*?\.) (.*)", row).groups()
    block = f"90000003|t|{title}\n90000003|a|{abstract}\n\n"
    return block + text.split("\n\n", 1)[1]


def same_text_twice(text: str, _data: Path) -> str:
    first = text.split("\n\n", 1)[0]
    return text + "\n" + first.replace("90000003", "90000009") + "\n"


def leaks_a_test_sentence(text: str, data: Path) -> str:
    """A new text whose first sentence (>= 12 tokens) is a test sentence: only the GX leakage rule sees it."""
    sentence = lines(data / "ner3" / "text_test.txt")[0]
    return text + f"\n90000010|t|{sentence}\n90000010|a|A new abstract.\n"


REFUSALS = [
    # (id, edit of the file, extra args, exit code, what the one error line holds)
    (
        "pmid-already-in-dev",
        pmid_of_dev,
        [],
        1,
        ":16: PMID 8589722 is already in the dev split (tc3/dev.ids:1)",
    ),
    (
        "text-already-in-test",
        text_of_test,
        [],
        1,
        ":1: PMID 90000003's title and abstract are already in the test",
    ),
    (
        "same-text-twice-in-the-file",
        same_text_twice,
        [],
        1,
        ":24: PMID 90000009's title and abstract are already in",
    ),
    (
        "offsets-past-the-text",
        field(6, 2, "999"),
        [],
        1,
        ":6: mention offsets 120-999 fall outside PMID 90000003",
    ),
    (
        "mention-text-differs",
        field(11, 3, "Breast cancar"),
        [],
        1,
        ":11: mention text 'Breast cancar' differs",
    ),
    ("unknown-concept-id", field(12, 5, "X123"), [], 1, ":12: concept ID 'X123' is not a MeSH"),
    ("unknown-category", field(12, 4, "Disease"), [], 1, ":12: unknown mention category 'Disease'"),
    ("malformed-abstract-line", replace_line(9, "90000001|x|text"), [], 1, ":9: expected the abstract line"),
    (
        "same-pmid-differing-content",
        replace_line(7, "\n90000003|t|Other\n90000003|a|Text.\n"),
        [],
        1,
        ":8: PMID",
    ),
    (
        "ner3-leakage-caught-by-validation",
        leaks_a_test_sentence,
        [],
        1,
        "would not validate: ner3/text_train.txt",
    ),
    ("unfreeze-without-test", None, ["--unfreeze-test"], 2, "--unfreeze-test goes with --split test only"),
    ("unknown-split", None, ["--split", "devel"], 2, "unknown split 'devel'"),
    (
        "another-mesh-tree",
        None,
        ["--mesh", "FIXTURE_MESH"],
        2,
        "not the MeSH tree file this data was labelled with",
    ),
]


@pytest.mark.parametrize(
    ("edit", "extra", "code", "message"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_refusals_name_the_line_and_leave_data_unchanged(
    data_copy: Path,
    mesh: str,
    tmp_path: Path,
    capsys,
    edit: Callable[[str, Path], str] | None,
    extra: list[str],
    code: int,
    message: str,
) -> None:
    source = tmp_path / "src" / "new_abstracts.txt"
    source.parent.mkdir()
    text = NEW.read_text(encoding="utf-8")
    source.write_text(edit(text, data_copy) if edit else text, encoding="utf-8")
    fixture_mesh = str(Path(__file__).parent / "fixtures" / "corpus" / "mesh" / "2017MeshTree.txt")
    extra = [fixture_mesh if a == "FIXTURE_MESH" else a for a in extra]
    args = add_args(data_copy, source, *extra)
    if "--mesh" not in extra:
        args += ["--mesh", mesh]
    before = tree_bytes(data_copy)
    assert run(args) == code
    errors = [e for e in capsys.readouterr().err.splitlines() if e.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], errors
    if code == 1 and "validate" not in message:
        assert f"{source}:" in errors[0]  # file:line of the PubTator source
    assert tree_bytes(data_copy) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "src"]  # no staged copy left beside data/


def test_missing_data_directory_is_a_usage_error(tmp_path: Path, mesh: str, capsys) -> None:
    assert run([*add_args(tmp_path / "nothing", NEW), "--mesh", mesh]) == 2
    assert "no MANIFEST.json" in capsys.readouterr().err
    assert not (tmp_path / "nothing").exists()


def test_add_then_publish_makes_a_new_data_version(
    imported_data: Path, mesh: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import shutil
    import subprocess

    from dvc.repo import Repo

    from tasks.versioning import publish, pull

    monkeypatch.setenv("NCBI_RETRAIN_DVC_REMOTE_URL", str(tmp_path / "remote"))
    get_settings.cache_clear()
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)

    git("init", "-q")
    git("config", "user.email", "test@example.org")
    git("config", "user.name", "test")
    git("config", "commit.gpgsign", "false")
    (repo / ".gitignore").write_text("/data\n")
    Repo.init(str(repo)).close()
    shutil.copytree(imported_data, repo / "data")
    try:
        v1 = publish(repo, None)
        git("add", "-A")
        git("commit", "-qm", "v1")
        assert run([*add_args(repo / "data", NEW), "--mesh", mesh]) == 0
        v2 = publish(repo, None)
        git("add", "data.dvc")
        git("commit", "-qm", "v2")
        assert v2 != v1
        added = tree_bytes(repo / "data")
        assert pull(repo, "HEAD~1") == v1 and tree_bytes(repo / "data") == tree_bytes(imported_data)
        assert pull(repo, "HEAD") == v2 and tree_bytes(repo / "data") == added
    finally:
        get_settings.cache_clear()
    assert "data publish" in capsys.readouterr().out
