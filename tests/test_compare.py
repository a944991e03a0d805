"""compare: right verdict, right fix, right first layer, on every fixture and both backends."""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import DATA, cli, model_path

from bncheck.backends.base import load_model
from bncheck.core.inputs.data import ImageOptions, open_samples
from bncheck.core.stats.taps import TapCollector

PIX, DIGITS, SHIFTED = DATA / "pix_inputs.npy", DATA / "digits_x.npy", DATA / "digits_shifted.npy"


def _compare(model: Path, data: Path, *extra: str) -> dict:  # type: ignore[type-arg]
    r = cli("compare", model, "--data", data, "--format", "json", "--allow-pickle", *extra)
    doc = r.json()
    assert r.code == (0 if doc["verdict"] == "ok" else 1), r.err
    return doc


@pytest.mark.parametrize("fmt", ["full", "onnx"])
@pytest.mark.parametrize("train_bs", [None, "1"])
def test_bs1_image_model_is_flagged(fmt: str, train_bs: str | None) -> None:
    extra = ["--train-batch-size", train_bs] if train_bs else []
    doc = _compare(model_path("pix_bs1", fmt), PIX, *extra)
    assert doc["verdict"] == "mismatch"
    assert doc["recommendation"]["mode"] == "instance-norm"
    assert doc["train_batch_size"]["value"] == 1
    assert doc["train_batch_size"]["source"] == ("option" if train_bs else "estimated")
    assert doc["first_failing_layer"] == "enc1.1"
    assert doc["candidates"]["eval"]["mean"] > 10 * doc["tolerance"]
    assert "bncheck rewrite" in doc["recommendation"]["command"]
    assert {"name", "eval", "reference"} <= set(doc["layer_metrics"][0])


@pytest.mark.parametrize("fmt", ["full", "onnx", "pt2"])
def test_large_batch_model_is_ok(fmt: str) -> None:
    doc = _compare(model_path("pix_bs16", fmt), PIX)
    assert doc["verdict"] == "ok" and doc["recommendation"]["mode"] == "none"
    assert doc["train_batch_size"]["value"] > 1


@pytest.mark.parametrize("fmt", ["full", "onnx", "torchscript"])
def test_healthy_classifier_is_ok(fmt: str) -> None:
    doc = _compare(model_path("digits", fmt), DIGITS)
    assert doc["verdict"] == "ok"
    assert doc["candidates"]["eval"]["argmax_agreement"] > 0.95


@pytest.mark.parametrize("fmt", ["full", "onnx"])
def test_shifted_inputs_are_an_input_shift_not_a_fix(fmt: str) -> None:
    doc = _compare(model_path("digits", fmt), SHIFTED)
    assert doc["verdict"] == "mismatch" and doc["diagnosis"] == "input-shift"
    # No rewrite is recommended for a domain change; recalibrate only on a stated condition.
    assert doc["recommendation"]["mode"] == "none"
    assert doc["recommendation"]["conditional"]["mode"] == "recalibrate"
    assert "deploy" in doc["recommendation"]["conditional"]["advice"]
    assert doc["first_failing_layer"] == "features.1"
    assert [f["code"] for f in doc["findings"]].count("input-shift") == 1
    expect = doc["input_shift"]["expectation"]
    # digits_shifted is x * 0.35 + 0.5: the probe recovers what the model was trained on.
    assert expect["expected_mean"] is not None
    x = np.load(DIGITS)
    assert expect["expected_mean"][0] == pytest.approx(float(x.mean()), abs=0.05)
    assert expect["expected_std"][0] == pytest.approx(float(x.std()), rel=0.2)


def test_inverted_contrast_with_labels_never_gets_a_damaging_fix(tmp_path: Path) -> None:
    inverted = tmp_path / "inverted.npy"
    np.save(inverted, (1.0 - np.load(DIGITS)).astype(np.float32))
    doc = _compare(model_path("digits", "onnx"), inverted, "--labels", DATA / "digits_y.npy")
    assert doc["diagnosis"] == "input-shift" and doc["recommendation"]["mode"] == "none"
    metric = doc["task_metric"]["values"]
    assert set(metric) >= {"eval"}
    conditional = doc["recommendation"]["conditional"]["mode"]
    if conditional != "none":
        assert metric[conditional] >= metric["eval"]


@pytest.mark.parametrize("fmt", ["full", "onnx"])
def test_frozen_stats_need_recalibration(fmt: str) -> None:
    doc = _compare(model_path("digits_m0", fmt), DIGITS)
    assert doc["verdict"] == "mismatch" and doc["recommendation"]["mode"] == "recalibrate"
    assert doc["first_failing_layer"] == "features.1"


