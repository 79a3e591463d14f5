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

try:  # typer >= 0.16 vendors its own click, whose exceptions are not click's
    from typer._click import exceptions as _click_exceptions
except ImportError:  # older typer raises click's own
    from click import exceptions as _click_exceptions

from curate.cli import coerce  # noqa: E402
from curate.errors import USER_OS_ERRORS, CurateError, os_error_line  # noqa: E402

coerce.install()

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


# typer raises its vendored click's exceptions (an older typer raises click's own); click itself
# is not imported, it costs start-up time
_USAGE_ERRORS = (_click_exceptions.UsageError,)
_CLICK_ERRORS = (_click_exceptions.ClickException,)
# typer's own Exit and Abort; an older typer's are click's (None where this typer has none)
_EXITS = tuple(c for c in (typer.Exit, getattr(_click_exceptions, "Exit", None)) if c)
_ABORTS = tuple(c for c in (typer.Abort, getattr(_click_exceptions, "Abort", None)) if c)
_NO_ARGS = tuple(c for c in (getattr(_click_exceptions, "NoArgsIsHelpError", None),) if c)


def _usage_line(e: Exception) -> str:
    """A usage error as one line naming the command: ``curate head: No such option: --bogus``."""
    ctx = getattr(e, "ctx", None)
    where = ctx.command_path if ctx is not None and getattr(ctx, "command_path", None) else "curate"
    message = " ".join(e.format_message().split())  # type: ignore[attr-defined]
    return f"{where}: {message} (see {where} --help)"


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app, turning user errors into one clear line (exit 2)."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=argv, prog_name="curate", standalone_mode=False)
    except CurateError as e:
        if _state["debug"]:
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except _NO_ARGS as e:
        e.show()  # the help text itself, as click prints it
        sys.exit(2)
    except _USAGE_ERRORS as e:
        if _state["debug"]:
            raise
        print(f"error: {_usage_line(e)}", file=sys.stderr)
        sys.exit(2)
    except _ABORTS:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except _CLICK_ERRORS as e:
        if _state["debug"]:
            raise
        print(f"error: {' '.join(e.format_message().split())}", file=sys.stderr)
        sys.exit(2)
    except _EXITS as e:
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except OSError as e:
        # the disk, permissions or a path the user gave, not a bug: one line naming the file
        if _state["debug"] or e.errno not in USER_OS_ERRORS:
            raise
        print(f"error: {os_error_line(e)}", file=sys.stderr)
        sys.exit(2)
    # without standalone mode click returns (not raises) the exit code of an aborted command (Ctrl-C: 130)
    if isinstance(rv, int) and rv:
        sys.exit(rv)
