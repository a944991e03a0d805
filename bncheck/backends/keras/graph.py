"""Walking a Keras model's layers, nested models entered. No torch here: the training callback
reads a model's BatchNormalization layers on Keras' TensorFlow and JAX backends too."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

BN_CLASS = "BatchNormalization"


def is_sequential(model: Any) -> bool:
    """A Keras ``Sequential`` model."""
    return type(model).__name__ == "Sequential"


def is_graph(op: Any) -> bool:
    """A Keras model nested as a layer, run through its own graph."""
    return is_sequential(op) or (hasattr(op, "_run_through_graph") and hasattr(op, "layers"))


def walk(model: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every layer of ``model`` with its Keras path, nested models entered, in graph order."""
    for layer in model.layers:
        path = prefix + layer.name
        yield path, layer
        if is_graph(layer):
            yield from walk(layer, path + "/")


def is_batch_norm(layer: Any) -> bool:
    """Keras' own BatchNormalization (and subclasses that keep its call)."""
    return any(c.__name__ == BN_CLASS and c.__module__.startswith("keras.")
               for c in type(layer).__mro__)


def batch_norms(model: Any) -> list[Any]:
    """Every BatchNormalization layer of ``model``, nested models included, in graph order."""
    return [layer for _, layer in walk(model) if is_batch_norm(layer)]
