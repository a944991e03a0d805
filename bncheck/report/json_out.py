"""JSON documents for --format json (one document on stdout, nothing else)."""

from __future__ import annotations

import json
import math
from typing import Any


def _clean(x: Any) -> Any:
    # JSON has no NaN/Infinity; strict parsers reject them, so they become null.
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def dumps(doc: dict[str, Any]) -> str:
    """Serialize strictly (NaN/Inf become null)."""
    return json.dumps(_clean(doc), indent=2, allow_nan=False)
