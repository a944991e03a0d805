"""Looking at a user's path without tracebacks: too long, unreadable, or not there."""

from __future__ import annotations

from pathlib import Path

from bncheck.errors import BncheckError

# A path longer than this is shortened in messages (the user typed it; they know the rest).
SHOWN = 120


def shown(path: Path) -> str:
    """``path`` as a message shows it."""
    text = str(path)
    return text if len(text) <= SHOWN else f"{text[:SHOWN // 2]}...{text[-SHOWN // 2:]}"


def exists(path: Path, what: str) -> bool:
    """Whether ``path`` exists; a path the system cannot even look up is a user error."""
    try:
        return path.exists()
    except OSError as e:
        raise BncheckError(f"{what} {shown(path)}: {e.strerror or e}") from e
