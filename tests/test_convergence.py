"""Taps that end once their statistics have converged: the rule itself, and verdicts that do not
move on the fixtures (with their data grown to thousands of samples) or on a late-shifting case."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import DATA, MODELS

import bncheck
from bncheck.core.judgement.convergence import MIN_SAMPLES, Converged
from bncheck.core.network.layers import Family, MomentumNote, NormLayer
from bncheck.core.network.model import TapSummary
from bncheck.core.stats.taps import TapCollector

C = 4


def _layer() -> NormLayer:
    return NormLayer("bn", "BatchNorm2d", Family.BATCH, C, 1e-5, 0.1, MomentumNote.TORCH, True,
                     True, running_mean=np.zeros(C), running_var=np.ones(C))


def _rule() -> Converged:
    return Converged({"bn": _layer()}, 16, lambda *_: (None, 16))


def _feed(rule: Converged, taps: TapCollector, batches: list[np.ndarray]) -> int | None:
    """Batches of (N, C, H, W) activations through the rule at its checkpoints; where it stopped."""
    asks = set(rule.checkpoints(len(batches)))
    for k, x in enumerate(batches, 1):
        mean = x.mean(axis=(2, 3))
        m2 = ((x - mean[:, :, None, None]) ** 2).sum(axis=(2, 3))
        taps("bn", TapSummary(mean, m2, x.shape[1:]))
        if k in asks and rule(taps, k):
            return k
    return None


def test_stationary_statistics_converge_at_the_first_comparison() -> None:
    rng = np.random.default_rng(0)
    batches = [rng.normal(0.3, 1.2, (16, C, 6, 6)) for _ in range(64)]
    rule = _rule()
    stopped = _feed(rule, TapCollector(), batches)
    assert stopped == MIN_SAMPLES // 16  # the first look after the half (256 samples)
    assert rule.stopped_at == stopped


def test_statistics_that_move_keep_the_taps() -> None:
    rng = np.random.default_rng(1)
    # The second half of every look moves the channel means by 0.3 std: never settled.
    batches = [rng.normal(0.3 * (k // 16), 1.0, (16, C, 6, 6)) for k in range(64)]
    assert _feed(_rule(), TapCollector(), batches) is None


def _grown(x: np.ndarray, copies: int, seed: int) -> np.ndarray:
    """``x`` repeated with a little noise: a larger sample set from the same distribution."""
    rng = np.random.default_rng(seed)
    return np.concatenate([x + rng.normal(0, 0.02, x.shape).astype(np.float32)
                           for _ in range(copies)])


def _case(name: str) -> tuple[Any, np.ndarray, dict[str, Any]]:
    digits, pix = np.load(DATA / "digits_x.npy"), np.load(DATA / "pix_inputs.npy")
    unet, keras_x = np.load(DATA / "unet_inputs.npy"), DATA / "keras_digits_x.npy"
    cases: dict[str, tuple[Any, np.ndarray, dict[str, Any]]] = {
        "digits-healthy": (MODELS / "digits.onnx", _grown(digits, 8, 0), {}),
        "digits-m0-mismatch": (MODELS / "digits_m0.onnx", _grown(digits, 8, 1), {}),
        "digits-shifted": (MODELS / "digits.pt2", _grown(digits * 0.35 + 0.5, 8, 2), {}),
        "pix-bs1": (MODELS / "pix_bs1.onnx", _grown(pix, 16, 3), {}),
        "unet-bs32-uncertain": (MODELS / "unet_bs32.safetensors", _grown(unet, 16, 4),
                                {"arch": "fixtures.archs:unet"}),
        "digits-given-batch": (MODELS / "digits.safetensors", _grown(digits, 8, 5),
                               {"arch": "fixtures.archs:DigitsNet", "train_batch_size": 32}),
    }
    if name == "keras-digits":
        pytest.importorskip("keras")
        return MODELS / "keras_digits.keras", _grown(np.load(keras_x), 8, 6), {}
    return cases[name]


def _findings(result: Any) -> list[tuple[str, str, str]]:
    return sorted((f.layer, f.code, f.severity.value) for f in result.findings)


@pytest.mark.parametrize("name", ["digits-healthy", "digits-m0-mismatch", "digits-shifted",
                                  "pix-bs1", "unet-bs32-uncertain", "digits-given-batch",
                                  "keras-digits"])
def test_verdicts_do_not_move(name: str) -> None:
    model, x, options = _case(name)
    fast = bncheck.compare(model, x, **options)
    full = bncheck.compare(model, x, converge=False, **options)
    a, b = fast.to_json(), full.to_json()
    for key in ("verdict", "diagnosis", "first_failing_layer"):
        assert a[key] == b[key], key
    assert (a["recommendation"] or {}).get("mode") == (b["recommendation"] or {}).get("mode")
    assert _findings(fast) == _findings(full)
    assert a["train_batch_size"]["value"] == b["train_batch_size"]["value"]
    assert a["train_batch_size"]["source"] == b["train_batch_size"]["source"]
    assert b["samples"]["tapped"] == {"eval": len(x), "reference": b["samples"]["used"]}
    # The eval and noise-floor runs are the same runs: their figures are equal; layer figures
    # from the converged taps are within the rule's own tolerance of the whole data's.
    assert a["candidates"]["eval"]["mean"] == pytest.approx(b["candidates"]["eval"]["mean"],
                                                            rel=1e-6)
    for fl, ll in zip(a["layer_metrics"], b["layer_metrics"], strict=True):
        for side in ("eval", "reference"):
            for key in ("mean_shift", "log_var_ratio", "kl"):
                assert fl[side][key] == pytest.approx(ll[side][key], rel=0.1, abs=0.04), \
                    (fl["name"], side, key)


def test_healthy_data_stops_the_taps() -> None:
    model, x, options = _case("digits-healthy")
    doc = bncheck.compare(model, x, **options).to_json()
    assert doc["verdict"] == "ok"
    tapped = doc["samples"]["tapped"]
    assert tapped["eval"] < len(x) and tapped["reference"] < doc["samples"]["used"]
    assert any("layer statistics converged on" in n for n in doc["notes"])


def test_a_layer_that_shifts_late_keeps_its_taps_and_is_caught(tmp_path: Path) -> None:
    # The second half of the file is the same digits at twice the contrast: every layer's
    # statistics move after the first half of it. The taps run in shuffled order and see both
    # halves; the verdict (not ok) keeps every tap, and the shift is caught as with taps over
    # all samples.
    digits = np.load(DATA / "digits_x.npy")
    x = np.concatenate([_grown(digits, 4, 7), _grown(digits * 2.0, 4, 8)])
    path = tmp_path / "late.npy"
    np.save(path, x)
    fast = bncheck.compare(MODELS / "digits.onnx", path)
    full = bncheck.compare(MODELS / "digits.onnx", path, converge=False)
    a, b = fast.to_json(), full.to_json()
    assert a["verdict"] == b["verdict"] == "mismatch"
    assert a["diagnosis"] == b["diagnosis"] == "input-shift"
    assert _findings(fast) == _findings(full)
    assert a["samples"]["tapped"] == b["samples"]["tapped"] == {
        "eval": len(x), "reference": b["samples"]["used"]}
    for fl, ll in zip(a["layer_metrics"], b["layer_metrics"], strict=True):
        for side in ("eval", "reference"):
            assert fl[side]["kl"] == pytest.approx(ll[side]["kl"], rel=1e-9)
