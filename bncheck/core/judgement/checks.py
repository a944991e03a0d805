"""Data-free checks: problems visible from a layer's stored statistics and hyper-parameters alone."""

from __future__ import annotations

import numpy as np

from bncheck.core.judgement.findings import Finding
from bncheck.core.network.layers import Family, NormLayer
from bncheck.core.network.numerics import DEFAULT_EPS
from bncheck.core.network.options import Severity

# eps of 1e-5 (torch) and 1e-3 (Keras/TF) are both normal; outside this band it is usually a bug,
# most often BatchNorm2d(C, 0.8) where 0.8 was meant as momentum.
EPS_HIGH = 1e-2
EPS_LOW = 1e-8
# Relative margin for eps read from float32 storage.
EPS_REL = 1e-6
# Momentum (torch convention) outside this band makes the running average either frozen or noisy.
MOMENTUM_LOW = 1e-3
MOMENTUM_HIGH = 0.5
INIT_TOL = 1e-6


HIDDEN = "hidden-norm"


def check_layers(layers: list[NormLayer], *, hidden: tuple[str, ...] = (),
                 keep_bn: str | None = None) -> list[Finding]:
    """Run every data-free check over ``layers`` and return the findings (unsorted).

    ``hidden`` holds the model's traces of normalization no layer maps (an error each: nothing
    can be said of the model as a whole); ``keep_bn`` says how its exporter keeps BatchNorm.
    """
    findings: list[Finding] = []
    for layer in layers:
        findings.extend(_check_layer(layer))
    findings.extend(Finding("", Severity.ERROR, HIDDEN, sentence) for sentence in hidden)
    if not layers and not hidden:
        findings.append(_no_layers_finding(keep_bn))
    return findings


def _no_layers_finding(keep_bn: str | None) -> Finding:
    if keep_bn is not None:
        # An exported graph without a trace of BatchNorm: it had none, or the exporter left
        # no mark of folding it.
        return Finding("", Severity.WARN, "no-norm-layers",
                       "no normalization layer in this graph, and no trace of one; if the model "
                       f"had BatchNorm, it was folded at export: to keep it, {keep_bn}")
    return Finding("", Severity.INFO, "no-norm-layers", "no normalization layer in this model")


def _check_layer(layer: NormLayer) -> list[Finding]:
    sizes = {k: v.size for k, v in (("weight", layer.weight), ("bias", layer.bias),
                                     ("running_mean", layer.running_mean),
                                     ("running_var", layer.running_var)) if v is not None}
    if len(set(sizes.values())) > 1:
        # Per-channel checks need one channel count; the layer cannot even run like this.
        listed = ", ".join(f"{k} {n}" for k, n in sizes.items())
        return [Finding(layer.name, Severity.ERROR, "param-shapes",
                        f"its parameters disagree on the number of channels ({listed})")]
    if layer.channels == 0:
        return [Finding(layer.name, Severity.WARN, "no-channels",
                        "normalizes 0 channels: it does nothing, and compare and rewrite refuse "
                        "the model until it is removed")]
    out: list[Finding] = []
    name = layer.name
    out.extend(_nonfinite(layer))
    rv = layer.running_var
    rm = layer.running_mean
    if rv is not None and (rv < 0).any():
        n = int((rv < 0).sum())
        out.append(Finding(name, Severity.ERROR, "negative-var",
                           f"running_var is negative in {n} of {rv.size} channels"))
    if layer.family is Family.INSTANCE and layer.tracks_running_stats:
        out.append(Finding(name, Severity.INFO, "instance-norm-running-stats",
                           "InstanceNorm tracks running stats: in eval mode it uses them instead of "
                           "per-sample statistics"))
    if layer.training_mode and dict(layer.options).get("is_training"):
        out.append(Finding(name, Severity.INFO, "training-mode",
                           "TensorFlow runs it with is_training=True at inference: it normalizes "
                           "with the statistics of the batch it is given, so outputs depend on the "
                           "batch, and at batch size 1 it is instance normalization; its moving "
                           "averages are not used (compare measures them against that)"))
    elif layer.training_mode:
        out.append(Finding(name, Severity.INFO, "training-mode",
                           "BatchNormalization has training_mode=1: the graph normalizes with batch "
                           "statistics at inference already, so its outputs depend on the batch; "
                           "its running stats are not used"))
    elif layer.family is Family.BATCH and not layer.tracks_running_stats:
        out.append(Finding(name, Severity.INFO, "no-running-stats",
                           "track_running_stats=False: already uses batch statistics at inference"))
    if rm is not None and rv is not None and rm.size and _at_init(rm, rv):
        out.append(Finding(name, Severity.WARN, "stats-at-init",
                           "running stats are still at their initial values (mean 0, var 1): they "
                           "were probably never updated; recalibrate on representative data"))
    out.extend(_eps_findings(layer))
    out.extend(_momentum_findings(layer))
    return out


