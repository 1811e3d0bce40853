"""Invariants the fault tests check after each fault (imported as a plain module)."""

from __future__ import annotations

from typing import Any


def assert_history_replays(name: str) -> list[dict[str, Any]]:
    """The alias history is a chain that ends where the aliases are: every move starts where the previous
    move of that alias ended (nothing lost), no move repeats (nothing duplicated), and replaying it gives
    the registered model's aliases now. Returns the moves."""
    from tasks import registry
    from tasks.registry.service import client

    moves = registry.history(name)
    where: dict[str, str | None] = {}
    for i, move in enumerate(moves):
        assert move["from"] == where.get(move["alias"]), f"move {i} starts off the chain: {moves}"
        assert move["from"] != move["to"], f"move {i} moves nothing: {moves}"
        where[move["alias"]] = move["to"]
    now = {alias: str(v) for alias, v in client().get_registered_model(name).aliases.items()}
    assert {a: v for a, v in where.items() if v is not None} == now, (moves, now)
    return moves


def versions_of(name: str) -> dict[str, str]:
    """{version: run_id} of every version of NAME."""
    from tasks import registry

    return {v["version"]: v["run_id"] for v in registry.list_versions(name)}
