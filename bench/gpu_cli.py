"""The CLI on a GPU as a new user runs it (bench/gpu.sh): every command on --device cpu and cuda.

Runs `compare` on the fixtures and `rewrite` in every mode and output format, once with
--device cpu and once with --device cuda, and prints a Markdown table. A row passes when both
devices exit alike, give the same verdict and recommendation, agree on every candidate's figure
to within AGREE, and every verification check says ok. Each .onnx written from the CUDA run is
also run beside the one written from the CPU run, on onnxruntime's CPU provider.
Exits 1 when a row fails. BENCH_DEVICE=cpu runs both sides on the CPU (a dry run without a GPU).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
M, D = "fixtures/models/", "fixtures/data/"
PIX = ["--data", D + "pix_inputs.npy"]
DIGITS = ["--data", D + "digits_x.npy"]
PICKLE = ["--allow-pickle"]
# Candidate figures are relative L2 distances with tolerances of 0.05 and up; with TF32 off in
# bncheck's passes, the devices differ by float32 rounding only.
AGREE = 1e-3
CHECK = re.compile(r"^\s+(ok|FAIL|skip)\s+(.*?):\s+([-+0-9.e]+|n/a)")

COMPARES: dict[str, list[str]] = {
    "pix_bs1 (batch size 1)": [M + "pix_bs1.full.pt", *PICKLE, *PIX],
    "pix_bs16 (healthy)": [M + "pix_bs16.full.pt", *PICKLE, *PIX],
    "digits (healthy)": [M + "digits.full.pt", *PICKLE, *DIGITS],
    "digits .pt2": [M + "digits.pt2", *DIGITS],
    "digits TorchScript": [M + "digits.torchscript.pt", *DIGITS],
    "digits state_dict --arch": [M + "digits.pth", "--arch", "fixtures.archs:digits", *DIGITS],
    "digits, shifted inputs": [M + "digits.full.pt", *PICKLE, "--data", D + "digits_shifted.npy"],
    "digits, corrupt stats": [M + "digits_corrupt.full.pt", *PICKLE, *DIGITS],
    "digits, labels": [M + "digits.full.pt", *PICKLE, *DIGITS, "--labels", D + "digits_y.npy"],
}
REWRITES: dict[str, list[str]] = {}
for _mode in ("batch-stats", "instance-norm", "recalibrate", "fold", "recalibrate,fold"):
    for _ext in ("onnx", "pt2"):
        REWRITES[f"pix_bs1 {_mode} -> .{_ext}"] = [M + "pix_bs1.full.pt", *PICKLE, *PIX,
                                                   "--mode", _mode, "-o", f"pix-{_mode}.{_ext}"]
REWRITES["pix_bs1 recalibrate -> .pt"] = [M + "pix_bs1.full.pt", *PICKLE, *PIX, "--mode",
                                          "recalibrate", "-o", "pix-recalibrate.pt"]
REWRITES["pix_bs1 .safetensors recalibrate -> .safetensors"] = [
    M + "pix_bs1.safetensors", "--arch", "fixtures.archs:pix2pix", *PIX, "--mode", "recalibrate",
    "-o", "pix-recalibrate.safetensors"]
REWRITES["digits fold -> .onnx"] = [M + "digits.full.pt", *PICKLE, *DIGITS, "--mode", "fold",
                                    "-o", "digits-fold.onnx"]
REWRITES["digits .pt2 recalibrate,fold -> .pt2"] = [M + "digits.pt2", *DIGITS, "--mode",
                                                    "recalibrate,fold", "-o", "digits-rf.pt2"]


@dataclass
class Outcome:
    """One command's exit code and what it printed."""

    rc: int
    out: str
    err: str


