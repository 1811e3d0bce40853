"""The evolve loop's data versions: seeded train halves of the release whose v1 + `data add` reproduces a
direct import, and annotation noise that passes the schema (ner3 spans dropped or shifted, tc3 relabelled)."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from tasks.errors import DataError, UsageError
from tasks.evolve.data import (
    add_noise,
    entity_spans,
    label_noise,
    pubtator_blocks,
    sample_pmids,
    span_noise,
    write_sources,
)
from tasks.provenance import sha256_file
from tasks.validation.rules import iob_error


@pytest.mark.parametrize(
    ("tags", "spans"),
    [
        ("O O O", []),
        ("B O O", [(0, 1)]),
        ("B I I O B", [(0, 3), (4, 5)]),
        ("B B I", [(0, 1), (1, 3)]),
        ("O B I", [(1, 3)]),
    ],
)
def test_entity_spans(tags, spans):
    assert entity_spans(tags.split(" ")) == spans


LINES = ["O B I O O B O", "B O O O", "O O O", "O B I I O", "B I O B O O", "O O B"] * 40


def test_span_noise_changes_the_chosen_share_and_stays_valid_iob2():
    noisy, noise = span_noise(LINES, 0.3, seed=7)
    before = sum(len(entity_spans(line.split(" "))) for line in LINES)
    assert noise.entities == before and noise.chosen == round(0.3 * before)
    assert noise.dropped + noise.shifted == noise.chosen and noise.shifted > 0 and noise.dropped > 0
    assert [len(line.split(" ")) for line in noisy] == [len(line.split(" ")) for line in LINES]
    assert all(iob_error(line) is None for line in noisy)
    # A shift keeps the entity (same length, one token over); only drops lose one.
    assert sum(len(entity_spans(line.split(" "))) for line in noisy) == before - noise.dropped
    lengths = Counter(e - s for line in noisy for s, e in entity_spans(line.split(" ")))
    assert set(lengths) <= {1, 2, 3}


def test_span_noise_is_seeded():
    assert span_noise(LINES, 0.3, seed=1) == span_noise(LINES, 0.3, seed=1)
    assert span_noise(LINES, 0.3, seed=1)[0] != span_noise(LINES, 0.3, seed=2)[0]
    assert span_noise(LINES, 0.0, seed=1)[0] == LINES


def test_a_shift_never_lands_on_another_entity():
    # Both neighbours are entities: the chosen middle one cannot move and is dropped.
    noisy, noise = span_noise(["B B B"], 1.0, seed=3)
    assert noise.chosen == 3 and iob_error(noisy[0]) is None


def test_label_noise_moves_the_share_to_other_classes():
    labels = [0, 1, 2] * 100
    noisy, moved = label_noise(labels, 0.3, seed=5)
    assert moved == 90 and sum(a != b for a, b in zip(labels, noisy, strict=True)) == 90
    assert set(noisy) <= {0, 1, 2} and label_noise(labels, 0.3, seed=5)[0] == noisy


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_noise_fraction_out_of_range_is_a_usage_error(bad):
    with pytest.raises(UsageError, match="between 0 and 1"):
        span_noise(LINES, bad, seed=1)
    with pytest.raises(UsageError, match="between 0 and 1"):
        label_noise([0, 1], bad, seed=1)


def test_sample_pmids_splits_into_disjoint_seeded_halves():
    pmids = [str(i) for i in range(1000, 1101)]
    a, b = sample_pmids(pmids, 0.5, seed=11)
    assert len(a) == 50 and len(b) == 51 and not set(a) & set(b) and sorted(a + b) == sorted(pmids)
    assert a == sorted(a) and sample_pmids(pmids, 0.5, seed=11) == (a, b)
    assert sample_pmids(pmids, 0.5, seed=12) != (a, b)
    with pytest.raises(UsageError):
        sample_pmids(pmids, 1.0, seed=1)


def test_pubtator_blocks_keep_a_repeated_pmid_and_name_a_bad_line():
    text = "1|t|T\n1|a|A\n\n2|t|U\n2|a|B\n1\t0\t1\tT\tModifier\tD1\n\n1|t|T\n1|a|A\n\n"
    blocks = pubtator_blocks(text, "f.txt")
    assert list(blocks) == ["1", "2"] and len(blocks["1"]) == 2
    with pytest.raises(DataError, match=r"f\.txt:4: expected a title line"):
        pubtator_blocks("1|t|T\n1|a|A\n\nnot a title\n", "f.txt")


def test_v1_plus_data_add_of_the_other_half_is_the_release(shared_data: Path, tmp_path: Path):
    """The loop's v2 reproduces a direct import of the release (tc3 and dev/test ner3 byte for byte, train
    ner3 the same sentences)."""
    from tasks.data_add import add_documents
    from tasks.datasets import import_corpus

    release = shared_data / "ncbi_disease" / "original"
    mesh = str(shared_data / "mesh" / "2017MeshTree.txt")
    sources = write_sources(release, tmp_path / "sources", share=0.5, seed=3)
    assert sources.whole == release and len(sources.first_pmids) == len(sources.added_pmids) == 296
    import_corpus(str(sources.first), None, mesh, tmp_path / "v")
    assert json.loads((tmp_path / "v" / "MANIFEST.json").read_text())["splits"]["train"]["tc3"]["rows"] == 296
    add_documents(tmp_path / "v", str(sources.added), split="train", mesh=mesh)
    import_corpus(str(release), None, mesh, tmp_path / "full")
    for split in ("train", "dev", "test"):
        for rel in (f"tc3/{split}.tsv", f"tc3/{split}.ids"):
            assert (tmp_path / "v" / rel).read_bytes() == (tmp_path / "full" / rel).read_bytes(), rel
    for split in ("dev", "test"):
        for rel in (f"ner3/text_{split}.txt", f"ner3/labels_{split}.txt"):
            assert (tmp_path / "v" / rel).read_bytes() == (tmp_path / "full" / rel).read_bytes(), rel

    def sentences(root: Path) -> Counter:
        text = (root / "ner3" / "text_train.txt").read_text().splitlines()
        return Counter(zip(text, (root / "ner3" / "labels_train.txt").read_text().splitlines(), strict=True))

    assert sentences(tmp_path / "v") == sentences(tmp_path / "full")


def test_sampled_sources_keep_the_test_split_whole(shared_data: Path, tmp_path: Path):
    release = shared_data / "ncbi_disease" / "original"
    sources = write_sources(release, tmp_path / "s", share=0.5, seed=3, sample=0.2)
    assert len(sources.first_pmids) + len(sources.added_pmids) == round(592 * 0.2)
    whole = sources.whole
    assert (whole / "NCBItestset_corpus.txt").read_text().count("|t|") == 100
    assert (whole / "NCBIdevelopset_corpus.txt").read_text().count("|t|") == 20
    assert (sources.first / "NCBItestset_corpus.txt").read_bytes() == (
        whole / "NCBItestset_corpus.txt"
    ).read_bytes()


def test_add_noise_passes_validation_and_updates_the_manifest(data_copy: Path):
    from tasks.validation import validate_dir

    before = json.loads((data_copy / "MANIFEST.json").read_text())
    test_files = {p: (data_copy / p).read_bytes() for p in ("tc3/test.tsv", "ner3/labels_test.txt")}
    noise = add_noise(data_copy, span_fraction=0.3, label_fraction=0.3, seed=9)
    after = json.loads((data_copy / "MANIFEST.json").read_text())
    train = after["splits"]["train"]
    assert noise.spans.chosen == round(0.3 * before["splits"]["train"]["ner3"]["entities"])
    assert train["ner3"]["entities"] == before["splits"]["train"]["ner3"]["entities"] - noise.spans.dropped
    assert noise.relabelled == round(0.3 * 592) and train["tc3"]["rows"] == 592
    assert train["tc3"]["per_class"] != before["splits"]["train"]["tc3"]["per_class"]
    for rel in ("tc3/train.tsv", "ner3/labels_train.txt"):
        assert after["files"][rel] == sha256_file(data_copy / rel) != before["files"][rel]
    assert {p: (data_copy / p).read_bytes() for p in test_files} == test_files
    report = validate_dir(data_copy)
    assert report.valid, report.summary()
    assert not [w for w in report.warnings if "manifest" in w.expectation], report.summary()


def test_add_noise_without_a_manifest_leaves_the_folder_alone(tmp_path: Path):
    (tmp_path / "d").mkdir()
    with pytest.raises(UsageError, match=r"MANIFEST\.json"):
        add_noise(tmp_path / "d", span_fraction=0.3, label_fraction=0.3, seed=1)
    assert list((tmp_path / "d").iterdir()) == []


def test_noise_that_would_not_validate_leaves_data_unchanged(data_copy: Path, tmp_path: Path):
    """A train split that would fail the suites after the rewrite (here: a label already broken) is refused
    and DATA keeps its bytes."""
    tsv = data_copy / "tc3" / "train.tsv"
    lines = tsv.read_text().splitlines()
    lines[0] = lines[0].rsplit("\t", 1)[0] + "\t1"
    lines[1] = lines[0]  # a duplicate text: refused by the suites whatever the labels
    tsv.write_text("\n".join(lines) + "\n")
    snapshot = tmp_path / "snapshot"
    shutil.copytree(data_copy, snapshot)
    with pytest.raises(DataError, match="would not validate"):
        add_noise(data_copy, span_fraction=0.3, label_fraction=0.3, seed=1)
    for p in snapshot.rglob("*"):
        if p.is_file():
            assert (data_copy / p.relative_to(snapshot)).read_bytes() == p.read_bytes(), p
