"""The one exception type users see.

Core modules raise :class:`FerError` with a single line that names the offending file (and line,
where there is one) and says how to fix it. The CLI prints it as ``error: ...`` and exits with 1;
anything else escaping a command is a bug and keeps its traceback.
"""

from __future__ import annotations


class FerError(Exception):
    """A user-facing error: one line, naming the file and the fix."""

    def __init__(self, message: str) -> None:
        # Collapse accidental newlines: the contract is one line per error.
        super().__init__(" ".join(str(message).split()))
