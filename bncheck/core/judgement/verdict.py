"""The verdict: is eval mode within the noise floor of the trained behaviour, why not, what fixes it.

See docs/design.md, "The verdict". In short:
- inconclusive when the evidence cannot carry a verdict (too few reference batches, a reference
  too noisy to judge against unless eval mode is farther from it than zeros and the noise or
  some layer's running stats are plainly wrong for what it is given and recalibrating brings
  the output closer, a fix that rests on an assumed training batch size);
- ok when eval mode is within tolerance of the reference;
- otherwise a mismatch, diagnosed as an input shift (the first normalization layer already sees
  data its running stats do not describe: check the preprocessing, and recalibrate only if this
  data is what is deployed) or as an internal mismatch (the running stats disagree with how the
  network was trained), fixed by the candidate closest to the reference. With a task metric, a fix
  that makes it worse than eval mode is never recommended.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from bncheck.core.judgement.diagnosis import KL_ERROR, KL_WARN, wrong_stats
from bncheck.core.judgement.discrepancy import Discrepancy
from bncheck.core.judgement.findings import INCONCLUSIVE, Finding
from bncheck.core.judgement.measurements import Measurements
from bncheck.core.judgement.tolerance import MAX_TOLERANCE, departs_beyond_noise, tolerance_for
from bncheck.core.network.options import Severity
from bncheck.core.passes.reference import MIN_REFERENCE_BATCHES
from bncheck.core.stats.batchsize import BatchSizeSource


class VerdictKind(StrEnum):
    """The answer compare gives."""

    OK = "ok"
    MISMATCH = "mismatch"
    INCONCLUSIVE = "inconclusive"


class Diagnosis(StrEnum):
    """Why eval mode departs from the trained behaviour."""

    NONE = "none"
    INPUT_SHIFT = "input-shift"  # the data is not what the model was trained on
    INTERNAL = "internal-mismatch"  # the running stats disagree with how it was trained


class FixMode(StrEnum):
    """A recommendation: a rewrite mode, or none."""

    NONE = "none"
    RECALIBRATE = "recalibrate"
    INSTANCE_NORM = "instance-norm"
    BATCH_STATS = "batch-stats"


# Batch-independent fixes first, then the least invasive.
PREFERENCE = (FixMode.RECALIBRATE, FixMode.INSTANCE_NORM, FixMode.BATCH_STATS)
# Fixes whose case rests on the training batch size.
BATCH_DEPENDENT = (FixMode.INSTANCE_NORM, FixMode.BATCH_STATS)


@dataclass(frozen=True)
class Verdict:
    """The verdict, its diagnosis, the recommended mode and a reason citing the figures.

    ``conditional`` is a fix to apply only under a stated condition: recalibrate after an input
    shift ("if this data is what you deploy on"), or when the output is fine but some layers'
    stats do not describe the data.
    """

    verdict: VerdictKind
    diagnosis: Diagnosis
    mode: FixMode
    reason: str
    tolerance: float
    first_failing_layer: str | None
    conditional: FixMode = FixMode.NONE
    advice: str = ""

    def to_json(self) -> dict[str, object]:
        """The contract's ``verdict`` and ``recommendation`` keys, and the diagnosis."""
        return {"verdict": self.verdict.value, "diagnosis": self.diagnosis.value,
                "recommendation": {"mode": self.mode.value, "reason": self.reason,
                                   "conditional": {"mode": self.conditional.value,
                                                   "advice": self.advice}},
                "tolerance": self.tolerance, "first_failing_layer": self.first_failing_layer}


def tolerance(c: Measurements) -> float:
    """How far from the reference still counts as behaving as trained."""
    return tolerance_for(c.noise_floor.mean if c.noise_floor is not None else 0.0)


