"""What reading a user's .npy or .npz can raise, and the reason a refusal quotes from it."""

from __future__ import annotations

import zipfile

# A hostile header reaches numpy's parser: a shape too large for a C long overflows, deep
# nesting exhausts the parser, a damaged archive is no zip.
READ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, OverflowError, SyntaxError,
               RecursionError, MemoryError)


def read_error_reason(e: BaseException) -> str:
    """The first sentence of ``e``'s message on one line: numpy's run over several lines and end
    in advice (``allow_pickle=True``) that bncheck must not give."""
    return " ".join(str(e).split()).split(". ")[0][:200] or type(e).__name__
