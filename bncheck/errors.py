"""Error types: a BncheckError is the user's problem (exit 2, one plain line); anything else is a bug.

``reading`` is the one boundary around every third-party parser that reads a user's file: numpy,
PIL, onnx/protobuf, h5py, safetensors, zipfile, pickle, Keras and TensorFlow raise whatever they
raise on a damaged file (numpy's header parser alone can raise ``tokenize.TokenError``,
``SyntaxError``, ``OverflowError``, ``MemoryError`` or ``RecursionError``), so the boundary does
not list types. It asks where the exception was raised instead: inside the parser, it is the
file's fault and becomes one sentence naming the file; inside bncheck's own code, it is a bug
and stays a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_PACKAGE = str(Path(__file__).resolve().parent)


class BncheckError(Exception):
    """A usage or input error. The CLI prints its message and exits with code 2."""


@contextmanager
def reading(path: Path | str, what: str, *, option: str = "", advice: str = "",
            passthrough: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """Around a parser reading the user's ``path`` as ``what`` ("an ONNX model"): what the
    parser raises becomes "``option`` path: cannot read it as what (its first sentence);
    ``advice``". ``passthrough`` types are left to the caller, which tells more from them."""
    try:
        yield
    except BncheckError:
        raise
    except Exception as e:
        if isinstance(e, passthrough) or raised_by_bncheck(e):
            raise
        label = f"{option} {path}" if option else str(path)
        raise BncheckError(f"{label}: cannot read it as {what} ({reason(e)})"
                           + (f"; {advice}" if advice else "")) from e


def raised_by_bncheck(e: BaseException) -> bool:
    """Whether bncheck's own code raised ``e`` (a bug): its innermost frame is bncheck's and
    its type is Python's own. A third-party type raised from there came from a C extension
    bncheck called (protobuf's DecodeError), and an OSError is the file system's answer
    (a directory where a file was expected, a read that failed): neither is a bug."""
    tb = e.__traceback__
    if tb is None or isinstance(e, OSError):
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    ours = str(Path(tb.tb_frame.f_code.co_filename).resolve()).startswith(_PACKAGE)
    return ours and type(e).__module__ == "builtins"


def reason(e: BaseException) -> str:
    """The first sentence of ``e``'s message on one line (the type's name when it has none):
    parsers' messages run over several lines and may end in advice bncheck must not give
    (numpy's ``allow_pickle=True``)."""
    return " ".join(str(e).split()).split(". ")[0][:200] or type(e).__name__
