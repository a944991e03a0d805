"""What the API returns: frozen results that know their JSON form (the stable contract)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bncheck.core.inspection import Inspection
from bncheck.core.judgement.findings import Finding
from bncheck.core.judgement.measurements import Measurements
from bncheck.core.judgement.verdict import FixMode, Verdict, VerdictKind
from bncheck.core.passes.reference import SHUFFLE_SEED
from bncheck.version import __version__


def inspection_json(r: Inspection) -> dict[str, Any]:
    """The inspect document."""
    return {
        "bncheck": __version__, "command": "inspect", "model": r.model, "format": r.format,
        "backend": r.backend, "layers": [layer.to_json() for layer in r.layers],
        "findings": [f.to_json() for f in r.findings],
    }


@dataclass(frozen=True)
class Comparison:
    """compare's answer: the inspection, what was measured, the verdict and every finding."""

    inspection: Inspection
    measurements: Measurements
    verdict: Verdict
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        """Eval mode behaves as the model was trained."""
        return self.verdict.verdict is VerdictKind.OK

    def to_json(self, commands: Mapping[FixMode, str] | None = None) -> dict[str, Any]:
        """The compare document; ``commands`` are the rewrite commands a CLI prints."""
        commands = commands or {}
        c, v = self.measurements, self.verdict
        doc = inspection_json(self.inspection)
        doc["command"] = "compare"
        doc["findings"] = [f.to_json() for f in self.findings]
        doc.update(v.to_json())
        doc["recommendation"]["command"] = commands.get(v.mode, "")
        doc["recommendation"]["conditional"]["command"] = commands.get(v.conditional, "")
        doc["input_shift"] = None if c.shift is None else {
            **c.shift.to_json(),
            "expectation": None if c.expectation is None else c.expectation.to_json()}
        doc["task_metric"] = None if c.truth is None else {
            "kind": c.truth.kind.value, "file": str(c.truth.path), "values": dict(c.metrics)}
        doc["samples"] = {"total": c.n_samples, "used": c.n_used, "batch_size": c.batch_size,
                          "shuffle_seed": SHUFFLE_SEED, "reference_batches": c.reference_batches,
                          "tapped": dict(c.tapped)}
        doc["train_batch_size"] = c.train_batch.to_json()
        doc["noise_floor"] = None if c.noise_floor is None else c.noise_floor.to_json()
        doc["candidates"] = {k: d.to_json() for k, d in c.candidates.items()}
        doc["forward_passes"] = c.forward_passes
        doc["precision"] = None if c.precision is None else dict(c.precision)
        doc["half_precision"] = None if c.half_rounding is None else {
            "rounding": c.half_rounding}
        doc["notes"] = list(c.notes)
        doc["layer_metrics"] = [
            {"name": lr.layer.name, "kind": lr.layer.kind, "order": lr.order,
             "spatial": lr.spatial, "eval": lr.eval.to_json(), "reference": lr.reference.to_json()}
            for lr in c.layers
        ]
        return doc
