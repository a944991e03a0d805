"""The verdict: is eval mode within the noise floor of the trained behaviour, and what fixes it."""

from __future__ import annotations

import math
from dataclasses import dataclass

from bncheck.core.compare import Comparison, Discrepancy
from bncheck.core.diagnosis import KL_ERROR, KL_WARN
from bncheck.core.findings import Finding
from bncheck.core.options import Severity
from bncheck.core.tolerance import tolerance_for

# Batch-independent fixes first, then the least invasive (DESIGN.md §2).
PREFERENCE = ("recalibrate", "instance-norm", "batch-stats")


@dataclass(frozen=True)
class Verdict:
    """``ok`` or ``mismatch``, the recommended mode and a reason citing the figures."""

    verdict: str
    mode: str
    reason: str
    tolerance: float
    first_failing_layer: str | None

    def to_json(self) -> dict[str, object]:
        """The contract's ``verdict`` and ``recommendation`` keys."""
        return {"verdict": self.verdict,
                "recommendation": {"mode": self.mode, "reason": self.reason},
                "tolerance": self.tolerance, "first_failing_layer": self.first_failing_layer}


def tolerance(c: Comparison) -> float:
    """How far from the reference still counts as behaving as trained."""
    return tolerance_for(c.noise_floor.mean if c.noise_floor is not None else 0.0)


def decide(c: Comparison) -> Verdict:
    """Apply DESIGN.md §2: eval within tolerance is ok; else the closest candidate, preferred
    in order recalibrate, instance-norm, batch-stats among those within tolerance."""
    if not c.candidates:
        return Verdict("ok", "none", c.notes[0] if c.notes else "nothing depends on the batch",
                       0.0, None)
    tol = tolerance(c)
    first = first_failing_layer(c)
    ev = c.candidates["eval"]
    floor = c.noise_floor.mean if c.noise_floor else 0.0
    figures = (f"eval mode is {_f(ev.mean)} from the trained behaviour (relative L2; noise floor "
               f"{_f(floor)}, tolerance {_f(tol)}, training batch size {c.train_batch.value})")
    if ev.mean <= tol:
        return Verdict("ok", "none", f"{figures}: within tolerance, no fix needed", tol, first)
    fixes = [c.candidates[m] for m in PREFERENCE if m in c.candidates]
    within = [d for d in fixes if d.mean <= tol]
    best = within[0] if within else min(fixes, key=lambda d: d.mean)
    others = ", ".join(f"{d.name} {_f(d.mean)}" for d in fixes if d is not best)
    why = _why(best)
    closing = "" if within else "; no candidate is within tolerance, this one comes closest"
    where = f"; it departs first at layer {first}" if first else ""
    reason = (f"{figures}{where}. {best.name} comes to {_f(best.mean)} (others: {others}){closing}."
              f" {why}")
    return Verdict("mismatch", best.name, reason, tol, first)


def _why(best: Discrepancy) -> str:
    if best.name == "instance-norm":
        return ("The model was trained on per-sample statistics: instance normalization "
                "reproduces that and makes outputs independent of the batch.")
    if best.name == "recalibrate":
        return ("The running statistics do not match what the layers see: re-estimating them on "
                "this data restores the trained behaviour.")
    return (f"Only batch statistics at batch size {best.batch_size} reproduce the training "
            "behaviour; outputs will depend on the batch.")


def _f(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.3f}"


def first_failing_layer(c: Comparison) -> str | None:
    """The first layer, in execution order, whose running stats diverge under reference
    propagation (the inputs it had in training)."""
    for r in sorted(c.layers, key=lambda r: r.order):
        if r.reference.kl >= KL_WARN:
            return r.layer.name
    return None


def layer_severity(kl: float) -> Severity | None:
    """Severity of a layer's divergence, None below the warning level."""
    if kl >= KL_ERROR:
        return Severity.ERROR
    if kl >= KL_WARN:
        return Severity.WARN
    return None


def compare_findings(c: Comparison, v: Verdict) -> list[Finding]:
    """Findings for the verdict and for each diverging layer."""
    out: list[Finding] = []
    if v.verdict == "mismatch":
        out.append(Finding(v.first_failing_layer or "", Severity.ERROR, "eval-mismatch",
                           v.reason))
    for r in c.layers:
        sev = layer_severity(r.reference.kl)
        if sev is not None:
            out.append(Finding(r.layer.name, sev, "stats-divergence",
                               f"running stats diverge from the training-time batch statistics "
                               f"(expected KL {_f(r.reference.kl)}, mean shift "
                               f"{_f(r.reference.mean_shift)} std, log var ratio "
                               f"{r.reference.log_var_ratio:+.2f})"))
    return out
