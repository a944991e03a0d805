"""Reading Keras files: ``.keras`` archives, legacy ``.h5`` models, and weights with --arch."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

from bncheck.backends.keras.runtime import import_keras, without_tensorflow
from bncheck.core.imports import call_factory
from bncheck.errors import BncheckError

_UNKNOWN_CLASS = re.compile(r"(?:Could not locate class|Unknown layer)[^'\"]*['\"]([\w.>]+)['\"]")


def load_keras_file(path: Path, *, allow_pickle: bool, arch: str | None) -> Any:
    """The Keras model in ``path``: safe mode unless ``allow_pickle``; ``arch`` for weights."""
    keras = import_keras()
    if arch is not None:
        return _weights_into(keras, arch, path)
    try:
        with warnings.catch_warnings(), without_tensorflow():
            warnings.simplefilter("ignore")
            model = keras.saving.load_model(str(path), compile=False, safe_mode=not allow_pickle)
    except Exception as e:  # Keras raises ValueError, TypeError, OSError, KeyError and more
        raise _load_error(path, e, allow_pickle) from e
    if not hasattr(model, "layers"):
        raise BncheckError(f"{path} holds a {type(model).__name__}, not a Keras model")
    return model


def _weights_into(keras: Any, arch: str, path: Path) -> Any:
    model = call_factory(arch, "--arch")
    if not isinstance(model, keras.Model):
        raise BncheckError(f"--arch {arch}: returned a {type(model).__name__}; for a Keras "
                           "weights file it must return the keras.Model to load them into")
    try:
        model.load_weights(str(path))
    except Exception as e:  # shape mismatches, missing layers, damaged files
        raise BncheckError(f"{path}: its weights do not fit the model --arch {arch} builds: "
                           f"{_first_line(e)}") from e
    return model


def _load_error(path: Path, e: Exception, allow_pickle: bool) -> BncheckError:
    text = str(e)
    if not allow_pickle and ("safe_mode" in text or "Lambda" in text):
        return BncheckError(
            f"{path} holds code (a Lambda layer or a pickled function) that runs when it is loaded; "
            "bncheck loads Keras models in safe mode. If you trust the file, pass --allow-pickle")
    unknown = _UNKNOWN_CLASS.search(text)
    if unknown:
        name = unknown.group(1)
        return BncheckError(
            f"{path}: Keras cannot rebuild the custom class {name}; register it with "
            f"@keras.saving.register_keras_serializable in a module of yours and pass "
            f"--arch yourmodule:factory, a function that returns the model (its weights are "
            "then read from this file)")
    if "No model config found" in text or ("weights" in text.lower() and path.suffix == ".h5"):
        return BncheckError(f"{path} holds weights only (no architecture); pass --arch "
                            "yourmodule:factory, a function that returns the keras.Model")
    return BncheckError(f"{path}: Keras cannot load it ({_first_line(e)}); the file may be "
                        "truncated: save it again")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
