"""Findings: one problem, on one layer, with a stable code."""

from __future__ import annotations

from dataclasses import dataclass

from bncheck.core.network.options import FailOn, Severity


@dataclass(frozen=True)
class Finding:
    """A problem found in a model. ``layer`` is empty for model-wide findings."""

    layer: str
    severity: Severity
    code: str
    message: str

    def to_json(self) -> dict[str, str]:
        """A JSON-ready dict with the contract's keys."""
        return {
            "layer": self.layer,
            "severity": self.severity.value,
            "code": self.code,
            "message": self.message,
        }


def sort_findings(findings: list[Finding]) -> list[Finding]:
    """Worst first; stable within a severity."""
    return sorted(findings, key=lambda f: -f.severity.rank)


# The finding of an inconclusive compare.
INCONCLUSIVE = "inconclusive"
# The findings of compare's mismatch verdict, the only ones --fail-on mismatch exits 1 for.
MISMATCH_CODES = ("eval-mismatch", "input-shift")


def exit_code(findings: list[Finding], fail_on: FailOn) -> int:
    """0 when nothing is at or above ``fail_on`` (for MISMATCH: no mismatch verdict), else 1."""
    if fail_on is FailOn.MISMATCH:
        return 1 if any(f.code in MISMATCH_CODES for f in findings) else 0
    threshold = Severity(fail_on.value).rank
    return 1 if any(f.severity.rank >= threshold for f in findings) else 0