def decide(c: Measurements) -> Verdict:
    """Apply the rules in the module docstring to what compare measured."""
    if not c.candidates:
        return Verdict(VerdictKind.OK, Diagnosis.NONE, FixMode.NONE,
                       c.notes[0] if c.notes else "nothing depends on the batch", 0.0, None)
    tol = tolerance(c)
    first = first_failing_layer(c)
    ev = c.candidates["eval"]
    floor = c.noise_floor.mean if c.noise_floor else 0.0
    b = c.train_batch.value
    figures = (f"eval mode is {_f(ev.mean)} from the trained behaviour (relative L2; noise floor "
               f"{_f(floor)}, tolerance {_f(tol)}, training batch size {b}{_plausible(c)})")
    fix, advice = _conditional_recalibrate(c, tol)
    if c.n_used // b < MIN_REFERENCE_BATCHES:
        return _inconclusive(
            c, tol, first,
            f"{c.n_used} usable sample(s) make {c.n_used // b} reference batch(es) at the training "
            f"batch size {b}, fewer than the {MIN_REFERENCE_BATCHES} needed to see how the trained "
            f"behaviour varies with the batch. Give at least {MIN_REFERENCE_BATCHES * b} samples"
            + ("" if c.train_batch.source is BatchSizeSource.OPTION else
               ", or --train-batch-size if you know it"), fix, advice)
    noisy = tol > MAX_TOLERANCE
    where = f"; it departs first at layer {first}" if first else ""
    wrong = [c.layers[i] for i in wrong_stats(r.reference.kl for r in c.layers)]
    recal = c.candidates.get(FixMode.RECALIBRATE.value)
    if noisy and departs_beyond_noise(ev.mean, tol):
        figures += (f". Re-batching alone moves the trained behaviour by {_f(floor)}, too much to "
                    f"pass any output, but eval mode is farther from it than an all-zero output "
                    f"is and than twice that noise")
    elif noisy and wrong and c.shift is None and recal is not None and recal.mean < ev.mean:
        worst = max(wrong, key=lambda r: _key(r.reference.kl))
        return _internal(c, f"{figures}. Re-batching alone moves the trained behaviour by "
                            f"{_f(floor)}, too much to pass any output, but the running stats of "
                            f"{len(wrong)} layer(s) are wrong for what they are given in training "
                            f"(worst {worst.layer.name}, expected KL {_f(worst.reference.kl)}, "
                            f"{KL_ERROR} or more), and re-estimating them brings the output "
                            f"closer{where}", tol, first)
    elif noisy:
        if not math.isfinite(floor):
            why = (f"the trained behaviour (batch statistics at batch size {b}) gives NaN or Inf "
                   "outputs, so there is nothing to judge eval mode against")
        else:
            why = (f"re-batching alone moves the trained behaviour by {_f(floor)} (relative L2), "
                   f"so the tolerance would be {_f(tol)}, above the {MAX_TOLERANCE} under which a "
                   f"verdict means anything: this model's outputs are dominated by batch noise "
                   f"at batch size {b}")
        return _inconclusive(c, tol, first, why + _half_precision(c) + ". Give --train-batch-size"
                             " if it differs, or samples like the training data", fix, advice)
    if ev.mean <= tol:
        return Verdict(VerdictKind.OK, Diagnosis.NONE, FixMode.NONE,
                       f"{figures}: within tolerance, no fix needed", tol, first, fix,
                       f"The output is within tolerance, but {advice[0].lower()}{advice[1:]}"
                       if advice else "")
    if c.shift is not None:
        return _shifted(c, figures + where, tol, first, fix, advice)
    return _internal(c, figures + where, tol, first)


