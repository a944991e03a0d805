"""JSON documents for --format json (one document on stdout, nothing else)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from bncheck import __version__
from bncheck.core.compare import Comparison
from bncheck.core.findings import Finding
from bncheck.core.inspection import Inspection
from bncheck.core.reference import SHUFFLE_SEED
from bncheck.core.verdict import FixMode, Verdict


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


def inspection_doc(r: Inspection) -> dict[str, Any]:
    """The inspect document."""
    return {
        "bncheck": __version__, "command": "inspect", "model": r.model, "format": r.format,
        "backend": r.backend, "layers": [layer.to_json() for layer in r.layers],
        "findings": [f.to_json() for f in r.findings],
    }


def comparison_doc(r: Inspection, c: Comparison, v: Verdict, findings: list[Finding],
                   commands: Mapping[FixMode, str]) -> dict[str, Any]:
    """The compare document: inspect's keys plus verdict, recommendation and metrics."""
    doc = inspection_doc(r)
    doc["command"] = "compare"
    doc["findings"] = [f.to_json() for f in findings]
    doc.update(v.to_json())
    doc["recommendation"]["command"] = commands.get(v.mode, "")
    doc["recommendation"]["conditional"]["command"] = commands.get(v.conditional, "")
    doc["input_shift"] = None if c.shift is None else {
        **c.shift.to_json(),
        "expectation": None if c.expectation is None else c.expectation.to_json()}
    doc["task_metric"] = None if c.truth is None else {
        "kind": c.truth.kind.value, "file": str(c.truth.path), "values": c.metrics}
    doc["samples"] = {"total": c.n_samples, "used": c.n_used, "batch_size": c.batch_size,
                      "shuffle_seed": SHUFFLE_SEED, "reference_batches": c.reference_batches}
    doc["train_batch_size"] = c.train_batch.to_json()
    doc["noise_floor"] = None if c.noise_floor is None else c.noise_floor.to_json()
    doc["candidates"] = {k: d.to_json() for k, d in c.candidates.items()}
    doc["forward_passes"] = c.forward_passes
    doc["notes"] = c.notes
    doc["layer_metrics"] = [
        {"name": lr.layer.name, "kind": lr.layer.kind, "order": lr.order, "spatial": lr.spatial,
         "eval": lr.eval.to_json(), "reference": lr.reference.to_json()}
        for lr in c.layers
    ]
    return doc
