"""The loop this system exists for: data that grows (`make evolve`, `python -m tasks.evolve`).

`data` makes the loop's data versions from the NCBI release (train halves, annotation noise); `loop` runs
them through the `ncbi_retrain` DAG on a scratch project and reports each version's gate decisions.
"""
