"""--plot: per-layer divergence and candidate discrepancies as a PNG."""

from __future__ import annotations

import math
from pathlib import Path

from bncheck.core.judgement.measurements import Measurements
from bncheck.core.judgement.verdict import Verdict
from bncheck.errors import BncheckError

# Bars are drawn up to these heights: a KL above the cap, or an infinite discrepancy (NaN stats),
# would flatten every other bar.
KL_BAR_CAP = 50.0
INFINITE_BAR = 10.0

def write_plot(c: Measurements, v: Verdict, path: Path) -> None:
    """Two panels: KL per layer (both propagations) and candidates against the tolerance."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise BncheckError("--plot needs matplotlib: pip install 'bncheck[plot]'") from e
    layers = sorted(c.layers, key=lambda r: r.order)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [2, 1]})
    names = [r.layer.name for r in layers]
    cap = KL_BAR_CAP
    ref = [min(r.reference.kl, cap) if math.isfinite(r.reference.kl) else cap for r in layers]
    ev = [min(r.eval.kl, cap) if math.isfinite(r.eval.kl) else cap for r in layers]
    xs = range(len(names))
    ax1.bar([x - 0.2 for x in xs], ref, width=0.4, label="training propagation")
    ax1.bar([x + 0.2 for x in xs], ev, width=0.4, label="eval propagation")
    ax1.set_xticks(list(xs), names, rotation=60, ha="right", fontsize=8)
    ax1.set_ylabel("expected KL(batch stats || running stats), nats")
    ax1.set_xlabel("normalization layer (execution order)")
    ax1.set_yscale("symlog", linthresh=0.1)
    ax1.legend()
    ax1.set_title("per-layer divergence")
    cands = list(c.candidates.values())
    vals = [d.mean if math.isfinite(d.mean) else INFINITE_BAR for d in cands]
    colors = ["tab:green" if d.mean <= v.tolerance else "tab:red" for d in cands]
    ax2.bar([d.name for d in cands], vals, color=colors)
    ax2.axhline(v.tolerance, color="k", linestyle="--", label=f"tolerance {v.tolerance:.3f}")
    ax2.set_ylabel("mean relative L2 vs trained behaviour")
    ax2.set_title(f"candidates (verdict: {v.verdict.value})")
    ax2.tick_params(axis="x", rotation=30)
    ax2.legend()
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as e:
        raise BncheckError(f"--plot {path}: cannot write it ({e})") from e
    finally:
        plt.close(fig)
