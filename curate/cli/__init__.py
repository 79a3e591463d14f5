"""The ``curate`` command line: a thin layer over the stage functions.

Each command lives in the module named for it (``curate vocab`` → ``curate/cli/vocab.py``) and
registers itself on ``app``. User errors (``CurateError``) print one line and exit non-zero;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import os
import sys

# typer's rich help costs 0.3 s of imports (rich.markdown, markdown_it) on every --help; plain
# click help says the same. TYPER_USE_RICH=1 brings the rich panels back.
os.environ.setdefault("TYPER_USE_RICH", "0")

import typer  # noqa: E402

try:  # typer >= 0.2x carries its own click, whose errors derive from TyperException
    from typer import TyperException as _UsageError
except ImportError:  # older typer raises click's own
    from click import ClickException as _UsageError

from curate.errors import CurateError

app = typer.Typer(
    name="curate",
    help=(
        "Build controlled, imbalanced image-text datasets for studying CLIP.\n\n"
        "captions → match → freq → build (sample + captions) → manifest → shards → train."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state = {"debug": False}

# one module per command group, each registering on ``app`` when imported
COMMAND_MODULES = ("vocab", "sources", "match", "freq", "build", "shards", "train", "embed", "similarity")


def _print_version(value: bool) -> None:
    if value:
        from curate import __version__

        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
    # eager: printed before click asks for the missing command
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", callback=_print_version, is_eager=True),
) -> None:
    _state["debug"] = debug or bool(os.environ.get("CURATE_DEBUG"))


for _name in COMMAND_MODULES:
    importlib.import_module(f"curate.cli.{_name}")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app, turning user errors into one clear line."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=argv, prog_name="curate", standalone_mode=False)
    except CurateError as e:
        if _state["debug"]:
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except _UsageError as e:  # a usage error: click's message and exit code (2), no traceback
        e.show()
        sys.exit(e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    # without standalone mode click returns (not raises) the exit code of an aborted command (Ctrl-C: 130)
    if isinstance(rv, int) and rv:
        sys.exit(rv)
