"""Human-readable inspect report."""

from __future__ import annotations

from collections import Counter

import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

from bncheck.core.inspection import Inspection
from bncheck.core.judgement.findings import Finding
from bncheck.core.network.layers import MomentumNote, NormLayer, finite_range
from bncheck.report.console import SEVERITY_STYLE, fmt_num


def render_inspection(r: Inspection, console: Console) -> None:
    """Summary line, layer table, then findings worst first."""
    console.print(summary_line(r))
    if r.layers:
        console.print(_layer_table(r))
    for f in r.findings:
        sev = Text(f"{f.severity.value.upper():5}", style=SEVERITY_STYLE[f.severity.value])
        where = f"{f.layer}: " if f.layer else ""
        console.print(Text.assemble(sev, "  ", f"{where}{f.message} [{f.code}]"))


def summary_line(r: Inspection, findings: list[Finding] | None = None) -> Text:
    """One line: what the model is and how bad it looks (``findings``: all of them, when a
    command found more than inspect did)."""
    sev = Counter(f.severity.value for f in (r.findings if findings is None else findings))
    stats = sum(1 for layer in r.layers if layer.uses_running_stats)
    t = Text(f"{r.model} ({r.format}): {len(r.layers)} layers, {stats} with running stats; ")
    counts = [f"{sev[k]} {k}" for k in ("error", "warn", "info") if sev.get(k)]
    t.append(", ".join(counts) or "no findings",
             style=SEVERITY_STYLE["error"] if sev.get("error") else
             SEVERITY_STYLE["warn"] if sev.get("warn") else "green")
    return t


def _range(layer: NormLayer, which: str) -> str:
    a = layer.running_mean if which == "mean" else layer.running_var
    if a is None:
        return "-"
    span = finite_range(a)
    text = f"{fmt_num(span[0])}..{fmt_num(span[1])}" if span else ""
    return f"{text} nan" if not np.isfinite(a).all() else text


def _momentum(layer: NormLayer) -> str:
    if layer.momentum is not None:
        return fmt_num(layer.momentum)
    return {MomentumNote.CUMULATIVE: "cumul.", MomentumNote.UNKNOWN: "?",
            MomentumNote.FROZEN: "frozen"}.get(layer.momentum_note,
                                                                           "-")


def _layer_table(r: Inspection) -> Table:
    # Findings are listed in full below the table; a cell only says how bad a layer is.
    per_layer: dict[str, Counter[str]] = {}
    for f in r.findings:
        per_layer.setdefault(f.layer, Counter())[f.severity.value] += 1
    t = Table(show_edge=False, pad_edge=False, header_style="bold")
    # A layer name is never cut or wrapped: a person must be able to read and copy it. Where the
    # width runs short, the kind and the ranges wrap instead.
    longest = max((len(layer.name) for layer in r.layers), default=5)
    t.add_column("layer", no_wrap=True, min_width=longest)
    for col, just, wrap in (("kind", "left", True), ("C", "right", False), ("eps", "right", False),
                            ("mom.", "right", False), ("running mean", "right", True),
                            ("running var", "right", True), ("findings", "left", False)):
        t.add_column(col, justify=just, no_wrap=not wrap,  # type: ignore[arg-type]
                     overflow="fold" if wrap else "ellipsis")
    for layer in r.layers:
        t.add_row(layer.name, layer.kind, str(layer.channels or "-"), fmt_num(layer.eps, 2),
                  _momentum(layer), _range(layer, "mean"), _range(layer, "var"),
                  _cell(per_layer.get(layer.name, Counter())))
    return t


def _cell(counts: Counter[str]) -> Text:
    for sev in ("error", "warn", "info"):
        if counts.get(sev):
            return Text(f"{counts[sev]} {sev}", style=SEVERITY_STYLE[sev])
    return Text("ok", style="green")
