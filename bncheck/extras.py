"""The optional packages, the extra that installs each, and the sentence for a missing one.

``pip install bncheck`` reads and fixes ONNX models; each other format needs an extra. Whatever
imports a missing optional package, the user gets one sentence naming the extra to install,
never a ModuleNotFoundError.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from bncheck.errors import BncheckError

EXTRA_OF = {"torch": "torch", "safetensors": "torch", "keras": "keras", "h5py": "keras",
            "tensorflow": "tensorflow", "tf2onnx": "tensorflow", "matplotlib": "plot",
            "lightning": "lightning"}


def missing_package(e: ModuleNotFoundError) -> str | None:
    """The optional package ``e`` is about, or None for any other module (a bug)."""
    top = (e.name or "").split(".")[0]
    return top if top in EXTRA_OF else None


def install_hint(package: str, extra: str | None = None) -> str:
    """"needs torch: pip install 'bncheck[torch]'"."""
    return f"needs {package}: pip install 'bncheck[{extra or EXTRA_OF[package]}]'"


@contextmanager
def requires(what: str, extra: str | None = None) -> Iterator[None]:
    """Around work on ``what`` ("fixtures/x.pth, a PyTorch checkpoint") that imports optional
    packages: a missing one becomes "what needs torch: pip install 'bncheck[extra]'", the
    extra being ``extra`` where the format names one (a Keras file needs the keras extra,
    torch included)."""
    try:
        yield
    except ModuleNotFoundError as e:
        package = missing_package(e)
        if package is None:
            raise
        raise BncheckError(f"{what} {install_hint(package, extra)}") from e
