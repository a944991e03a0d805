"""Reading Keras files: ``.keras`` archives, legacy ``.h5`` models, and weights with --arch."""

from __future__ import annotations

import json
import re
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bncheck.backends.keras.runtime import import_keras, without_tensorflow
from bncheck.core.inputs.imports import call_factory
from bncheck.errors import BncheckError, raised_by_bncheck, reason

_UNKNOWN_CLASS = re.compile(r"(?:Could not locate class|Unknown layer)[^'\"]*['\"]([\w.>]+)['\"]")


def load_keras_file(path: Path, *, allow_pickle: bool, arch: str | None) -> Any:
    """The Keras model in ``path``: safe mode unless ``allow_pickle``; ``arch`` for weights."""
    keras = import_keras()
    if arch is not None:
        return _weights_into(keras, arch, path)
    try:
        model = read_model(keras, path, safe_mode=not allow_pickle)
    except BncheckError:
        raise
    except Exception as e:  # Keras raises ValueError, TypeError, OSError, KeyError and more
        if raised_by_bncheck(e):
            raise
        raise _load_error(path, e, allow_pickle) from e
    if not hasattr(model, "layers"):
        raise BncheckError(f"{path} holds a {type(model).__name__}, not a Keras model")
    return model


def read_model(keras: Any, path: Path, *, safe_mode: bool) -> Any:
    """``keras.saving.load_model``, also for BatchNormalization(synchronized=True).

    Keras builds a synchronized BN only on its TensorFlow backend. In one process it computes
    what a plain BN does, so such a layer is loaded as one and keeps ``synchronized`` set, for
    the report and for writing the model back.
    """
    synchronized: set[str] = set()
    with warnings.catch_warnings(), without_tensorflow(), tempfile.TemporaryDirectory() as tmp:
        warnings.simplefilter("ignore")
        source = path
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
                config = json.loads(z.read("config.json")) if "config.json" in names else {}
                synchronized = {c["name"] for c in _sync_batch_norms(config)}
                if synchronized:
                    # Only then is the archive copied (the weights with it), config changed.
                    source = Path(tmp) / path.name
                    with zipfile.ZipFile(source, "w") as out:
                        for name in names:
                            out.writestr(name, json.dumps(config).encode()
                                         if name == "config.json" else z.read(name))
        model = keras.saving.load_model(str(source), compile=False, safe_mode=safe_mode)
    for layer in model._flatten_layers(include_self=False):
        if layer.name in synchronized:
            layer.synchronized = True
    return model


def _sync_batch_norms(node: Any) -> Iterator[dict[str, Any]]:
    """Each synchronized BatchNormalization's config in a saved model's, switched off."""
    if isinstance(node, dict):
        inner = node.get("config")
        if node.get("class_name") == "BatchNormalization" and isinstance(inner, dict) \
                and inner.get("synchronized"):
            inner["synchronized"] = False
            yield inner
        for value in node.values():
            yield from _sync_batch_norms(value)
    elif isinstance(node, list):
        for value in node:
            yield from _sync_batch_norms(value)


def _weights_into(keras: Any, arch: str, path: Path) -> Any:
    model = call_factory(arch, "--arch")
    if not isinstance(model, keras.Model):
        raise BncheckError(f"--arch {arch}: returned a {type(model).__name__}; for a Keras "
                           "weights file it must return the keras.Model to load them into")
    try:
        model.load_weights(str(path))
    except Exception as e:  # shape mismatches, missing layers, damaged files
        raise BncheckError(f"{path}: its weights do not fit the model --arch {arch} builds: "
                           f"{reason(e)}") from e
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
    return BncheckError(f"{path}: Keras cannot load it ({reason(e)}); the file may be "
                        "truncated: save it again")

