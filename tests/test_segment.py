"""Sentence splitting, tokenisation and tagging of PubTator documents (tasks.segment) on tricky cases taken
from the NCBI release (each expected split is the CoNLL split's), plus the comparison with a reference."""

from __future__ import annotations

import pytest

from tasks.corpus import Document, Mention, Sentence
from tasks.segment import compare, document_sentences, mention_coverage, split_paragraph, tokenize


def sentences(text: str) -> list[str]:
    return [text[s:e] for s, e in split_paragraph(text)]


def tokens(text: str) -> list[str]:
    return [text[s:e] for s, e in tokenize(text)]


def doc(title: str, abstract: str, *spans: tuple[str, int], pmid: str = "1") -> Document:
    """A document whose mentions are given as (text, occurrence) and located in title + " " + abstract."""
    text = f"{title} {abstract}"
    mentions = []
    for n, (mention, occurrence) in enumerate(spans, 3):
        start = -1
        for _ in range(occurrence + 1):
            start = text.index(mention, start + 1)
        mentions.append(Mention(start, start + len(mention), mention, "SpecificDisease", ("D000001",), n))
    return Document(pmid, title, abstract, tuple(mentions), 1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("55.5 generations", ["55", ".", "5", "generations"], id="decimal-number"),
        pytest.param("Addison's disease", ["Addison", "'", "s", "disease"], id="possessive-s"),
        pytest.param(
            "X-linked age-of-onset", ["X", "-", "linked", "age", "-", "of", "-", "onset"], id="hyphens"
        ),
        pytest.param(
            "(r = -0.738, p < 0.001)",
            ["(", "r", "=", "-", "0", ".", "738", ",", "p", "<", "0", ".", "001", ")"],
            id="brackets-and-numbers",
        ),
        pytest.param(
            "glycogen synthase kinase 3beta", ["glycogen", "synthase", "kinase", "3beta"], id="alnum-run"
        ),
        pytest.param("GT-->AT +/-", ["GT", "-", "-", ">", "AT", "+", "/", "-"], id="arrows"),
        pytest.param("naïve  tab\there", ["na", "ï", "ve", "tab", "here"], id="non-ascii-letter-alone"),
    ],
)
def test_tokenize(text: str, expected: list[str]) -> None:
    assert tokens(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "Coalescence times, of 48 and 55.5 generations ago. The results differ.",
            ["Coalescence times, of 48 and 55.5 generations ago.", "The results differ."],
            id="decimal-number-no-break",
        ),
        pytest.param(
            "features [e.g. pseudoexophthalmos and pyramidal signs were more frequent]. Fourth, the disease",
            [
                "features [e.g. pseudoexophthalmos and pyramidal signs were more frequent].",
                "Fourth, the disease",
            ],
            id="e.g.-inside-brackets",
        ),
        pytest.param(
            "We saw cases, e.g. Two of them. Then none.",
            ["We saw cases, e.g. Two of them.", "Then none."],
            id="e.g.-before-a-capital",
        ),
        pytest.param(
            "We saw cases, i. e. Two of them. Then none.",
            ["We saw cases, i. e. Two of them.", "Then none."],
            id="spaced-i.-e.",
        ),
        pytest.param(
            "As Baumbach et al. and Koenig et al. but in contrast to findings, by Malhotra "
            "et al. at the 5' end of the gene.",
            [
                "As Baumbach et al. and Koenig et al. but in contrast to findings, by Malhotra "
                "et al. at the 5' end of the gene."
            ],
            id="et-al.-before-conjunction-or-preposition",
        ),
        pytest.param(
            "has been shown by Triggs-Raine et al. (1992) to be benign.",
            ["has been shown by Triggs-Raine et al.", "(1992) to be benign."],
            id="et-al.-before-a-bracket-breaks",
        ),
        pytest.param(
            "strains. Levy et al. 5 showed that hybrids",
            ["strains.", "Levy et al.", "5 showed that hybrids"],
            id="et-al.-before-a-number-breaks",
        ),
        pytest.param(
            "family members (1. 5 +/- 0. 8 vs. 0. 7 +/- 0. 4). CETP deficiency was not found.",
            ["family members (1. 5 +/- 0. 8 vs. 0. 7 +/- 0. 4).", "CETP deficiency was not found."],
            id="spaced-decimals-inside-parentheses",
        ),
        pytest.param(
            "Penetrance differed (breast cancer vs. ovarian cancer). Mean age was 40 vs. 50 years.",
            ["Penetrance differed (breast cancer vs. ovarian cancer).", "Mean age was 40 vs. 50 years."],
            id="vs.",
        ),
        pytest.param(
            "chromosome 15 in J. B. Maternal disomy was confirmed.",
            ["chromosome 15 in J.", "B.", "Maternal disomy was confirmed."],
            id="initials-break-as-in-the-conll-split",
        ),
        pytest.param(
            "As Anton P. Chekhov wrote. S. cerevisiae grew. The 5 kb gene. while absent",
            ["As Anton P. Chekhov wrote.", "S. cerevisiae grew.", "The 5 kb gene. while absent"],
            id="middle-initial-genus-lowercase-word",
        ),
        pytest.param(
            "Doses of approx. 5 mg and No. 3 were used. Done!",
            ["Doses of approx. 5 mg and No. 3 were used.", "Done!"],
            id="approx.-and-No.-before-a-number",
        ),
        pytest.param(
            "It failed . ?! Then it worked.", ["It failed . ?!", "Then it worked."], id="stray-terminators"
        ),
        pytest.param(
            "Is it? Yes! It is...  Really.", ["Is it?", "Yes!", "It is...", "Really."], id="terminators"
        ),
        pytest.param("A title without a period", ["A title without a period"], id="no-terminator"),
    ],
)
def test_split_paragraph(text: str, expected: list[str]) -> None:
    assert sentences(text) == expected


