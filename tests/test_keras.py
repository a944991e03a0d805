"""Keras 3 models (on Keras' torch backend): the bundled fixtures, each BatchNormalization option
against a hand-computed value, the torch twin, safe mode, and what is written."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import DATA, FIX, MODELS, cli

keras = pytest.importorskip("keras")  # the keras extra; make test installs it

import bncheck  # noqa: E402
from bncheck.backends.keras.build import keras_net  # noqa: E402
from bncheck.backends.keras.runtime import to_numpy  # noqa: E402
from bncheck.core.judgement.verdict import FixMode, VerdictKind  # noqa: E402
from fixtures.keras_archs import torch_twin  # noqa: E402
from tests.support.mutations import keras_lambda  # noqa: E402

UNET = MODELS / "keras_unet_bs1.keras"
X = DATA / "keras_unet_inputs.npy"


@pytest.fixture(scope="module")
def truth() -> dict[str, Any]:
    """What make_keras_fixtures.py measured, independently of bncheck."""
    return json.loads((FIX / "keras_truth.json").read_text())


def _numpy(t: Any) -> np.ndarray:
    return to_numpy(t)


def test_unet_trained_at_batch_one_is_flagged_and_fixed(tmp_path: Path,
                                                        truth: dict[str, Any]) -> None:
    result = bncheck.compare(UNET, X)
    v = result.verdict
    assert v.verdict is VerdictKind.MISMATCH and v.mode is FixMode.INSTANCE_NORM
    assert result.measurements.train_batch.value == 1
    assert result.measurements.train_batch.source.is_known
    # The fix, written as .keras and run by Keras itself one sample at a time, restores the
    # trained behaviour: its error against the targets is the train-mode one, not eval's.
    out = tmp_path / "fixed.keras"
    r = cli("rewrite", UNET, "--mode", "instance-norm", "-o", out, "--data", X,
            "--train-batch-size", "1")
    assert r.code == 0, r.err
    fixed = keras.saving.load_model(out)
    assert not any(type(layer).__name__ == "BatchNormalization" for layer in fixed.layers)
    x, y = np.load(X), np.load(DATA / "keras_unet_targets.npy")
    err = float(np.mean([np.abs(_numpy(fixed(x[i:i + 1])) - y[i:i + 1]).mean()
                         for i in range(len(x))]))
    t = truth["keras_unet_bs1"]
    assert err == pytest.approx(t["train_mode_l1"], rel=1e-3)
    assert err < t["eval_l1"] / 5


def test_h5_model_gives_the_same_verdict() -> None:
    keras_file = bncheck.compare(UNET, X).to_json()
    h5 = bncheck.compare(MODELS / "keras_unet_bs1.h5", X).to_json()
    for key in ("verdict", "recommendation", "train_batch_size"):
        assert h5[key] == keras_file[key]


def test_weights_file_needs_and_takes_arch() -> None:
    weights = MODELS / "keras_unet_bs1.weights.h5"
    r = cli("inspect", weights)
    assert r.code == 2 and "--arch" in r.err and "Traceback" not in r.err
    r = cli("compare", weights, "--arch", "fixtures.keras_archs:unet", "--data", X)
    assert r.code == 1 and "instance-norm" in r.out


def test_healthy_digits_classifier_passes() -> None:
    result = bncheck.compare(MODELS / "keras_digits.keras", DATA / "keras_digits_x.npy")
    assert result.verdict.verdict is VerdictKind.OK


def test_image_folder_is_fed_channels_last() -> None:
    # The PNG digits are 8x8 grayscale; the Keras model takes (N, 8, 8, 1).
    r = cli("compare", MODELS / "keras_digits.keras", "--data", DATA / "digits_png",
            "--format", "json")
    assert r.code in (0, 1), r.err
    assert r.json()["samples"]["total"] == 32


def test_other_layout_is_named(tmp_path: Path) -> None:
    nchw = tmp_path / "nchw.npy"
    np.save(nchw, np.load(X).transpose(0, 3, 1, 2))
    r = cli("compare", UNET, "--data", nchw)
    assert r.code == 2 and "channels-last" in r.err and "(N, H, W, C)" in r.err


def test_same_statistics_and_verdict_as_the_torch_twin() -> None:
    model = keras.saving.load_model(UNET)
    twin = torch_twin(model)
    x = np.load(X)
    k = bncheck.compare(model, x, train_batch_size=1).to_json()
    t = bncheck.compare(twin, np.ascontiguousarray(x.transpose(0, 3, 1, 2)),
                        train_batch_size=1).to_json()
    assert k["verdict"] == t["verdict"]
    assert k["recommendation"]["mode"] == t["recommendation"]["mode"]
    for a, b in zip(k["layer_metrics"], t["layer_metrics"], strict=True):
        for side in ("eval", "reference"):
            for key in ("mean_shift", "log_var_ratio", "kl"):
                assert a[side][key] == pytest.approx(b[side][key], rel=1e-5, abs=1e-7)
    for name in ("eval", "instance-norm"):
        assert k["candidates"][name]["mean"] == pytest.approx(t["candidates"][name]["mean"],
                                                              rel=1e-4, abs=1e-6)


def _one_bn(**options: Any) -> Any:
    inp = keras.Input((5, 3, 4))
    return keras.Model(inp, keras.layers.BatchNormalization(**options)(inp))


def _set(model: Any, rng: np.random.Generator) -> dict[str, np.ndarray]:
    bn = model.layers[-1]
    values = {}
    for w in bn.weights:
        name = w.path.split("/")[-1]
        value = rng.uniform(0.5, 2.0, w.shape).astype(np.float32)
        w.assign(value)
        values[name] = value
    return values


def test_keras_options_by_hand() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, (6, 5, 3, 4)).astype(np.float32)
    model = _one_bn(axis=1, epsilon=0.25, momentum=0.9, center=False)
    values = _set(model, rng)
    (layer,) = bncheck.inspect(model).layers
    # axis=1 of (N, 5, 3, 4): 5 channels; momentum 0.9 weights the old average, torch's 0.1.
    assert layer.channels == 5 and layer.eps == 0.25
    assert layer.momentum == pytest.approx(0.1) and layer.to_json()["momentum_note"] == "keras 0.9"
    assert layer.bias is None and layer.weight is not None and not layer.unbiased_var
    net = keras_net(model)
    shape = (1, 5, 1, 1)
    by_hand = ((x - values["moving_mean"].reshape(shape))
               / np.sqrt(values["moving_variance"].reshape(shape) + 0.25)
               * values["gamma"].reshape(shape))
    with torch.no_grad():
        got = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, by_hand, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got, _numpy(model(x)), rtol=1e-5, atol=1e-6)


def test_batch_statistics_are_keras_training_mode() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(1.0, 2.0, (6, 5, 3, 4)).astype(np.float32)
    model = _one_bn(scale=False)
    _set(model, rng)
    net = keras_net(model).train()
    with torch.no_grad():
        got = net(torch.from_numpy(x)).numpy()
    mean, var = x.mean((0, 1, 2)), x.var((0, 1, 2))
    by_hand = (x - mean) / np.sqrt(var + 1e-3) + model.layers[-1].beta.numpy()
    np.testing.assert_allclose(got, by_hand, rtol=1e-4, atol=1e-5)


def test_renorm_is_what_keras_computes() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(3.0, 4.0, (6, 5, 3, 4)).astype(np.float32)
    clip = {"rmax": 1.5, "rmin": 1 / 1.5, "dmax": 0.5}
    model = _one_bn(renorm=True, renorm_clipping=clip)
    values = _set(model, rng)
    (layer,) = bncheck.inspect(model).layers
    assert dict(layer.options)["rmax"] == 1.5 and dict(layer.options)["dmax"] == 0.5
    with torch.no_grad():
        got = keras_net(model).train()(torch.from_numpy(x)).numpy()
    mean, std = x.mean((0, 1, 2)), np.sqrt(x.var((0, 1, 2)) + 1e-3)
    renorm_std = np.maximum(values["renorm_stddev"], np.sqrt(1e-3))
    r = np.clip(std / renorm_std, 1 / 1.5, 1.5)
    d = np.clip((mean - values["renorm_mean"]) / renorm_std, -0.5, 0.5)
    by_hand = ((x - mean) / std * r + d) * values["gamma"] + values["beta"]
    np.testing.assert_allclose(got, by_hand, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got, _numpy(model(x, training=True)), rtol=1e-4, atol=1e-4)


def test_frozen_layer_keeps_moving_statistics_in_training() -> None:
    model = _one_bn()
    model.layers[-1].trainable = False
    (layer,) = bncheck.inspect(model).layers
    assert not layer.needs_stats  # trained on its moving statistics: nothing to compare
    x = np.random.default_rng(3).normal(size=(4, 5, 3, 4)).astype(np.float32)
    with torch.no_grad():
        got = keras_net(model).train()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, _numpy(model(x, training=True)), rtol=1e-5, atol=1e-6)


def test_live_model_is_not_changed(tmp_path: Path) -> None:
    model = keras.saving.load_model(UNET)
    before = [w.numpy().copy() for w in model.weights]
    grads = [w.value.requires_grad for w in model.weights]
    rewritten = bncheck.rewrite(model, "recalibrate,fold", data=X, train_batch_size=1)
    rewritten.save(tmp_path / "fixed.keras")
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, model.weights, strict=True))
    # Exporting freezes the Keras weights for the tracer, and gives their flags back.
    rewritten.save(tmp_path / "fixed.onnx")
    assert [w.value.requires_grad for w in model.weights] == grads


@pytest.mark.parametrize("mode", ["fold", "recalibrate", "batch-stats"])
def test_each_mode_writes_a_verified_keras_file(mode: str, tmp_path: Path) -> None:
    out = tmp_path / f"{mode}.keras"
    r = cli("rewrite", UNET, "--mode", mode, "-o", out, "--data", X, "--train-batch-size", "1")
    assert r.code == 0, r.err
    assert "ok   .keras file" in r.out and "FAIL" not in r.out


def test_lambda_layer_is_refused_without_allow_pickle(tmp_path: Path) -> None:
    # A .keras whose Lambda function leaves a marker file when it runs (the robustness suite's
    # named case): it must never run without the switch.
    path = Path(keras_lambda(tmp_path)[1])
    marker = tmp_path / "pwned"
    before = path.read_bytes()
    r = cli("inspect", path)
    assert r.code == 2 and "--allow-pickle" in r.err and "Traceback" not in r.err
    assert not marker.exists() and path.read_bytes() == before
    # The payload is live: with the switch, Keras runs it while it rebuilds the model.
    assert cli("inspect", path, "--allow-pickle").code == 0 and marker.exists()


def test_custom_layer_is_named(tmp_path: Path) -> None:
    @keras.saving.register_keras_serializable(package="bncheck_test")
    class Doubler(keras.layers.Layer):  # type: ignore[misc]
        def call(self, t: Any) -> Any:
            return t * 2

    inp = keras.Input((4,))
    path = tmp_path / "custom.keras"
    keras.Model(inp, keras.layers.BatchNormalization()(Doubler()(inp))).save(path)
    keras.saving.get_custom_objects().pop("bncheck_test>Doubler")
    r = cli("inspect", path)
    assert r.code == 2 and "Doubler" in r.err and "--arch" in r.err


@pytest.mark.parametrize("damage", ["truncated", "not-keras-zip"])
def test_damaged_keras_files(damage: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.keras"
    data = UNET.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("readme.txt", "not a model")
    r = cli("inspect", path)
    assert r.code == 2 and "Traceback" not in r.err and r.err.count("\n") == 1


def test_h5_with_missing_weights(tmp_path: Path) -> None:
    import h5py

    path = tmp_path / "missing.h5"
    path.write_bytes((MODELS / "keras_unet_bs1.h5").read_bytes())
    with h5py.File(path, "a") as f:
        del f["model_weights"]["enc2_bn"]
    before = path.read_bytes()
    r = cli("inspect", path)
    assert r.code == 2 and "Traceback" not in r.err, r.err
    assert path.read_bytes() == before


def test_missing_extra_is_one_sentence(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = ("import sys; sys.modules['keras'] = None\n"
            "from bncheck.cli.app import main\n"
            f"sys.argv = ['bncheck', 'inspect', {str(UNET)!r}]\nmain()")
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "bncheck[keras]" in r.stderr and "Traceback" not in r.stderr


def test_synchronized_is_reported_and_computes_as_plain_batch_norm(tmp_path: Path) -> None:
    # Keras builds synchronized=True only on its TensorFlow backend: write the file by hand.
    plain = tmp_path / "plain.keras"
    _one_bn().save(plain)
    with zipfile.ZipFile(plain) as z:
        files = {n: z.read(n) for n in z.namelist()}
    config = json.loads(files["config.json"])
    bn = next(c for c in config["config"]["layers"] if c["class_name"] == "BatchNormalization")
    bn["config"]["synchronized"] = True
    files["config.json"] = json.dumps(config).encode()
    path = tmp_path / "sync.keras"
    with zipfile.ZipFile(path, "w") as z:
        for n, data in files.items():
            z.writestr(n, data)
    (layer,) = bncheck.inspect(path).layers
    assert dict(layer.options)["synchronized"] is True
    # One process: the cross-replica statistics are this batch's own. The written file keeps
    # the flag, and is read back the same way.
    out = tmp_path / "recalibrated.keras"
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(4).normal(size=(64, 5, 3, 4)).astype(np.float32))
    r = cli("rewrite", path, "--mode", "recalibrate", "-o", out, "--data", x,
            "--train-batch-size", "8")
    assert r.code == 0, r.out + r.err
    with zipfile.ZipFile(out) as z:
        assert '"synchronized": true' in z.read("config.json").decode()


def test_nested_models_are_entered(tmp_path: Path) -> None:
    block = keras.Sequential([keras.Input((8, 8, 4)), keras.layers.Conv2D(4, 3, padding="same"),
                              keras.layers.BatchNormalization(name="bn"), keras.layers.ReLU()],
                             name="block")
    inp = keras.Input((8, 8, 3))
    x = keras.layers.BatchNormalization(name="bn0")(keras.layers.Conv2D(4, 3, padding="same")(inp))
    model = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(block(x)))
    assert [layer.name for layer in bncheck.inspect(model).layers] == ["bn0", "block/bn"]
    data = np.random.default_rng(0).normal(size=(64, 8, 8, 3)).astype(np.float32)
    with torch.no_grad():
        got = keras_net(model)(torch.from_numpy(data)).numpy()
    np.testing.assert_allclose(got, _numpy(model(data)), rtol=1e-6, atol=1e-7)
    rewritten = bncheck.rewrite(model, "fold", data=data, train_batch_size=8)
    first, inner = rewritten.notes["fold"]
    assert first.startswith("bn0: folded into ") and inner.startswith("block/bn: folded into block/")
    rewritten.save(tmp_path / "folded.keras")  # verified against the model, as the CLI does
    assert not any(type(layer).__name__ == "BatchNormalization"
                   for layer in keras.saving.load_model(tmp_path / "folded.keras")._flatten_layers())


def test_subclassed_model_is_refused_in_one_sentence() -> None:
    class Net(keras.Model):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.conv = keras.layers.Conv2D(4, 3)
            self.bn = keras.layers.BatchNormalization()

        def call(self, x: Any) -> Any:
            return self.bn(self.conv(x))

    net = Net()
    net(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(bncheck.BncheckError, match="subclassed Keras model"):
        bncheck.inspect(net)


def test_same_padding_on_an_odd_sized_map_exports(tmp_path: Path) -> None:
    """Keras' MaxPooling2D with padding="same" on an odd-sized map sizes its padding from the
    input's shape, which a trace records as arithmetic and the exporter refused as not constant
    (keras.applications.Xception has one, the zoo found it). bncheck exports a fixed spatial
    size, so the padding is a constant: the ONNX file runs and matches Keras' eval mode."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    for size in (15, 16):
        i = keras.Input((size, size, 3))
        x = keras.layers.BatchNormalization()(keras.layers.Conv2D(4, 3, strides=2,
                                                                  padding="same")(i))
        model = keras.Model(i, keras.layers.MaxPooling2D(3, 2, padding="same")(x))
        model.save(tmp_path / f"m{size}.keras")
        r = cli("rewrite", tmp_path / f"m{size}.keras", "--mode", "fold", "-o",
                tmp_path / f"m{size}.onnx")
        assert r.code == 0, r.err
        data = rng.normal(size=(5, size, size, 3)).astype(np.float32)
        sess = ort.InferenceSession(str(tmp_path / f"m{size}.onnx"),
                                    providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: data})[0]
        want = np.asarray(model(data, training=False).detach().numpy())
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
