"""CLI command: `ncbi-retrain evolve` (`make evolve`, `python -m tasks.evolve`): the data-grows loop."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""

    @app.command("evolve")
    def evolve(
        profile: str = typer.Option("cpu", "--profile", help="tiny (minutes) or cpu (about an hour)."),
        root: Path = typer.Option(
            None,
            "--dir",
            help="Scratch folder for the loop's project, stores and results (replaced if it holds an "
            "earlier loop; default: runs/evolve-PROFILE of the project directory).",
        ),
        release: Path = typer.Option(
            None, "--release", help="The NCBI release's PubTator folder (default: Settings.shared_data)."
        ),
        mesh: Path = typer.Option(
            None, "--mesh", help="MeSH 2017 tree file (default: Settings.shared_data)."
        ),
        seed: int = typer.Option(20261202, "--seed", help="Seed of the train halves and of the noise."),
        epochs: int = typer.Option(
            None, "--epochs", min=1, help="trainer.max_epochs (default: the profile's)."
        ),
        sample: float = typer.Option(
            None,
            "--sample",
            min=0.01,
            max=0.99,
            help="Keep only this seeded share of the train and dev documents (a smaller corpus, for tests; "
            "the test split stays whole).",
        ),
        span_noise: float = typer.Option(
            0.3, "--span-noise", min=0.0, max=1.0, help="Share of v3's train entities dropped or shifted."
        ),
        label_noise: float = typer.Option(
            0.3, "--label-noise", min=0.0, max=1.0, help="Share of v3's train abstracts relabelled."
        ),
        policy: Path = typer.Option(
            None, "--policy", help="Gate policy file for the loop's runs (default: tasks/gates.yaml)."
        ),
    ) -> int:
        """The loop this system exists for, end to end, on a scratch project (never this checkout).

        v1: the release with a seeded half of its train PMIDs, published and trained through the
        ncbi_retrain DAG (it becomes champion); v2: the other half added with `data add`, published,
        retrained (the gate decides with its CI); v3: v2 with annotation noise in train (entity spans
        dropped or shifted by one token, abstracts relabelled), published, retrained (the gate must refuse
        it and champion must not move). Prints a table per version; writes evolve.json and evolve.md.

        Exit status: 0 when v3 was refused and no champion moved, 1 when that did not happen.
        """
        import logging

        from tasks.evolve.loop import Loop, run_loop, verdict
        from tasks.settings import get_settings
        from tasks.vocab import Profile

        s = get_settings()
        chosen = Profile.parse(profile)
        shared = s.path(s.shared_data)
        loop = Loop(
            root=(root or s.path(s.work_dir) / f"evolve-{chosen.value}").absolute(),
            profile=chosen,
            release=release or shared / "ncbi_disease" / "original",
            mesh=mesh or shared / "mesh" / "2017MeshTree.txt",
            seed=seed,
            span_noise=span_noise,
            label_noise=label_noise,
            epochs=epochs,
            sample=sample,
            policy=policy,
        )
        logging.getLogger("mlflow").setLevel(logging.WARNING)  # its store set-up chatter; the DAG logs all
        typer.echo(f"evolve loop, profile {chosen.value}, in {loop.root}")
        ok, _ = verdict(run_loop(loop, echo=typer.echo))
        typer.echo(f"results: {loop.root / 'evolve.md'} and evolve.json")
        return 0 if ok else 1
