"""Human-readable rewrite report: what each pass did, each check with its tolerance."""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from bncheck.report.console import fmt_num
from bncheck.rewriting.run import RewriteReport


def render_rewrite(r: RewriteReport, console: Console) -> None:
    """Notes per mode, verification table, then the outcome."""
    console.print(Text(f"{r.source} -> {r.output}  ({' then '.join(m.value for m in r.modes)})",
                       style="bold"), soft_wrap=True)
    for mode, notes in r.notes.items():
        for n in notes:
            console.print(f"  {mode}: {n}")
    console.print(f"verification on {r.verified_on}:")
    for c in r.checks:
        mark = Text("ok  ", style="green") if c.passed else Text("FAIL", style="bold red")
        # One line per check, however long: a check is read (and grepped) as a unit.
        console.print(Text.assemble("  ", mark, f" {c.name}: {fmt_num(c.measured)} "
                                    f"(tolerance {fmt_num(c.tolerance)})"), soft_wrap=True)
    if r.ok:
        console.print(Text(f"wrote {r.output}", style="bold green"))
    else:
        console.print(Text(f"verification failed: {r.output} was not written", style="bold red"))
