"""Human-readable inspect report."""

from __future__ import annotations

from collections import Counter

from rich.console import Console
from rich.table import Table
from rich.text import Text

from bncheck.core.inspection import Inspection
from bncheck.core.layers import NormLayer
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


def summary_line(r: Inspection) -> Text:
    """One line: what the model is and how bad it looks."""
    sev = Counter(f.severity.value for f in r.findings)
    stats = sum(1 for layer in r.layers if layer.uses_running_stats)
    t = Text(f"{r.model} ({r.format}): {len(r.layers)} norm layers, {stats} with running stats; ")
    counts = [(sev.get(k, 0), k) for k in ("error", "warn", "info")]
    t.append(", ".join(f"{n} {k}" for n, k in counts),
             style=SEVERITY_STYLE["error"] if sev.get("error") else
             SEVERITY_STYLE["warn"] if sev.get("warn") else "green")
    return t


def _range(layer: NormLayer, which: str) -> str:
    a = layer.running_mean if which == "mean" else layer.running_var
    if a is None:
        return "-"
    return f"{fmt_num(float(a.min()))}..{fmt_num(float(a.max()))}"


def _momentum(layer: NormLayer) -> str:
    if layer.momentum is not None:
        return fmt_num(layer.momentum)
    return {"cumulative": "cumul.", "unknown": "?", "frozen": "frozen"}.get(layer.momentum_note,
                                                                           "-")


def _layer_table(r: Inspection) -> Table:
    by_layer: dict[str, list[str]] = {}
    worst: dict[str, str] = {}
    order = {"error": 2, "warn": 1, "info": 0}
    for f in r.findings:
        by_layer.setdefault(f.layer, []).append(f.code)
        if order[f.severity.value] >= order.get(worst.get(f.layer, "info"), 0):
            worst[f.layer] = f.severity.value
    t = Table(show_edge=False, pad_edge=False, header_style="bold")
    for col, just in (("layer", "left"), ("kind", "left"), ("C", "right"), ("eps", "right"),
                      ("mom.", "right"), ("running mean", "right"), ("running var", "right")):
        t.add_column(col, justify=just, no_wrap=True)  # type: ignore[arg-type]
    t.add_column("findings", overflow="fold")
    for layer in r.layers:
        codes = by_layer.get(layer.name, [])
        style = SEVERITY_STYLE.get(worst.get(layer.name, ""), "") if codes else ""
        t.add_row(layer.name, layer.kind, str(layer.channels or "-"), fmt_num(layer.eps, 2),
                  _momentum(layer), _range(layer, "mean"), _range(layer, "var"),
                  Text(", ".join(codes) or "ok", style=style or "green"))
    return t
