"""The one exception type for user-facing errors.

A ``CurateError`` is bad input or an impossible request: the CLI prints its message as one line
and exits non-zero without a traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno


class CurateError(Exception):
    """An error the user can fix; the message names the file, row or option at fault."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:  # the hint travels with the message, on the same line
        base = super().__str__()
        return f"{base}; {self.hint}" if self.hint else base


# OSErrors that mean the user's disk, permissions or path (not a bug): the CLI shows them as one line
USER_OS_ERRORS = frozenset(
    {
        errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENAMETOOLONG,
        errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EXDEV,
    }
)


def os_error_line(e: OSError, *, action: str = "cannot write") -> str:
    """``PATH: cannot write (No space left on device)``, naming the file the OS named."""
    target = e.filename if e.filename is not None else "output"
    return f"{target}: {action} ({e.strerror or type(e).__name__})"
