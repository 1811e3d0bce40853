"""Abbreviation resolution with NCBI's Ab3P (pyab3p): short forms take their long form's verdict within a
document, and the model's config decides whether scoring and prediction apply it."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import pytest
from omegaconf import open_dict

from tasks.training.abbreviations import resolve
from tasks.training.data import read_split, sentence_documents

DEFINED = ["Stevens", "-", "Johnson", "syndrome", "(", "SJS", ")", "is", "a", "rare", "reaction", "."]
USED = ["Two", "patients", "with", "SJS", "recovered", "."]
GENE = ["The", "von", "Hippel", "-", "Lindau", "(", "VHL", ")", "gene", "is", "mutated", "."]
GENE_USED = ["Loss", "of", "VHL", "causes", "tumours", "."]


def o(words: list[str]) -> list[str]:
    return ["O"] * len(words)


def test_a_short_form_is_tagged_when_its_long_form_is() -> None:
    tagged = ["B", "I", "I", "I"] + ["O"] * (len(DEFINED) - 4)
    tags, changed = resolve([DEFINED, USED], [tagged, o(USED)], [0, 0])
    assert tags[0][5] == "B"  # "( SJS )": the definition's own short form
    assert tags[1] == ["O", "O", "O", "B", "O", "O"]  # four words on, in the next sentence
    assert tags[0][:4] == ["B", "I", "I", "I"] and changed == 2


def test_a_short_form_is_untagged_when_its_long_form_is_not() -> None:
    wrong = ["O", "O", "B", "O", "O", "O"]  # the tagger took the gene symbol for the disease
    tags, changed = resolve([GENE, GENE_USED], [o(GENE), wrong], [0, 0])
    assert tags[1] == o(GENE_USED) and changed == 1


def test_documents_do_not_share_abbreviations() -> None:
    tagged = ["B", "I", "I", "I"] + ["O"] * (len(DEFINED) - 4)
    tags, _ = resolve([DEFINED, USED], [tagged, o(USED)], [0, 1])
    assert tags[1] == o(USED)


def test_a_short_form_inside_a_longer_entity_is_left_to_the_tagger() -> None:
    longer = ["Patients", "with", "SJS", "disease", "recovered", "."]
    tagged = ["B", "I", "I", "I"] + ["O"] * (len(DEFINED) - 4)
    tags, _ = resolve([DEFINED, longer], [tagged, ["O", "O", "B", "I", "O", "O"]], [0, 0])
    assert tags[1] == ["O", "O", "B", "I", "O", "O"]


def test_no_definition_no_change() -> None:
    tags = [["O", "O", "O", "B", "O", "O"]]
    assert resolve([USED], tags, [0]) == (tags, 0)


def _data(tmp_path: Path, abstracts: list[str], sentences: list[str]) -> Path:
    (tmp_path / "tc3").mkdir()
    (tmp_path / "ner3").mkdir()
    (tmp_path / "tc3" / "dev.tsv").write_text("".join(f"{a}\t2\n" for a in abstracts))
    (tmp_path / "ner3" / "text_dev.txt").write_text("".join(f"{s}\n" for s in sentences))
    (tmp_path / "ner3" / "labels_dev.txt").write_text(
        "".join(" ".join(o(s.split())) + "\n" for s in sentences)
    )
    return tmp_path


def test_sentences_are_matched_to_their_abstracts(tmp_path: Path) -> None:
    data = _data(
        tmp_path,
        ["Stevens-Johnson syndrome (SJS). Two patients with SJS recovered.", "Loss of VHL causes tumours."],
        [
            "Stevens - Johnson syndrome ( SJS ) .",
            "Two patients with SJS recovered .",
            "Loss of VHL causes tumours .",
        ],
    )
    assert read_split("ner", data, "dev").documents == [0, 0, 1]


def test_sentences_appended_after_the_sorted_rows_still_find_their_abstracts(tmp_path: Path) -> None:
    """`data add` re-sorts tc3 by PMID but appends its ner3 sentences after the split's existing ones."""
    data = _data(
        tmp_path,
        ["Loss of VHL causes tumours. VHL is a gene.", "Stevens-Johnson syndrome (SJS). SJS is rare."],
        [
            "Stevens - Johnson syndrome ( SJS ) .",
            "SJS is rare .",
            "Loss of VHL causes tumours .",
            "VHL is a gene .",
        ],
    )
    assert read_split("ner", data, "dev").documents == [1, 1, 0, 0]