def _nonfinite(layer: NormLayer) -> list[Finding]:
    out = []
    for label, arr in (("running_mean", layer.running_mean), ("running_var", layer.running_var),
                       ("weight", layer.weight), ("bias", layer.bias)):
        if arr is not None and not np.isfinite(arr).all():
            n = int((~np.isfinite(arr)).sum())
            out.append(Finding(layer.name, Severity.ERROR, "nonfinite",
                               f"{label} has {n} NaN/Inf value(s) of {arr.size}"))
    return out


def _at_init(rm: np.ndarray, rv: np.ndarray) -> bool:
    return bool(np.all(np.abs(rm) <= INIT_TOL) and np.all(np.abs(rv - 1.0) <= INIT_TOL))


def _eps_findings(layer: NormLayer) -> list[Finding]:
    out: list[Finding] = []
    eps = layer.eps
    # ONNX stores eps as float32 (0.01 reads 0.0099999998): compare with a relative margin so
    # both backends flag the same layers.
    if eps is not None and (eps >= EPS_HIGH * (1 - EPS_REL) or eps <= EPS_LOW * (1 + EPS_REL)):
        hint = " (BatchNorm2d(C, 0.8) sets eps, not momentum)" if eps >= EPS_HIGH else ""
        out.append(Finding(layer.name, Severity.WARN, "unusual-eps",
                           f"eps={eps:g} is far from the usual 1e-5..1e-3{hint}"))
    rv = layer.running_var
    if rv is None or not rv.size or not layer.uses_running_stats:
        return out
    # A bare state_dict does not record eps; torch's default is the likely one.
    eps = DEFAULT_EPS if eps is None else eps
    small = np.isfinite(rv) & (rv >= 0) & (rv < eps)
    w = layer.weight
    dead = small & (np.abs(w) < 1e-6) if w is not None else np.zeros_like(small)
    for mask, code, text in (
        (small & ~dead, "eps-dominates", "running_var < eps in {n} of {c} channels: eps, not the "
                                         "data, sets their scale"),
        (dead, "dead-channels", "{n} of {c} channels are dead (|gamma|~0 and var~0)"),
    ):
        n = int(mask.sum())
        if n:
            sev = Severity.WARN if n > rv.size // 4 else Severity.INFO
            out.append(Finding(layer.name, sev, code, text.format(n=n, c=rv.size)))
    return out


def _momentum_findings(layer: NormLayer) -> list[Finding]:
    m = layer.momentum
    if m is None or not layer.uses_running_stats:
        return []
    if m == 0.0:
        rm, rv = layer.running_mean, layer.running_var
        if rm is not None and rv is not None and rm.size and _at_init(rm, rv):
            seen = "they are still at their initial values (mean 0, var 1)"
        else:
            seen = ("they hold values from before (trained, or loaded), which training then "
                    "leaves as they are")
        return [Finding(layer.name, Severity.WARN, "momentum-zero",
                        f"momentum=0: training never updates these running stats; {seen}")]
    if m < MOMENTUM_LOW or m > MOMENTUM_HIGH:
        return [Finding(layer.name, Severity.WARN, "unusual-momentum",
                        f"momentum={m:g} (torch convention) is unusual; 0.01..0.1 is typical")]
    return []