def test_brackets_keep_a_sentence_together_only_within_reach() -> None:
    near = "Results (n = 5. Mean 3) were good. Next."
    assert sentences(near) == ["Results (n = 5. Mean 3) were good.", "Next."]
    # no other bracket between the pair: any distance
    far = "Results (n = 5. " + "word " * 80 + "end) were good."
    assert sentences(far) == [far]
    # a nested pair and more than 250 characters to the closing bracket: the break stands (the CoNLL split
    # breaks long reference lists such as "(Feder, J. N., ... (1996) Nat. Genet. 13, 399-408)" this way)
    nested = "See (Feder, J. N. (1996) " + "x" * 260 + ") here."
    assert sentences(nested) == ["See (Feder, J.", "N.", "(1996) " + "x" * 260 + ") here."]
    nested_near = "See (Feder, J. N. (1996) Nat. Genet.) here."
    assert sentences(nested_near) == [nested_near]


def test_title_and_abstract_are_separate_paragraphs() -> None:
    d = doc("Hemochromatosis in adults", "iron overload was seen.")
    assert [" ".join(s.tokens) for s in document_sentences(d)] == [
        "Hemochromatosis in adults",
        "iron overload was seen .",
    ]


def test_a_break_inside_a_mention_is_taken_back() -> None:
    d = doc("T", "Patients had type A. Wilson disease was absent.", ("A. Wilson disease", 0))
    assert [(" ".join(s.tokens), " ".join(s.tags)) for s in document_sentences(d)] == [
        ("T", "O"),
        ("Patients had type A . Wilson disease was absent .", "O O O B I I I O O O"),
    ]


def test_tags_adjacent_mentions_and_tokens_cut_by_a_mention() -> None:
    d = doc(
        "Breast ovarian cancer",
        "No autosomal dominant disorders here.",
        ("Breast", 0),
        ("ovarian cancer", 0),
        ("dominant disorde", 0),
    )
    warnings: list[str] = []
    got = document_sentences(d, "new.txt", warnings)
    assert [s.tags for s in got] == [("B", "B", "I"), ("O", "O", "B", "I", "O", "O")]
    assert warnings == [
        "new.txt:5: PMID 1 mention 'dominant disorde' starts or ends inside a token; "
        "the entity covers the whole token."
    ]


def test_overlapping_mentions_keep_the_longer() -> None:
    d = doc("T", "Familial breast cancer occurs.", ("breast cancer", 0), ("Familial breast cancer", 0))
    warnings: list[str] = []
    got = document_sentences(d, "new.txt", warnings)
    assert got[1].tags == ("B", "I", "I", "O", "O")
    assert len(warnings) == 1 and warnings[0].startswith("new.txt:3: PMID 1 mention 'breast cancer' overlaps")
    assert mention_coverage([d]) == {"mentions": 2, "entities": 1, "aligned": 2}


def s(text: str, tags: str) -> Sentence:
    return Sentence(tuple(text.split()), tuple(tags.split()), 1)


def test_compare_classifies_differences() -> None:
    reference = [
        s("A b .", "O O O"),
        s("C d .", "B I O"),
        s("E f .", "O O O"),
        s("G-h .", "O O"),
        s("X", "O"),
    ]
    derived = [s("A b . C d .", "O O O B I O"), s("E f .", "B O O"), s("G - h .", "O O O O"), s("Y", "O")]
    r = compare(derived, reference)
    assert (r.sentences, r.derived, r.identical) == (5, 4, 0)
    assert r.differences == {"sentence boundary": 2, "tokenisation": 1, "tags": 1, "text": 1}
    assert r.examples[0] == {"derived": ["A b . C d ."], "reference": ["A b .", "C d ."]}
    same = compare(reference, reference)
    assert same.identical == 5 and same.identical_share == 1.0 and not any(same.differences.values())


def test_stray_terminators_join_except_at_the_document_end() -> None:
    assert sentences("It ended . ?!") == ["It ended .", "?!"]
    text = "It ended . ?!"
    assert [text[a:b] for a, b in split_paragraph(text, ends_document=False)] == ["It ended . ?!"]
