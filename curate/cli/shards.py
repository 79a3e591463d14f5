"""CLI commands for `shards` (filled in by its issue)."""

from curate.cli import app  # noqa: F401
