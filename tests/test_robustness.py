"""Hostile and broken inputs, run through the real CLI with a time and memory limit.

Every case must end with exit 0, 1 or 2 and no traceback; exit 2 with one line; no input changed
(sha256); no stray file; and no marker file from any pickle payload. The named cases are those a
mutation campaign found; ``BNCHECK_ROBUSTNESS_CASES`` sets how many seeded random mutations run
besides them (default 24, to keep ``make test`` short).
"""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.mutations import NAMED, ROOT, Case, random_cases

RANDOM = int(os.environ.get("BNCHECK_ROBUSTNESS_CASES", "24"))
TIMEOUT_S = 180
MEMORY_LIMIT = 12 << 30  # address space; the whole machine has 24 GiB


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _digest(paths: list[Path]) -> dict[str, str]:
    out = {}
    for p in paths:
        files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file()) \
            if p.is_dir() else []
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def _run(case: Case, folder: Path) -> str | None:
    """Why ``case`` failed, or None."""
    folder.mkdir()
    args = case.build(folder)
    inputs = [folder] + [Path(a) for a in args if a.startswith(str(ROOT))]
    before = _digest(inputs)
    out = Path(args[args.index("-o") + 1]) if "-o" in args else None
    try:
        p = subprocess.run([sys.executable, "-m", "bncheck", *args], capture_output=True,
                           text=True, cwd=ROOT, timeout=TIMEOUT_S, preexec_fn=_limit_memory,
                           check=False)
    except subprocess.TimeoutExpired:
        return f"{case.name}: no answer in {TIMEOUT_S} s"
    finally:
        for ro in folder.rglob("*"):
            if ro.is_dir():
                ro.chmod(0o700)
    why = []
    if p.returncode not in (0, 1, 2):
        why.append(f"exit {p.returncode}")
    if "Traceback" in p.stderr:
        why.append("traceback")
    if p.returncode == 2:
        lines = p.stderr.strip().splitlines()
        if len(lines) != 1 or not lines[0].startswith("bncheck: error:"):
            why.append(f"{len(lines)} lines on stderr")
    after = _digest(inputs)
    changed = [k for k in before if after.get(k) != before[k] and Path(k) != out]
    if changed:
        why.append(f"changed {changed}")
    new = [k for k in after if k not in before and (p.returncode != 0 or Path(k) != out)]
    if new:
        why.append(f"stray files {new}")
    if (folder / case.marker).exists():
        why.append("a pickle payload ran")
    if not why:
        return None
    last = p.stderr.strip().splitlines()[-1][:300] if p.stderr.strip() else ""
    return f"{case.name}: {', '.join(why)} | {last}"


def _run_all(cases: list[Case], tmp_path: Path) -> list[str]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = pool.map(lambda c: _run(c, tmp_path / c.name), cases)
    return [r for r in results if r]


def test_named_cases(tmp_path: Path) -> None:
    failures = _run_all(NAMED, tmp_path)
    assert not failures, "\n".join(failures)


@pytest.mark.skipif(RANDOM == 0, reason="BNCHECK_ROBUSTNESS_CASES=0")
def test_random_mutations(tmp_path: Path) -> None:
    failures = _run_all(random_cases(RANDOM), tmp_path)
    assert not failures, "\n".join(failures)
