"""Human-readable compare report: a five-second summary, then the per-layer table."""

from __future__ import annotations

import math
from collections.abc import Mapping

from rich.console import Console
from rich.table import Table
from rich.text import Text

from bncheck.core.judgement.diagnosis import KL_ERROR, KL_WARN
from bncheck.core.judgement.findings import INCONCLUSIVE, Finding
from bncheck.core.judgement.measurements import Measurements
from bncheck.core.judgement.verdict import Diagnosis, FixMode, Verdict, VerdictKind
from bncheck.core.passes.reference import SHUFFLE_SEED
from bncheck.core.results import Comparison
from bncheck.report.console import SEVERITY_STYLE, fmt_num
from bncheck.report.inspect_text import summary_line

BAR = 10
WORST_SHOWN = 2


# Verdict findings restate the reason printed at the top; the list only points at it.
_VERDICT_CODES = {"eval-mismatch", "input-shift", INCONCLUSIVE}
_VERDICT_STYLE = {VerdictKind.OK: "bold green", VerdictKind.MISMATCH: "bold red",
                  VerdictKind.INCONCLUSIVE: "bold yellow"}


def render_comparison(result: Comparison, commands: Mapping[FixMode, str],
                      console: Console) -> None:
    """Summary line, verdict and what to do, candidates against the noise floor, per-layer
    divergence, then every finding the exit code can depend on."""
    c, v, findings = result.measurements, result.verdict, list(result.findings)
    console.print(summary_line(result.inspection, findings))
    head = Text("verdict: ", style="bold")
    head.append(v.verdict.value.upper(), style=_VERDICT_STYLE[v.verdict])
    if v.diagnosis is not Diagnosis.NONE:
        head.append(f" ({v.diagnosis.value})", style="bold")
    if v.mode is not FixMode.NONE:
        head.append(f"   recommendation: {v.mode.value}", style="bold")
    console.print(head)
    console.print(v.reason)
    if v.mode in commands:
        # soft_wrap keeps the command on one logical line, so it copies and pastes intact.
        console.print(Text(f"fix: {commands[v.mode]}", style="bold"), soft_wrap=True)
    if v.advice:
        console.print(f"{v.advice}:")
        console.print(Text(f"  {commands[v.conditional]}"), soft_wrap=True)
    if not c.candidates:
        _findings(findings, console)
        return
    console.print(
        f"samples {c.n_used}/{c.n_samples} (shuffled, seed {SHUFFLE_SEED}), batch size "
        f"{c.batch_size}, training batch size {c.train_batch.value} ({c.train_batch.source.value}: "
        f"{c.train_batch.detail})"
    )
    if c.truth is not None:
        values = ", ".join(f"{k} {c.truth.fmt(x)}" for k, x in c.metrics.items())
        console.print(f"{c.truth.kind.value} against {c.truth.path}: {values}")
    for note in c.notes:
        console.print(Text(f"note: {note}", style="dim"))
    console.print(_candidates(c, v))
    console.print(_layers(c))
    _findings(findings, console)


def _findings(findings: list[Finding], console: Console) -> None:
    for f in findings:
        sev = Text(f"{f.severity.value.upper():5}", style=SEVERITY_STYLE[f.severity.value])
        where = f"{f.layer}: " if f.layer else ""
        message = "see the verdict above" if f.code in _VERDICT_CODES else f.message
        console.print(Text.assemble(sev, "  ", f"{where}{message} [{f.code}]"))


def _candidates(c: Measurements, v: Verdict) -> Table:
    t = Table(title="discrepancy against the trained behaviour (relative L2 per sample)",
              title_justify="left", show_edge=False, pad_edge=False, header_style="bold")
    metric = [] if c.truth is None else [c.truth.kind.value]
    for col in ("run", "batch", "mean", "median", "p90", "argmax agree", *metric, "",
                "vs tolerance"):
        t.add_column(col, justify="left" if col in ("run", "", "vs tolerance") else "right",
                     no_wrap=True)
    rows = list(c.candidates.values())
    if c.noise_floor is not None:
        rows.insert(0, c.noise_floor)
    top = max((d.mean for d in rows if math.isfinite(d.mean)), default=1.0) or 1.0
    for d in rows:
        within = d.mean <= v.tolerance
        mark = "noise floor" if d.name == "noise-floor" else ("within" if within else "OFF")
        style = "dim" if d.name == "noise-floor" else ("green" if within else "red")
        agree = "-" if d.argmax_agreement is None else f"{100 * d.argmax_agreement:.1f}%"
        scores = [] if c.truth is None else [
            c.truth.fmt(c.metrics[d.name]) if d.name in c.metrics else "-"]
        t.add_row(Text(d.name + (" *" if d.name == v.mode else ""), style="bold"
                       if d.name == v.mode else ""), str(d.batch_size), fmt_num(d.mean),
                  fmt_num(d.median), fmt_num(d.p90), agree, *scores, _bar(d.mean, top),
                  Text(mark, style=style))
    return t


def _bar(x: float, top: float) -> Text:
    if not math.isfinite(x):
        return Text("#" * BAR, style="red")
    n = round(BAR * min(x / top, 1.0))
    return Text("#" * n + "." * (BAR - n))


def _layers(c: Measurements) -> Table:
    t = Table(title="per layer: running stats vs what the layer is given, under training and "
              "eval propagation (worst first)", title_justify="left", show_edge=False, pad_edge=False,
              header_style="bold")
    # Layer names are never cut: their column is as wide as the longest, and the figures
    # beside it are short.
    longest = max((len(r.layer.name) for r in c.layers), default=5)
    t.add_column("#", justify="right", no_wrap=True)
    t.add_column("layer", no_wrap=True, min_width=longest)
    for col in ("KL (train)", "KL (eval)", "mean shift", "log var", "worst ch."):
        t.add_column(col, justify="right", no_wrap=True)
    for r in sorted(c.layers, key=lambda r: -_key(r.reference.kl)):
        kl = r.reference.kl
        style = "red" if kl >= KL_ERROR else "yellow" if kl >= KL_WARN else "green"
        worst = ",".join(str(ch) for ch, _ in r.reference.worst_channels[:WORST_SHOWN])
        t.add_row(str(r.order), r.layer.name, Text(fmt_num(kl), style=style),
                  fmt_num(r.eval.kl), fmt_num(r.reference.mean_shift),
                  f"{r.reference.log_var_ratio:+.2f}" if math.isfinite(r.reference.log_var_ratio)
                  else "inf", worst)
    return t


def _key(x: float) -> float:
    return x if math.isfinite(x) else math.inf
