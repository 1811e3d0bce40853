"""The 3-class label rule, ID cleaning and the quote-tolerant mention check, on hand-made cases."""

from __future__ import annotations

import pytest

from tasks.corpus import (
    CANCER,
    NEURO,
    OTHER,
    abstract_label,
    clean_concept_ids,
    concept_class,
    quote_tolerant_equal,
)

# A hand-made tree: one ID per situation the rule distinguishes.
TREE = {
    "Dcancer": ("C04.588.180", "C17.800.090.500"),  # breast neoplasms: cancer and skin
    "Dneuro": ("C10.228.140.490",),  # epilepsy
    "Dboth": ("C04.557.580", "C10.551"),  # under C04 and C10: cancer wins
    "Dother": ("C05.651.534.500", "C16.320.577"),
    "Droot": ("C04",),  # the root itself counts
    "Dlookalike": ("C040.1",),  # not under C04 (no such MeSH branch, but the prefix test must be exact)
}


@pytest.mark.parametrize(
    ("ids", "label"),
    [
        pytest.param([], OTHER, id="no-ids-is-other"),
        pytest.param(["OMIM:604233", "C535662"], OTHER, id="only-unmapped-ids-is-other"),
        pytest.param(["Dcancer"], CANCER, id="one-cancer"),
        pytest.param(["Dneuro"], NEURO, id="one-neuro"),
        pytest.param(["Dother"], OTHER, id="one-other"),
        pytest.param(["Dboth"], CANCER, id="cancer-beats-neuro-within-an-id"),
        pytest.param(["Droot"], CANCER, id="tree-root-counts"),
        pytest.param(["Dlookalike"], OTHER, id="prefix-must-be-a-tree-branch"),
        pytest.param(["Dneuro", "Dneuro", "Dcancer"], NEURO, id="majority-wins"),
        pytest.param(["Dcancer", "Dneuro"], CANCER, id="tie-cancer-neuro-goes-to-cancer"),
        pytest.param(["Dother", "Dneuro"], NEURO, id="tie-neuro-other-goes-to-neuro"),
        pytest.param(["Dother", "Dcancer"], CANCER, id="tie-cancer-other-goes-to-cancer"),
        pytest.param(
            ["Dother", "Dother", "Dcancer", "OMIM:1", "OMIM:2"], OTHER, id="unmapped-ids-do-not-vote"
        ),
        pytest.param(
            ["Dcancer", "Dneuro", "Dneuro", "Dother", "Dother"], NEURO, id="tie-of-two-ignores-smaller"
        ),
    ],
)
def test_abstract_label(ids: list[str], label: int) -> None:
    assert abstract_label(ids, TREE) == label


@pytest.mark.parametrize(
    ("numbers", "label"),
    [(["C04"], CANCER), (["C10.228"], NEURO), (["C10.1", "C04.2"], CANCER), (["F03.1"], OTHER), ([], OTHER)],
)
def test_concept_class(numbers: list[str], label: int) -> None:
    assert concept_class(numbers) == label


@pytest.mark.parametrize(
    ("raw", "ids"),
    [
        pytest.param("D003110", ("D003110",), id="plain"),
        pytest.param(" D015862+D058499", ("D015862", "D058499"), id="leading-space-and-plus"),
        pytest.param("OMIM:106210 ", ("OMIM:106210",), id="trailing-space"),
        pytest.param("MESH:C535662", ("C535662",), id="mesh-prefix"),
        pytest.param("D003110|D009369", ("D003110", "D009369"), id="composite-pipe"),
    ],
)
def test_clean_concept_ids(raw: str, ids: tuple[str, ...]) -> None:
    assert clean_concept_ids(raw) == ids


@pytest.mark.parametrize(
    ("mention", "document", "equal"),
    [
        pytest.param("seizures   plus  ", 'seizures " plus "', True, id="release-quirk-10923035"),
        pytest.param("a b", "a b", True, id="identical"),
        pytest.param(" x ", "'x'", True, id="single-quotes"),
        pytest.param("axb", 'a"b', False, id="other-char-for-quote"),
        pytest.param('a"b', "a b", False, id="quote-in-mention-space-in-document"),
        pytest.param("a b", "acb", False, id="space-for-letter"),
        pytest.param("ab ", 'ab"x', False, id="length-differs-elsewhere"),
        pytest.param("ab", 'ab"', False, id="different-length"),
    ],
)
def test_quote_tolerant_equal(mention: str, document: str, equal: bool) -> None:
    assert quote_tolerant_equal(mention, document) is equal
