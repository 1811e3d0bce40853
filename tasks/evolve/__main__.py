"""`python -m tasks.evolve [OPTIONS]` = `ncbi-retrain evolve [OPTIONS]`."""

import sys

from tasks.cli import run

sys.exit(run(["evolve", *sys.argv[1:]]))
