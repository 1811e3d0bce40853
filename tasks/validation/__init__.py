"""`validate`: Great Expectations suites for a data directory (tc3 + ner3), before anything trains on it.

Checks, in two layers that report into one `ValidationReport`:

- bytes, in plain Python (`filechecks`): every file present and non-empty, UTF-8, no byte-order mark, LF
  line endings. A file failing here is not parsed further (its lines would be noise).
- rows, in GX 1.x (`frames` -> `suites` -> `runner`): an ephemeral context, a pandas datasource, one
  dataframe asset and suite per file or split pair, built-in expectations plus three custom map
  expectations (`expectations`). Each dataframe carries the 1-based `line` number, and GX's COMPLETE
  result reports unexpected rows with it; `messages` turns them into one-sentence `file:line` failures.

Rules: tc3 rows are `text<TAB>label` with a non-empty text, no tab in it and a label in {0,1,2}; every
class in every split; no blank lines; no duplicate text within a split; `tc3/{split}.ids` (when present)
line-aligned, numeric and unique. ner3 text and labels files have equal line counts, one tag per token,
tags in {B,I,O} and each of them in every split, no I starting a line or following an O, tokens
separated by single spaces. No tc3 text, PMID or ner3 sentence in two splits (leakage).

Two rules are warnings because the official release breaks them: ner3 sentences repeated within a
split (train repeats 14, e.g. "RESULTS ." and an FMF sentence that opens two abstracts; test 3), and
ner3 sentences shorter than `NER_LEAK_MIN_TOKENS` shared between splits (section heads such as
"METHODS .", and one series title shared by PMIDs 777027 and 932197); a shared sentence of that length
or longer is leakage. MANIFEST.json must be a JSON object; a data file whose sha256 differs from the one
it lists is a warning (edited after import).

The data directory is only read, never written. Importing this package does not import GX or pandas
(`validate_dir` does, on its first call).
"""

from __future__ import annotations

from tasks.validation.report import Failure, ValidationReport, write_report
from tasks.validation.rules import NER_LEAK_MIN_TOKENS
from tasks.validation.validate import validate_dir

__all__ = ["NER_LEAK_MIN_TOKENS", "Failure", "ValidationReport", "validate_dir", "write_report"]
