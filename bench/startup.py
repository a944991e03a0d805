"""Start-up: bncheck --help, and inspect of an ONNX file and of a large state_dict."""

from __future__ import annotations

from pathlib import Path

from bench.common import BASE, BNCHECK, PY, median_pair, row


def startup_rows(p: dict[str, Path]) -> list[list[str]]:
    """The start-up rows."""
    rows: list[list[str]] = []
    a, b = median_pair([*BNCHECK, "--help"], [PY, "-c", "pass"])
    row(rows, "`bncheck --help`", f"`python -c pass`: {b:.3f} s", f"{a:.3f} s", None, "<= 0.3 s",
        a <= 0.3)
    a, b = median_pair([*BNCHECK, "inspect", str(p["r18_onnx"])], [PY, "-c", "import onnx"])
    row(rows, "`inspect` of an ONNX file", f"`import onnx`: {b:.3f} s", f"{a:.3f} s (+{a - b:.3f} s)",
        None, "<= +0.3 s", a - b <= 0.3)
    size = p["r50"].stat().st_size / 2**20
    a, b = median_pair([*BNCHECK, "inspect", str(p["r50"])], [*BASE, "torch-load", str(p["r50"])])
    row(rows, f"`inspect` of a {size:.0f} MiB state_dict (ResNet-50 size)", f"torch.load: {b:.2f} s",
        f"{a:.2f} s", a / b, "<= 1.5x", a / b <= 1.5)
    return rows
