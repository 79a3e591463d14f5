"""CLI commands for `vocab` (filled in by its issue)."""

from curate.cli import app  # noqa: F401