def test_corrupt_layer_is_named() -> None:
    doc = _compare(model_path("digits_corrupt", "onnx"), DIGITS)
    assert doc["verdict"] == "mismatch" and doc["recommendation"]["mode"] == "recalibrate"
    assert doc["first_failing_layer"] == "features.1"


def test_stale_middle_layer_is_named(tmp_path: Path) -> None:
    # Running stats of the second BN are perturbed; the first is healthy.
    model = torch.load(model_path("digits", "full"), weights_only=False)
    with torch.no_grad():
        model.features[4].running_mean += 2.0 * model.features[4].running_var.sqrt()
    path = tmp_path / "stale.pt"
    torch.save(model, path)
    doc = _compare(path, DIGITS)
    assert doc["verdict"] == "mismatch" and doc["first_failing_layer"] == "features.4"


@pytest.mark.parametrize("fmt", ["full", "onnx"])
def test_model_without_batch_dependence_is_ok(fmt: str) -> None:
    doc = _compare(model_path("digits_nobn", fmt), DIGITS)
    assert doc["verdict"] == "ok" and "no layer" in doc["recommendation"]["reason"]


def _ort_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + 16]})[0] for i in range(0, len(x), 16)])


@pytest.mark.parametrize(("name", "data", "key", "extra"), [
    ("pix_bs1", PIX, "recommendation", ()),
    ("digits", SHIFTED, "conditional", ("--labels", str(DATA / "digits_y.npy"))),
    ("digits_m0", DIGITS, "recommendation", ()),
])
def test_printed_fix_command_restores_the_trained_quality(
        tmp_path: Path, truth: dict, name: str, data: Path, key: str,  # type: ignore[type-arg]
        extra: tuple[str, ...]) -> None:
    # Judged by the task, against what make_fixtures.py measured on the network in train mode:
    # not by running compare again, which finds nothing to compare in an instance-norm model.
    src = tmp_path / f"{name}.full.pt"
    src.write_bytes(model_path(name, "full").read_bytes())
    doc = _compare(src, data, *extra)
    rec = doc["recommendation"]
    command = rec["command"] if key == "recommendation" else rec["conditional"]["command"]
    args = shlex.split(command)
    assert args[:2] == ["bncheck", "rewrite"], command
    r = cli(*args[1:])
    assert r.code == 0, r.out + r.err
    out = Path(args[args.index("-o") + 1])
    y = _ort_outputs(out, np.load(data))
    if name == "pix_bs1":
        l1 = float(np.abs(y - np.load(DATA / "pix_targets.npy")).mean())
        assert l1 < 1.2 * truth["pix_bs1"]["train_mode_l1"] < truth["pix_bs1"]["eval_l1"] / 10
    else:
        acc = float((y.argmax(1) == np.load(DATA / "digits_y.npy")).mean())
        want = truth["digits"]["shifted_train_mode_acc"] if name == "digits" else \
            truth[name]["train_mode_acc"]
        assert acc >= want - 0.03, acc


def test_compare_says_when_nothing_is_left_to_compare(tmp_path: Path) -> None:
    out = tmp_path / "in.onnx"
    assert cli("rewrite", model_path("pix_bs1", "onnx"), "--mode", "instance-norm", "-o", out,
               "--data", PIX).code == 0
    r = cli("compare", out, "--data", PIX)
    assert r.code == 0 and "nothing to compare" in r.out


def test_taps_equal_numpy_on_a_one_layer_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(3).eval()
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
    model = torch.nn.Sequential(bn)
    x = np.random.default_rng(0).normal(1, 2, (40, 3, 5, 5)).astype(np.float32)
    path = tmp_path / "one.pt"
    torch.save(model, path)
    torch_model = load_model(path, allow_pickle=True)
    onnx_path = tmp_path / "one.onnx"
    from bncheck.backends.pytorch.export import to_onnx_proto

    onnx.save(to_onnx_proto(model, [torch.from_numpy(x[:2])], ["input"]), onnx_path)
    onnx_model = load_model(onnx_path)
    got = {}
    for m in (torch_model, onnx_model):
        taps = TapCollector()
        for s in range(0, 40, 16):
            m.run([x[s:s + 16]], ["0"], taps)
        got[m.backend] = taps.acc["0"]
    x64 = x.astype(np.float64)
    for acc in got.values():
        np.testing.assert_allclose(acc.population.mean, x64.mean((0, 2, 3)), rtol=1e-6)
        np.testing.assert_allclose(acc.population.var, x64.var((0, 2, 3)), rtol=1e-6)
        np.testing.assert_allclose(acc.within_var, x64.var((2, 3)).mean(0), rtol=1e-6)
        np.testing.assert_allclose(acc.between_var, x64.mean((2, 3)).var(0), rtol=1e-6)


