"""Importing the user's own code by ``package.module:name`` (--arch, --data factories)."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bncheck.errors import BncheckError


@contextmanager
def cwd_importable() -> Iterator[None]:
    """The user's code lives next to them, as with ``python -m``: the current directory is
    importable for the import only."""
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def import_attr(spec: str, option: str) -> Any:
    """The object ``package.module:name`` names, or a BncheckError saying how to reach it."""
    module, _, name = spec.partition(":")
    if not module or not name:
        raise BncheckError(f"{option} {spec!r}: expected package.module:factory")
    try:
        with cwd_importable():
            loaded = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is not None and (module == e.name or module.startswith(e.name + ".")):
            raise BncheckError(f"{option} {spec}: cannot import it ({e}); run from the folder "
                               "that holds the package") from e
        raise _raised_on_import(option, spec, module, e) from e
    except (Exception, SystemExit) as e:  # the module runs when imported: what it raises is theirs
        raise _raised_on_import(option, spec, module, e) from e
    try:
        return getattr(loaded, name)
    except AttributeError as e:
        raise BncheckError(f"{option} {spec}: module {module} has no {name}") from e


def _raised_on_import(option: str, spec: str, module: str, e: BaseException) -> BncheckError:
    first = str(e).splitlines()[0] if str(e) else ""
    return BncheckError(f"{option} {spec}: importing {module} raised {type(e).__name__}"
                        f"{': ' + first if first else ''}; fix the module (its top level runs "
                        "when it is imported)")


def call_factory(spec: str, option: str) -> Any:
    """Call the no-argument factory ``spec`` names; what it raises is the user's error."""
    factory = import_attr(spec, option)
    name = spec.partition(":")[2]
    if not callable(factory):
        raise BncheckError(f"{option} {spec}: {name} is a {type(factory).__name__}, not a "
                           "function to call")
    try:
        with cwd_importable():
            return factory()
    except Exception as e:  # the user's own code: whatever it raises is theirs to fix
        first = str(e).splitlines()[0] if str(e) else ""
        raise BncheckError(f"{option} {spec}: calling {name}() raised {type(e).__name__}"
                           f"{': ' + first if first else ''}; it must work with no arguments") \
            from e
