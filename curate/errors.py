"""The one exception type for user-facing errors.

A ``CurateError`` is bad input or an impossible request: the CLI prints its message as one line
and exits non-zero without a traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class CurateError(Exception):
    """An error the user can fix; the message names the file, row or option at fault."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:  # the hint travels with the message, on the same line
        base = super().__str__()
        return f"{base}; {self.hint}" if self.hint else base
