"""`ncbi-retrain`: the product's front door (and the trainer container's entrypoint).

Each command group lives in its own module and imports heavy libraries (NeMo, MLflow, GX, DVC)
inside the command body, so `--help` and the orchestration env stay fast and NeMo-free.
"""

from __future__ import annotations

import contextlib
import signal
import sys

import click
import typer

from tasks import __version__
from tasks.errors import NcbiRetrainError

try:  # typer >= 0.2x raises its vendored click's exceptions, which are not click.ClickException
    from typer._click.exceptions import ClickException as _TyperClickException
except ImportError:  # pragma: no cover - older typer uses click itself
    _TyperClickException = click.ClickException

app = typer.Typer(
    name="ncbi-retrain",
    help="Keep the NCBI-disease classifier and NER tagger fresh: import, version, validate, train, "
    "evaluate, gate, register and promote.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ncbi-retrain {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Keep the NCBI-disease classifier and NER tagger fresh."""


from tasks.cli import approval, data, evolve, registry, training, validate, webhooks  # noqa: E402  (they add commands)

for _group in (data, validate, training, registry, webhooks, approval, evolve):
    _group.register(app)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; errors become one sentence on stderr."""
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=argv, prog_name="ncbi-retrain", standalone_mode=False)
    except click.exceptions.Abort:
        print("error: aborted", file=sys.stderr)
        return 130
    except (click.ClickException, _TyperClickException) as exc:  # usage errors: bad option, missing argument
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        print(f"error: {exc.format_message().strip().rstrip('.')}{hint}", file=sys.stderr)
        return 2
    except NcbiRetrainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # an I/O problem no module foresaw (a full disk, a permission): name the file
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    return rv if isinstance(rv, int) else 0


class Terminated(BaseException):
    """SIGTERM arrived: a BaseException, so library code that catches Exception does not swallow it."""


_terminating = False


def _on_sigterm(signum: int, frame: object) -> None:
    global _terminating
    if _terminating:  # the cleanup is under way: a second SIGTERM must not cut it short (SIGKILL still can)
        return
    _terminating = True
    raise Terminated


def main() -> None:
    # The orchestrator stops a job with SIGTERM (Airflow's on_kill when its try was reset, timed out or marked
    # failed; `docker stop`; a deleted pod). Unwinding lets `train` end its MLflow run FAILED and remove its
    # partial output, and the exit says so. Without this, Python dies mid-step outside `fit` (the MLflow run
    # stays RUNNING forever), and inside `fit` Lightning turns SIGTERM into a SystemExit with exit code 0.
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        code = run()
    except Terminated:
        with contextlib.suppress(OSError):  # stderr may be a pipe nobody reads any more
            print("error: stopped by SIGTERM before it finished", file=sys.stderr)
        code = 128 + signal.SIGTERM
    sys.exit(code)
