"""bncheck: find and fix BatchNorm train/eval mismatches in PyTorch and ONNX models.

The Python API (see the README's "Python API" section)::

    import bncheck
    result = bncheck.compare(model, loader)        # an nn.Module and a DataLoader
    print(result.verdict.verdict, result.verdict.mode)
    fixed = bncheck.rewrite(model, "instance-norm", data=loader)
    fixed.save("fixed.onnx")                       # written, then verified
    new_module = bncheck.recalibrate(model, loader)
    with bncheck.watch(model, val_loader):         # checks while a training loop runs
        ...

Importing bncheck is cheap: the API loads on first use (so ``bncheck --help`` stays fast), and
torch and onnxruntime load only when a model needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bncheck.version import __version__

if TYPE_CHECKING:
    from bncheck.api import ImageOptions, Rewritten, compare, inspect, recalibrate, rewrite
    from bncheck.core.inspection import Inspection
    from bncheck.core.results import Comparison
    from bncheck.errors import BncheckError
    from bncheck.integrations.pytorch import watch

# Public name -> the module that defines it.
_EXPORTS = {
    "compare": "bncheck.api", "inspect": "bncheck.api", "rewrite": "bncheck.api",
    "recalibrate": "bncheck.api", "ImageOptions": "bncheck.api", "Rewritten": "bncheck.api",
    "Inspection": "bncheck.core.inspection", "Comparison": "bncheck.core.results",
    "BncheckError": "bncheck.errors", "watch": "bncheck.integrations.pytorch",
}

__all__ = ["BncheckError", "Comparison", "ImageOptions", "Inspection", "Rewritten", "__version__",
           "compare", "inspect", "recalibrate", "rewrite", "watch"]


def __getattr__(name: str) -> Any:
    """Load an API name on first access (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'bncheck' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