def run(argv: list[str], device: str, outdir: Path) -> Outcome:
    """Run one bncheck command from the repo root, outputs redirected under outdir."""
    args = [str(outdir / a) if a.startswith(("pix-", "digits-")) else a for a in argv]
    p = subprocess.run([sys.executable, "-m", "bncheck", *args, "--device", device], cwd=ROOT,
                       capture_output=True, text=True, check=False,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    return Outcome(p.returncode, p.stdout, p.stderr)


def compare_row(cpu: Outcome, gpu: Outcome) -> tuple[bool, str]:
    """Same exit code, verdict, recommendation, and candidate figures within AGREE."""
    if cpu.rc != gpu.rc or cpu.rc not in (0, 1):
        return False, f"exit {cpu.rc} / {gpu.rc}: {(gpu.err or cpu.err).strip()[-300:]}"
    a, b = json.loads(cpu.out), json.loads(gpu.out)
    rec = (a["recommendation"] or {}).get("mode"), (b["recommendation"] or {}).get("mode")
    pairs = [(a["candidates"][k]["mean"], b["candidates"][k]["mean"])
             for k in a["candidates"] if k in b["candidates"]]
    if a["noise_floor"] and b["noise_floor"]:
        pairs.append((a["noise_floor"]["mean"], b["noise_floor"]["mean"]))
    # A candidate that was not run has no figure (None): it must be missing on both sides.
    diffs = [abs(x - y) if x is not None and y is not None else (0.0 if x is y else np.inf)
             for x, y in pairs]
    worst = max(diffs, default=0.0)
    ok = (a["verdict"] == b["verdict"] and rec[0] == rec[1] and worst <= AGREE
          and set(a["candidates"]) == set(b["candidates"]))
    eval_ = b["candidates"].get("eval", {}).get("mean") or float("nan")
    return ok, (f"{b['verdict']} / {rec[1]}; eval {eval_:.3f}; largest cpu-cuda difference "
                f"{worst:.1e}; ran on {(b['precision'] or {}).get('device', 'onnxruntime')}")


def checks(text: str) -> list[tuple[str, str, str]]:
    """The verification lines of a rewrite report: (status, what, figure)."""
    return [m.groups() for m in map(CHECK.match, text.splitlines()) if m]  # type: ignore[misc]


def rewrite_row(cpu: Outcome, gpu: Outcome, cpu_dir: Path, gpu_dir: Path,
                argv: list[str]) -> tuple[bool, str]:
    """Both written, every check ok; for .onnx, the two files agree on onnxruntime."""
    if cpu.rc != 0 or gpu.rc != 0:
        return False, f"exit {cpu.rc} / {gpu.rc}: {(gpu.out + gpu.err).strip()[-400:]}"
    cg = checks(gpu.out)
    bad = [c for c in cg + checks(cpu.out) if c[0] == "FAIL"]
    figures = "; ".join(f"{w[:48]}: {f}" for s, w, f in cg)
    if bad or not cg:
        return False, f"checks: {bad or 'none printed'}"
    out = argv[argv.index("-o") + 1]
    if out.endswith(".onnx"):
        figures += f"; cuda-written vs cpu-written .onnx: {onnx_gap(cpu_dir / out, gpu_dir / out):.1e}"
    return True, figures


def onnx_gap(a: Path, b: Path) -> float:
    """Largest output difference between two .onnx files on the pix or digits inputs."""
    import onnxruntime as ort

    data = np.load(ROOT / D / ("pix_inputs.npy" if a.name.startswith("pix") else "digits_x.npy"))
    outs = []
    for path in (a, b):
        s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outs.append(s.run(None, {s.get_inputs()[0].name: data[:16]})[0])
    return float(np.max(np.abs(outs[0] - outs[1])))


def main() -> None:
    """Run every command on both devices in parallel, compare, print the table."""
    device = os.environ.get("BENCH_DEVICE", "cuda")
    with tempfile.TemporaryDirectory() as tmp:
        cpu_dir, gpu_dir = Path(tmp, "cpu"), Path(tmp, "cuda")
        cpu_dir.mkdir()
        gpu_dir.mkdir()
        # Rewrites first: their verification under TF32 is what failed on a GPU at the issue.
        jobs = [("rewrite", n, a) for n, a in REWRITES.items()]
        jobs += [("compare", n, [*a, "--format", "json"]) for n, a in COMPARES.items()]
        print(f"| command | case | cpu vs {device} | detail |\n|---|---|---|---|", flush=True)
        rows = []
        with ThreadPoolExecutor(max_workers=8) as pool:
            futures = {(kind, name, dev): pool.submit(run, [kind, *argv], dev, d)
                       for kind, name, argv in jobs
                       for dev, d in (("cpu", cpu_dir), (device, gpu_dir))}
            # Each row prints as soon as its two runs are done: a lease that ends early still
            # leaves the rows it finished.
            for kind, name, argv in jobs:
                cpu, gpu = futures[(kind, name, "cpu")].result(), futures[(kind, name, device)].result()
                ok, detail = (compare_row(cpu, gpu) if kind == "compare"
                              else rewrite_row(cpu, gpu, cpu_dir, gpu_dir, argv))
                rows.append((kind, name, "ok" if ok else "FAIL", detail))
                print("| " + " | ".join(rows[-1]) + " |", flush=True)
    failed = sum(r[2] == "FAIL" for r in rows)
    print(f"\n{len(rows) - failed} of {len(rows)} rows agree between cpu and {device}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
