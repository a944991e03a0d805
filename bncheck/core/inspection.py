"""inspect: the layers of a model and the problems visible from its weights alone."""

from __future__ import annotations

from dataclasses import dataclass

from bncheck.core.judgement.checks import check_layers
from bncheck.core.judgement.findings import Finding, sort_findings
from bncheck.core.network.layers import NormLayer
from bncheck.core.network.model import Model


@dataclass(frozen=True)
class Inspection:
    """What inspect found."""

    model: str
    format: str
    backend: str
    layers: list[NormLayer]
    findings: list[Finding]


def inspect_model(model: Model) -> Inspection:
    """Discover layers and run the data-free checks."""
    layers = model.layers()
    findings = sort_findings(check_layers(layers, hidden=model.hidden, keep_bn=model.keep_bn))
    return Inspection(str(model.path), model.format.value, model.backend, layers, findings)