def test_backends_agree_per_layer() -> None:
    a = _compare(model_path("pix_bs1", "full"), PIX)
    b = _compare(model_path("pix_bs1", "onnx"), PIX)
    for la, lb in zip(a["layer_metrics"], b["layer_metrics"], strict=True):
        assert la["name"] == lb["name"]
        for prop in ("eval", "reference"):
            assert la[prop]["kl"] == pytest.approx(lb[prop]["kl"], rel=1e-4, abs=1e-6)
            assert la[prop]["mean_shift"] == pytest.approx(lb[prop]["mean_shift"], rel=1e-4, abs=1e-6)


def test_memory_does_not_grow_with_the_sample_count(tmp_path: Path) -> None:
    import tracemalloc

    from bncheck.core.compare import compare

    x = np.load(PIX)
    np.save(tmp_path / "x8.npy", np.concatenate([x] * 8))  # 512 samples, 2 MiB of outputs per run
    model = load_model(model_path("pix_bs1", "onnx"))
    peaks = []
    for limit in (256, 512):  # both past the 256-row chunks outputs are compared in
        src = open_samples(tmp_path / "x8.npy", input_names=["input"], input_shapes=[],
                           image=ImageOptions(), limit=limit)
        tracemalloc.start()
        compare(model, src, batch_size=16, train_batch_size=None)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    # Holding outputs or activations in memory would double the peak.
    assert peaks[1] < 1.2 * peaks[0], peaks


