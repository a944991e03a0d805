"""Human-readable compare report: a five-second summary, then the per-layer table."""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table
from rich.text import Text

from bncheck.core.compare import Comparison
from bncheck.core.diagnosis import KL_ERROR, KL_WARN
from bncheck.core.verdict import Verdict
from bncheck.report.console import fmt_num

BAR = 10


def render_comparison(c: Comparison, v: Verdict, command: str, console: Console) -> None:
    """Verdict, recommendation, candidates against the noise floor, per-layer divergence."""
    ok = v.verdict == "ok"
    head = Text("verdict: ", style="bold")
    head.append(v.verdict.upper(), style="bold green" if ok else "bold red")
    if not ok:
        head.append(f"   recommendation: {v.mode}", style="bold")
    console.print(head)
    console.print(v.reason)
    if not c.candidates:
        return
    if not ok:
        # soft_wrap keeps the command on one logical line, so it copies and pastes intact.
        console.print(Text(f"fix: {command}", style="bold"), soft_wrap=True)
    console.print(
        f"samples {c.n_used}/{c.n_samples}, batch size {c.batch_size}, training batch size "
        f"{c.train_batch.value} ({c.train_batch.source}: {c.train_batch.detail})"
    )
    for note in c.notes:
        console.print(Text(f"note: {note}", style="dim"))
    console.print(_candidates(c, v))
    console.print(_layers(c))


def _candidates(c: Comparison, v: Verdict) -> Table:
    t = Table(title="discrepancy against the trained behaviour (relative L2 per sample)",
              title_justify="left", show_edge=False, pad_edge=False, header_style="bold")
    for col in ("run", "batch", "mean", "median", "p90", "argmax agree", "", "vs tolerance"):
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
        t.add_row(Text(d.name + (" *" if d.name == v.mode else ""), style="bold"
                       if d.name == v.mode else ""), str(d.batch_size), fmt_num(d.mean),
                  fmt_num(d.median), fmt_num(d.p90), agree, _bar(d.mean, top),
                  Text(mark, style=style))
    return t


def _bar(x: float, top: float) -> Text:
    if not math.isfinite(x):
        return Text("#" * BAR, style="red")
    n = round(BAR * min(x / top, 1.0))
    return Text("#" * n + "." * (BAR - n))


def _layers(c: Comparison) -> Table:
    t = Table(title="per layer: running stats vs what the layer is given, under training and "
              "eval propagation (worst first)", title_justify="left", show_edge=False, pad_edge=False,
              header_style="bold")
    for col in ("#", "layer", "KL (train)", "", "KL (eval)", "mean shift", "log var",
                "worst ch."):
        t.add_column(col, justify="left" if col in ("layer", "") else "right", no_wrap=True)
    top = max((r.reference.kl for r in c.layers if math.isfinite(r.reference.kl)), default=1.0)
    for r in sorted(c.layers, key=lambda r: -_key(r.reference.kl)):
        kl = r.reference.kl
        style = "red" if kl >= KL_ERROR else "yellow" if kl >= KL_WARN else "green"
        worst = ",".join(str(ch) for ch, _ in r.reference.worst_channels[:3])
        t.add_row(str(r.order), r.layer.name, Text(fmt_num(kl), style=style),
                  _bar(kl, max(top, KL_ERROR)), fmt_num(r.eval.kl), fmt_num(r.reference.mean_shift),
                  f"{r.reference.log_var_ratio:+.2f}" if math.isfinite(r.reference.log_var_ratio)
                  else "inf", worst)
    return t


def _key(x: float) -> float:
    return x if math.isfinite(x) else 1e300