def test_sentences_that_do_not_spell_the_abstracts_give_no_documents(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = _data(tmp_path, ["Loss of VHL causes tumours."], ["Loss of VHL causes tumours .", "Another one ."])
    with caplog.at_level(logging.WARNING, logger="ncbi_retrain.train"):
        assert read_split("ner", data, "dev").documents is None
    assert "ner3/text_dev.txt:2 does not start or continue a row of tc3/dev.tsv" in caplog.text
    (data / "tc3" / "dev.tsv").unlink()
    assert sentence_documents(data, "dev", ["Loss of VHL causes tumours ."]) is None


def test_the_imported_release_aligns_sentence_for_sentence(imported_data: Path) -> None:
    """Every split of the real corpus: all sentences placed, the documents in tc3's order."""
    for split, abstracts in (("train", 592), ("dev", 100), ("test", 100)):
        docs = read_split("ner", imported_data, split).documents
        assert docs is not None and docs == sorted(docs) and docs[-1] + 1 == abstracts, split


def test_the_models_config_switches_the_step_for_scoring_and_prediction(trained: dict) -> None:
    """The tiny NER model of this session: trained with the step on (the base config), and scoring and
    `predict_texts` follow its config, so a model is measured as it is served."""
    from tasks.training.artifact import restore_nemo
    from tasks.training.predict import resolve_abbreviations

    model = restore_nemo(trained["ner"]["out"] / "model.nemo", "ner")
    assert model._cfg.abbreviations is True
    tagged = ["B", "I", "I", "I"] + ["O"] * (len(DEFINED) - 4)
    sentences = [" ".join(DEFINED), " ".join(USED)]
    assert resolve_abbreviations(model, sentences, [tagged, o(USED)], [0, 0])[1][3] == "B"
    assert resolve_abbreviations(model, sentences, [tagged, o(USED)])[1] == o(USED)  # each its own document
    with open_dict(model._cfg):
        model._cfg.abbreviations = False  # a model trained before the step: scored and served as before
    assert resolve_abbreviations(model, sentences, [tagged, o(USED)], [0, 0])[1] == o(USED)


def test_the_logged_pyfunc_takes_documents_as_an_inference_param(
    trained: dict, train_python: Path, mlflow_env: dict[str, str]
) -> None:
    """Through MLflow (which drops input columns its signature lacks): `params={"documents": [...]}`
    resolves as `predict_texts` does with the same grouping; none: each text alone; a wrong length: error."""
    code = (
        "import json, sys, mlflow\n"
        "from tasks.training.predict import load, predict_texts\n"
        "uri, nemo, texts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])\n"
        "m, model = mlflow.pyfunc.load_model(uri), load(nemo, 'ner')\n"
        "out = {'params': m.metadata.get_params_schema().to_dict()}\n"
        "for key, docs in (('together', [0, 0]), ('alone', None)):\n"
        "    df = m.predict(texts, params={'documents': docs} if docs else None)\n"
        "    out[key] = list(df['tags'])\n"
        "    rows = predict_texts(model, 'ner', texts, docs)\n"
        "    out[key + '_direct'] = [' '.join(r['tags']) for r in rows]\n"
        "try:\n"
        "    m.predict(texts, params={'documents': [0]})\n"
        "except Exception as exc:\n"
        "    out['error'] = str(exc)\n"
        "print(json.dumps(out))\n"
    )
    texts = [" ".join(DEFINED), " ".join(USED)]
    nemo = str(trained["ner"]["out"] / "model.nemo")
    args = [str(train_python), "-c", code, trained["ner"]["result"]["model_uri"], nemo, json.dumps(texts)]
    proc = subprocess.run(args, capture_output=True, text=True, env=mlflow_env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["params"][0]["name"] == "documents" and out["params"][0]["default"] == []
    assert out["together"] == out["together_direct"] and out["alone"] == out["alone_direct"]
    verdict = "O" if out["together"][0].split()[3] == "O" else "B"  # "syndrome": the long form's last word
    assert out["together"][1].split()[3] == verdict
    assert "params.documents has 1 values for 2 texts" in out["error"]


def test_predict_one_abstract_carries_a_definition_to_the_other_sentences(
    trained: dict, train_python: Path, mlflow_env: dict[str, str]
) -> None:
    """`predict ner --one-abstract`: the standalone "SJS" follows the verdict on its long form in the
    first sentence (whatever the tiny model tagged there); without the flag it keeps the tagger's own tag."""
    from train_helpers import run_cli

    sentences = [" ".join(DEFINED), "Two patients with SJS recovered ."]
    nemo = str(trained["ner"]["out"] / "model.nemo")
    rows = {}
    for flag in ([], ["--one-abstract"]):
        proc = run_cli(
            train_python, ["predict", "ner", "--model", nemo, "--json", *flag, *sentences], mlflow_env
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        rows[bool(flag)] = json.loads(proc.stdout.strip().splitlines()[-1])["predictions"]
    alone, together = rows[False], rows[True]
    verdict = "O" if together[0]["tags"][3] == "O" else "B"  # "syndrome": the long form's last word
    assert together[1]["tags"][3] == verdict
    assert together[0]["tags"] == alone[0]["tags"]  # the defining sentence resolves the same either way
    assert together[1]["tags"][:3] + together[1]["tags"][4:] == alone[1]["tags"][:3] + alone[1]["tags"][4:]