def _shifted(c: Measurements, figures: str, tol: float, first: str | None, fix: FixMode,
             advice: str) -> Verdict:
    """An input shift. A candidate within tolerance is still recommended where the reading
    cannot make it wrong (instance-norm: a per-sample gain and offset do not change what it
    normalizes to), and every other one within tolerance gets the sentence that says why not
    (recalibrate's is the conditional advice)."""
    assert c.shift is not None
    reason = (f"{figures}. The inputs differ from the data the model was trained on: "
              f"{c.shift.describe()}. {_preprocessing_advice(c)}")
    inorm = c.candidates.get(FixMode.INSTANCE_NORM.value)
    if inorm is not None and inorm.mean <= tol and c.train_batch.source.is_known \
            and not _lowers_metric(c, inorm):
        return Verdict(VerdictKind.MISMATCH, Diagnosis.INPUT_SHIFT, FixMode.INSTANCE_NORM,
                       f"{reason} Under either reading, instance-norm comes to "
                       f"{_f(inorm.mean)}, within tolerance: it normalizes each sample by its "
                       "own statistics, which a per-sample gain and offset do not change.",
                       tol, first, fix, advice)
    # Recalibrate's sentence is the conditional advice: only if this data is what is deployed.
    why_not = {
        FixMode.INSTANCE_NORM: "that rests on the training batch size, which "
                               f"{_unknown(c)}; give --train-batch-size",
        FixMode.BATCH_STATS: "it would take every batch's statistics from the data it is "
                             "given and make outputs depend on the batch",
    }
    for mode in why_not:
        d = c.candidates.get(mode.value)
        if d is not None and d.mean <= tol and not _lowers_metric(c, d):
            reason += f" {mode.value} comes to {_f(d.mean)}, within tolerance, but {why_not[mode]}."
    return Verdict(VerdictKind.MISMATCH, Diagnosis.INPUT_SHIFT, FixMode.NONE, reason, tol,
                   first, fix, advice)


def _unknown(c: Measurements) -> str:
    """How the training batch size is not known, as a clause."""
    return ("could not be estimated" if c.train_batch.source is BatchSizeSource.ASSUMED
            else "the data does not pin down")


def _internal(c: Measurements, figures: str, tol: float, first: str | None) -> Verdict:
    fixes = [c.candidates[m] for m in PREFERENCE if m in c.candidates]
    eval_metric = c.metrics.get("eval")
    harmful = [d for d in fixes if _lowers_metric(c, d)]
    safe = [d for d in fixes if d not in harmful]
    dropped = ""
    if harmful and c.truth is not None and eval_metric is not None:
        dropped = (" Not recommended, as they lower the " + c.truth.kind.value + " below eval "
                   f"mode's {c.truth.fmt(eval_metric)}: "
                   + ", ".join(f"{d.name} ({c.truth.fmt(c.metrics[d.name])})" for d in harmful)
                   + ".")
    if not safe:
        return Verdict(VerdictKind.MISMATCH, Diagnosis.INTERNAL, FixMode.NONE,
                       f"{figures}. Every candidate fix lowers the task metric, so none is "
                       f"recommended.{dropped}", tol, first)
    within = [d for d in safe if d.mean <= tol]
    best = within[0] if within else min(safe, key=lambda d: d.mean)
    mode = FixMode(best.name)
    if mode in BATCH_DEPENDENT and not c.train_batch.source.is_known:
        return _inconclusive(
            c, tol, first,
            f"{figures}. {best.name} comes closest, but that rests on the training batch size, "
            f"which {_unknown(c)} ({c.train_batch.detail}). Give --train-batch-size",
            FixMode.NONE, "")
    others = ", ".join(f"{d.name} {_f(d.mean)}" for d in fixes if d is not best)
    closing = "" if within else "; no candidate is within tolerance, this one comes closest"
    metric = ""
    if c.truth is not None and eval_metric is not None:
        metric = (f" {c.truth.kind.value.capitalize()}: eval {c.truth.fmt(eval_metric)}, "
                  f"{best.name} {c.truth.fmt(c.metrics[best.name])}.")
    reason = (f"{figures}. {best.name} comes to {_f(best.mean)} (others: {others or 'none'})"
              f"{closing}. {_why(mode, best)}{metric}{dropped}")
    return Verdict(VerdictKind.MISMATCH, Diagnosis.INTERNAL, mode, reason, tol, first)


def _inconclusive(c: Measurements, tol: float, first: str | None, why: str, fix: FixMode,
                  advice: str) -> Verdict:
    return Verdict(VerdictKind.INCONCLUSIVE, Diagnosis.NONE, FixMode.NONE, why, tol, first, fix,
                   advice)


def _plausible(c: Measurements) -> str:
    """For an uncertain training batch size: that the reference's is one of several."""
    t = c.train_batch
    if t.source is not BatchSizeSource.UNCERTAIN or t.low is None:
        return ""
    span = f"{t.low} or more" if t.high is None else f"{t.low} to {t.high}"
    return f", one of the plausible {span}"