def test_text_report_and_plot(tmp_path: Path) -> None:
    png = tmp_path / "r.png"
    r = cli("compare", model_path("pix_bs1", "onnx"), "--data", PIX, "--plot", png)
    assert r.code == 1
    assert "verdict: MISMATCH" in r.out and "instance-norm" in r.out
    assert all(len(line) <= 100 for line in r.out.splitlines() if not line.startswith("fix:"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_image_folder_feeds_a_pt2_model() -> None:
    # 32 images are too few for a verdict (inconclusive); this checks they all arrive.
    r = cli("compare", model_path("digits", "pt2"), "--data", DATA / "digits_png", "--format", "json")
    assert r.code in (0, 1) and r.json()["verdict"] in ("ok", "inconclusive"), r.err
    assert r.json()["samples"]["total"] == 32


@pytest.mark.parametrize("limit", ["2", "6"])
def test_too_few_samples_is_inconclusive(limit: str) -> None:
    doc = _compare(model_path("digits", "onnx"), SHIFTED, "--limit", limit)
    assert doc["verdict"] == "inconclusive" and doc["recommendation"]["mode"] == "none"
    assert "samples" in doc["recommendation"]["reason"]
    assert doc["findings"][0]["code"] == "inconclusive"
    r = cli("compare", model_path("digits", "onnx"), "--data", SHIFTED, "--limit", limit,
            "--fail-on", "mismatch")
    assert r.code == 0 and "verdict: INCONCLUSIVE" in r.out


def test_a_reference_dominated_by_batch_noise_is_inconclusive() -> None:
    # At batch size 2 the U-Net trained at 16 varies wildly with its batch-mate.
    doc = _compare(model_path("pix_bs16", "onnx"), PIX, "--train-batch-size", "2")
    assert doc["verdict"] == "inconclusive"
    assert doc["tolerance"] > 0.6 and "batch noise" in doc["recommendation"]["reason"]


def test_class_sorted_folder_gives_the_same_verdict_as_shuffled(tmp_path: Path) -> None:
    x, y = np.load(DIGITS), np.load(DATA / "digits_y.npy")
    order = np.argsort(y, kind="stable")
    np.save(tmp_path / "sorted.npy", x[order])
    np.save(tmp_path / "shuffled.npy", x[np.random.default_rng(5).permutation(len(x))])
    a = _compare(model_path("digits", "onnx"), tmp_path / "sorted.npy")
    b = _compare(model_path("digits", "onnx"), tmp_path / "shuffled.npy")
    assert a["verdict"] == b["verdict"] == "ok"
    assert a["samples"]["shuffle_seed"] == 0
    assert a["noise_floor"]["mean"] == pytest.approx(b["noise_floor"]["mean"], rel=0.25)


def test_printed_command_keeps_the_image_options(tmp_path: Path) -> None:
    # An image folder read with --mean/--std: the recalibrate command must read it the same way,
    # or it re-estimates the statistics on differently normalized inputs.
    from PIL import Image

    folder = tmp_path / "digits"
    folder.mkdir()
    x, y = np.load(DIGITS), np.load(DATA / "digits_y.npy")
    for i, img in enumerate(x):
        Image.fromarray((img[0] * 255).round().astype(np.uint8)).save(folder / f"{i:03d}.png")
    model = tmp_path / "digits_m0.onnx"
    model.write_bytes(model_path("digits_m0", "onnx").read_bytes())
    doc = _compare(model, folder, "--mean", "0.8", "--std", "0.2")
    command = doc["recommendation"]["command"]
    assert doc["recommendation"]["mode"] == "recalibrate", doc["recommendation"]
    assert "--mean 0.8 --std 0.2" in command
    args = shlex.split(command)
    r = cli(*args[1:])
    assert r.code == 0, r.out + r.err
    fed = ((np.round(x * 255) / 255 - 0.8) / 0.2).astype(np.float32)
    acc = float((_ort_outputs(Path(args[args.index("-o") + 1]), fed).argmax(1) == y).mean())
    assert acc > 0.9, acc


# Trained here at these batch sizes (fixtures/make_fixtures.py, batch_size_sweep). With the old
# fit, unet_bs32 read 1/B = 0.69 and was told to switch to instance norm, unet_bs16 was
# "estimated" at 2 and unet_bs1 was assumed to be 32 (inconclusive).
SWEEP = [("unet_bs1", 1), ("unet_bs4", 4),
         # A known miss of the running-average model: trained 600 steps at a constant learning
         # rate, its running variances lag the final weights' by 24% (channel spread twice the
         # replicates'), beyond the 20% drift modelled, and on this sample seed B reads 2 to 12.
         # compare still answers ok, as before; strict, so a fix shows up here.
         pytest.param("unet_bs16", 16, marks=pytest.mark.xfail(
             strict=True, reason="running stats lag the weights beyond the modelled drift")),
         ("unet_bs32", 32), ("digits_bs64", 64)]


@pytest.mark.parametrize(("name", "trained_at"), SWEEP)
def test_training_batch_size_within_a_factor_2_or_uncertain(name: str, trained_at: int) -> None:
    unet = name.startswith("unet")
    doc = _compare(model_path(name, "safetensors"), DATA / ("unet_inputs.npy" if unet else
                                                            "digits_x.npy"),
                   "--arch", "fixtures.archs:unet" if unet else "fixtures.archs:digits")
    est = doc["train_batch_size"]
    if est["source"] == "estimated":
        assert trained_at / 2 <= est["value"] <= 2 * trained_at, est
    else:
        assert est["source"] in ("uncertain", "assumed"), est
    if "plausible" in est:
        low, high = est["plausible"]["low"], est["plausible"]["high"]
        assert low <= trained_at and (high is None or trained_at <= high), est
    told_instance_norm = (doc["verdict"] == "mismatch"
                          and doc["recommendation"]["mode"] == "instance-norm")
    assert told_instance_norm == (trained_at == 1), doc["recommendation"]["reason"]
    if trained_at == 1:
        assert est["source"] == "estimated" and est["value"] == 1
    else:
        assert doc["verdict"] != "mismatch", doc["recommendation"]["reason"]



def _healthy_float16(tmp_path: Path, eps: float) -> Path:
    """The digits classifier in float16 with one channel that is constant over every batch (a
    dead conv channel: its running stats read mean 0, var 0, as training leaves them) and BN
    epsilon ``eps``. Its running stats describe its data."""
    from onnx import numpy_helper

    from tests.support.onnx_models import to_float16

    m = onnx.load(model_path("digits", "onnx"))
    inits = {i.name: i for i in m.graph.initializer}
    conv = next(n for n in m.graph.node if n.op_type == "Conv")
    bn = next(n for n in m.graph.node if n.op_type == "BatchNormalization")
    # Channel 0: conv weight and bias 0, so its input is 0; its running mean and var are 0.
    for name in (conv.input[1], conv.input[2], bn.input[3], bn.input[4]):
        a = numpy_helper.to_array(inits[name]).copy()
        a[0] = 0.0
        inits[name].CopyFrom(numpy_helper.from_array(a, name))
    for node in m.graph.node:
        for a in node.attribute:
            if node.op_type == "BatchNormalization" and a.name == "epsilon":
                a.f = eps
    path = tmp_path / f"digits16-eps{eps:g}.onnx"
    onnx.save(to_float16(m), path)
    return path


@pytest.mark.parametrize("eps", [1e-5, 1e-8])
def test_a_healthy_float16_model_is_ok(tmp_path: Path, eps: float) -> None:
    # At eps 1e-8 (below float16's smallest step, 6e-8) the float16 reference divided the dead
    # channel's 0 by 0: the noise floor read inf and the verdict inconclusive. Batch statistics
    # of a half-precision layer are now computed in float32, as torch does.
    doc = _compare(_healthy_float16(tmp_path, eps), DIGITS)
    assert doc["verdict"] == "ok", doc["recommendation"]["reason"]
    assert doc["candidates"]["eval"]["argmax_agreement"] > 0.95
    # One float16 rounding step of the inputs moves the reference by about 1e-3.
    assert 0 < doc["half_precision"]["rounding"] < 0.01
