"""torchrun with 2 processes (gloo, CPU) gives what one process gives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA, ROOT, model_path

TIMEOUT_S = 240
MODEL = model_path("digits_m0", "full")  # never-updated stats: every candidate runs


def _env() -> dict[str, str]:
    # torchrun gives each worker one thread; the single process must match it, since float32
    # kernels sum in another order with more threads.
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _one(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bncheck", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=TIMEOUT_S, env=_env(),
                          check=False)


def _two(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                           "--master-port", str(29500 + os.getpid() % 1000), "-m", "bncheck",
                           *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=TIMEOUT_S, env=_env(), check=False)


def _close(a: object, b: object, path: str = "") -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert b == pytest.approx(a, rel=1e-9, abs=1e-12), path
    else:
        assert a == b, path


@pytest.mark.parametrize("data", [str(DATA / "digits_x.npy"), "tests.support.datasets:digits"])
def test_compare_json_equals_one_process(data: str) -> None:
    args = ("compare", MODEL, "--allow-pickle", "--data", data, "--format", "json")
    one, two = _one(*args), _two(*args)
    assert one.returncode == two.returncode == 1, two.stderr[-2000:]
    a, b = json.loads(one.stdout), json.loads(two.stdout)  # rank 1 printed nothing
    assert a["verdict"] == b["verdict"] == "mismatch"
    assert a["recommendation"]["mode"] == b["recommendation"]["mode"] == "recalibrate"
    for doc in (a, b):
        doc.pop("model", None)
    _close(a, b)


def test_a_noise_floor_that_stops_early_stops_at_the_same_batch() -> None:
    # Healthy, and 16 batches: the noise-floor pass stops at a checkpoint (8 batches), which both
    # ranks reach together.
    args = ("compare", model_path("digits", "full"), "--allow-pickle", "--data",
            DATA / "digits_x.npy", "--train-batch-size", "16", "--format", "json")
    one, two = _one(*args), _two(*args)
    assert one.returncode == two.returncode == 0, two.stderr[-2000:]
    a, b = json.loads(one.stdout), json.loads(two.stdout)
    assert a["noise_floor"]["notes"][0].startswith("the noise floor was measured on 128 of 256")
    for doc in (a, b):
        doc.pop("model", None)
    _close(a, b)


def test_taps_that_converge_end_at_the_same_batch(tmp_path: Path) -> None:
    # 2048 healthy samples: both tapped passes stop tapping at a checkpoint, which every rank
    # reaches with the same merged taps, so the figures are those of one process.
    x = np.load(DATA / "digits_x.npy")
    rng = np.random.default_rng(0)
    path = tmp_path / "digits2048.npy"
    np.save(path, np.concatenate([x + rng.normal(0, 0.02, x.shape).astype(np.float32)
                                  for _ in range(8)]))
    args = ("compare", model_path("digits", "full"), "--allow-pickle", "--data", path,
            "--format", "json")
    one, two = _one(*args), _two(*args)
    assert one.returncode == two.returncode == 0, two.stderr[-2000:]
    a, b = json.loads(one.stdout), json.loads(two.stdout)
    assert a["samples"]["tapped"]["eval"] < 2048 and a["samples"]["tapped"]["reference"] < 2048
    for doc in (a, b):
        doc.pop("model", None)
    _close(a, b)


def test_a_dataset_factory_equals_the_same_samples_in_a_file() -> None:
    by_file = json.loads(_one("compare", MODEL, "--allow-pickle", "--data", DATA / "digits_x.npy",
                              "--format", "json").stdout)
    by_factory = json.loads(_one("compare", MODEL, "--allow-pickle", "--data",
                                 "tests.support.datasets:digits", "--workers", "2",
                                 "--format", "json").stdout)
    _close(by_file["candidates"], by_factory["candidates"])
    _close(by_file["layer_metrics"], by_factory["layer_metrics"])


def test_seven_samples_over_two_ranks_count_seven() -> None:
    # At training batch size 1 every sample is used (the U-Net has no BN on (N, C)).
    args = ("compare", model_path("pix_bs1", "full"), "--allow-pickle", "--data",
            DATA / "pix_inputs.npy", "--limit", "7", "--train-batch-size", "1", "--batch-size", "2",
            "--format", "json")
    a, b = json.loads(_one(*args).stdout), json.loads(_two(*args).stdout)
    assert b["samples"]["total"] == b["samples"]["used"] == 7
    _close({k: a[k] for k in ("samples", "candidates", "layer_metrics")},
           {k: b[k] for k in ("samples", "candidates", "layer_metrics")})


def test_recalibrate_writes_the_same_file(tmp_path: Path) -> None:
    files = []
    for runner, name in ((_one, "one.pt"), (_two, "two.pt")):
        out = tmp_path / name
        r = runner("rewrite", MODEL, "--allow-pickle", "--mode", "recalibrate", "-o", out,
                   "--data", DATA / "digits_x.npy")
        assert r.returncode == 0, r.stderr[-2000:]
        files.append(torch.load(out, weights_only=False).state_dict())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.pt", "two.pt"]  # rank 0 wrote
    for key in files[0]:
        if key.endswith(("running_mean", "running_var")):
            np.testing.assert_allclose(files[1][key].double().numpy(),
                                       files[0][key].double().numpy(), rtol=1e-9, err_msg=key)


def test_bad_data_on_one_rank_ends_both_with_exit_2() -> None:
    start = time.monotonic()
    r = _two("compare", MODEL, "--allow-pickle", "--data", "tests.support.datasets:faulty_digits",
             "--format", "json")
    assert time.monotonic() - start < 60
    assert r.returncode != 0 and r.stdout == ""
    errors = [line for line in r.stderr.splitlines() if line.startswith("bncheck: error:")]
    assert len(errors) == 2 and errors[0] == errors[1], r.stderr[-2000:]
    assert "record 205 is corrupt" in errors[0]


def test_a_rank_killed_mid_run_ends_the_others_quickly() -> None:
    start = time.monotonic()
    r = _two("compare", MODEL, "--allow-pickle", "--data", "tests.support.datasets:dying_digits",
             "--format", "json")
    took = time.monotonic() - start
    assert r.returncode != 0 and r.stdout == ""
    assert took < 60, took  # the process-group timeout is 600 s


# bncheck's own launch (--nproc-per-node): the job's exit code, one sentence, no traceback.
# Under plain torchrun each of these would end in the launcher's ChildFailedError and exit 1.


def _launched(*args: str | Path) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    r = _one(*args, "--nproc-per-node", "2")
    return r, time.monotonic() - start


def _no_traceback(r: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in r.stderr and "ChildFailedError" not in r.stderr, r.stderr[-3000:]


def test_launch_returns_the_mismatch_exit_code_and_the_one_process_report() -> None:
    args = ("compare", MODEL, "--allow-pickle", "--data", DATA / "digits_x.npy", "--format",
            "json")
    r, took = _launched(*args)
    _no_traceback(r)
    assert r.returncode == 1 and took < 60, r.stderr[-2000:]
    a, b = json.loads(_one(*args).stdout), json.loads(r.stdout)  # one document: rank 0's
    assert b["verdict"] == "mismatch"
    for doc in (a, b):
        doc.pop("model", None)
    _close(a, b)


@pytest.mark.parametrize(("factory", "item"), [("faulty_digits", 205),  # on rank 0
                                               ("faulty_digits_last_rank", 213)])  # rank 1
def test_launch_bad_data_on_one_rank_is_exit_2_and_one_sentence(factory: str, item: int) -> None:
    r, took = _launched("compare", MODEL, "--allow-pickle", "--data",
                        f"tests.support.datasets:{factory}", "--format", "json")
    _no_traceback(r)
    assert r.returncode == 2 and r.stdout == "" and took < 60, r.stderr[-2000:]
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bncheck: error:"), r.stderr[-2000:]
    assert f"record {item} is corrupt" in lines[0]


def test_launch_names_a_rank_killed_mid_run() -> None:
    r, took = _launched("compare", MODEL, "--allow-pickle", "--data",
                        "tests.support.datasets:dying_digits", "--format", "json")
    _no_traceback(r)
    assert r.returncode == 2 and r.stdout == "" and took < 60, r.stderr[-2000:]
    lines = r.stderr.splitlines()
    assert all(line.startswith("bncheck: error:") for line in lines), r.stderr[-2000:]
    assert len(set(lines)) == len(lines)  # no sentence twice
    assert "process 1 of 2 was killed by SIGKILL" in lines[-1]


def test_launch_rewrite_writes_once(tmp_path: Path) -> None:
    out = tmp_path / "recal.pt"
    r, _ = _launched("rewrite", MODEL, "--allow-pickle", "--mode", "recalibrate", "-o", out,
                     "--data", DATA / "digits_x.npy")
    _no_traceback(r)
    assert r.returncode == 0 and out.exists(), r.stderr[-2000:]
    assert [p.name for p in tmp_path.iterdir()] == ["recal.pt"]


def test_launch_interrupted_stops_every_process_in_one_sentence() -> None:
    p = subprocess.Popen([sys.executable, "-m", "bncheck", "compare", MODEL, "--allow-pickle",
                          "--data", DATA / "digits_x.npy", "--nproc-per-node", "2"], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    children = Path(f"/proc/{p.pid}/task/{p.pid}/children")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not children.read_text().split():
        time.sleep(0.05)  # until the workers are started, and the agent handles signals
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130 and out == "", err[-2000:]
    assert err.splitlines() == ["bncheck: error: interrupted by SIGINT: every process stopped "
                                "and nothing was written"]



def test_launch_interrupted_while_torch_imports_is_one_sentence() -> None:
    # Before the agent takes over the signals, a Ctrl-C was a KeyboardInterrupt traceback from
    # inside torch's import (at 0.5 s: bncheck's own imports take about 0.25 s, torch's 1 s),
    # or, raised in its C++, "terminate called after throwing ... pybind11" and exit -6.
    p = subprocess.Popen([sys.executable, "-m", "bncheck", "compare", MODEL, "--allow-pickle",
                          "--data", DATA / "digits_x.npy", "--nproc-per-node", "2"], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130 and out == "", err[-2000:]
    # Interrupted still inside bncheck's own imports, it ends quietly (cli/entry.py).
    assert err.splitlines() in ([], ["bncheck: error: interrupted by SIGINT: every process "
                                     "stopped and nothing was written"]), err[-2000:]

# A worker of bncheck's launch, midway through writing a rewrite's output, as the launcher
# passes a Ctrl-C on to it: the SIGINT arrives while the worker is inside C code.
_INTERRUPTED_WORKER = """
import os, signal, sys, time
from pathlib import Path
from bncheck.cli.launching import stop_worker_on_interrupt
from bncheck.rewriting.atomic import staged_output

stop_worker_on_interrupt()
with staged_output(Path(sys.argv[1])) as staged:
    staged.path.write_bytes(b"half a model")
    signal.setitimer(signal.ITIMER_REAL, 0.2)
    signal.signal(signal.SIGALRM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    time.sleep(30)
"""


def test_an_interrupted_worker_raises_nothing_and_leaves_no_staged_file(tmp_path: Path) -> None:
    # Raised as KeyboardInterrupt inside torch's C++ collectives, the signal aborted rank 0 with
    # "terminate called after throwing an instance of 'pybind11::error_already_set'".
    out = tmp_path / "out" / "fixed.onnx"
    out.parent.mkdir()
    r = subprocess.run([sys.executable, "-c", _INTERRUPTED_WORKER, str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60, check=False,
                       env={**_env(), "BNCHECK_LAUNCH_DIR": str(tmp_path), "RANK": "0"})
    assert r.returncode == -signal.SIGINT, r.stderr[-2000:]
    assert r.stderr == ""  # no KeyboardInterrupt traceback
    assert list(out.parent.iterdir()) == []