def _half_precision(c: Measurements) -> str:
    """For a half-precision model: whether its own rounding explains a noisy reference."""
    r = c.half_rounding
    if r is None:
        return ""
    floor = c.noise_floor.mean if c.noise_floor else 0.0
    share = ("that is float16 rounding, not the batch" if not math.isfinite(r) or r >= floor / 2
             else "rounding is not what moves it")
    return (f". This is a half-precision model: one rounding step of its inputs alone moves "
            f"the trained behaviour by {_f(r)} ({share}); compare the float32 model to judge it")


def _lowers_metric(c: Measurements, d: Discrepancy) -> bool:
    if c.truth is None or "eval" not in c.metrics or d.name not in c.metrics:
        return False
    return c.truth.worse(c.metrics[d.name], c.metrics["eval"])


def _conditional_recalibrate(c: Measurements, tol: float) -> tuple[FixMode, str]:
    """Recalibrate as a fix only if this data is what is deployed, with the sentence saying so.

    Offered after an input shift, and whenever some layers' running stats do not describe the
    data even though the output verdict does not show it; never when it lowers the metric.
    """
    recal = c.candidates.get(FixMode.RECALIBRATE.value)
    if recal is not None and _lowers_metric(c, recal):
        return FixMode.NONE, ""
    figure = "" if recal is None else f" (it then comes to {_f(recal.mean)})"
    if c.shift is not None and c.candidates["eval"].mean > tol:
        return FixMode.RECALIBRATE, (f"Only if this data is what you deploy on, recalibrate on "
                                     f"it{figure}")
    diverging = [r for r in c.layers if r.reference.kl >= KL_WARN]
    if diverging:
        worst = max(diverging, key=lambda r: _key(r.reference.kl))
        return FixMode.RECALIBRATE, (
            f"The running stats of {len(diverging)} layer(s) do not describe this data (worst "
            f"{worst.layer.name}, expected KL {_f(worst.reference.kl)}); if this data is what you "
            f"deploy on, recalibrate{figure}")
    return FixMode.NONE, ""


def _preprocessing_advice(c: Measurements) -> str:
    e = c.expectation
    if e is None or e.expected_mean is None or e.expected_std is None:
        note = f" ({e.note})" if e is not None else ""
        return f"Check the preprocessing (normalization, contrast, channel order) first{note}."
    text = (f"Check the preprocessing first: per input channel the data has mean {_v(e.data_mean)}"
            f" and std {_v(e.data_std)}; the model appears to expect mean {_v(e.expected_mean)} "
            f"and std {_v(e.expected_std)} ({e.note})")
    if e.suggested_mean is not None and e.suggested_std is not None:
        text += (f"; for this image folder, --mean {','.join(f'{x:.3g}' for x in e.suggested_mean)}"
                 f" --std {','.join(f'{x:.3g}' for x in e.suggested_std)} would match")
    return text + "."


def _v(xs: list[float]) -> str:
    return "[" + ", ".join(f"{x:.3g}" for x in xs) + "]"


def _why(mode: FixMode, best: Discrepancy) -> str:
    if mode is FixMode.INSTANCE_NORM:
        return ("The model was trained on per-sample statistics: instance normalization "
                "reproduces that and makes outputs independent of the batch.")
    if mode is FixMode.RECALIBRATE:
        return ("The running statistics do not match what the layers see: re-estimating them on "
                "this data restores the trained behaviour.")
    return (f"Only batch statistics at batch size {best.batch_size} reproduce the training "
            "behaviour; outputs will depend on the batch.")


def _f(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.3f}"


def _key(x: float) -> float:
    return x if math.isfinite(x) else math.inf


def first_failing_layer(c: Measurements) -> str | None:
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


def compare_findings(c: Measurements, v: Verdict) -> list[Finding]:
    """Findings for the verdict and for each diverging layer."""
    out: list[Finding] = []
    if v.verdict is VerdictKind.INCONCLUSIVE:
        out.append(Finding("", Severity.ERROR, INCONCLUSIVE, v.reason))
    elif v.diagnosis is Diagnosis.INPUT_SHIFT:
        out.append(Finding(c.shift.layer if c.shift else "", Severity.ERROR, "input-shift",
                           v.reason))
    elif v.verdict is VerdictKind.MISMATCH:
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
