"""ncbi-retrain: keep a NCBI-disease classifier and NER tagger fresh (library + CLI)."""

__version__ = "0.1.0"
