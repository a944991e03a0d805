"""BatchNorm in every form the exporters write it (fixtures/make_export_forms.py).

Every form bncheck can follow gives the layers, verdict and fix of the framework's own file;
every form whose statistics are gone ends in one sentence that names the exporter's way of
keeping BatchNorm, and is never "ok".
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import DATA, FIX, MODELS, cli, model_path

KERAS_LAYERS = ["enc2_bn", "enc3_bn", "dec3_bn", "dec2_bn"]
TORCH_LAYERS = ["enc1.1", "enc2.1", "enc3.1", "dec3.1", "dec2.1"]
KERAS_X, KERAS_Y = DATA / "keras_unet_inputs.npy", DATA / "keras_unet_targets.npy"
PIX_X = DATA / "pix_inputs.npy"

# Form -> (file, data, layers). The framework's own file first in each family.
FOLLOWED = {
    "keras": (MODELS / "keras_unet_bs1.keras", KERAS_X, KERAS_LAYERS),
    "keras-export": (MODELS / "keras_unet_bs1_export", KERAS_X, KERAS_LAYERS),
    "tf-saved-model-save": (MODELS / "keras_unet_bs1_tfsave", KERAS_X, KERAS_LAYERS),
    "torch": (model_path("pix_bs1", "torchscript"), PIX_X, TORCH_LAYERS),
    "torchscript-preserve": (model_path("pix_bs1", "onnx"), PIX_X, TORCH_LAYERS),
    "dynamo-optimize-false": (MODELS / "pix_bs1_dynamo.onnx", PIX_X, TORCH_LAYERS),
    "by-hand": (MODELS / "pix_bs1_hand.onnx", PIX_X, TORCH_LAYERS),
}
# Form -> (file, data, what the sentence must say).
LOST = {
    "tf2onnx": (MODELS / "keras_unet_bs1_tf2onnx.onnx", KERAS_X,
                "give bncheck the SavedModel or .keras file"),
    "dynamo-default": (MODELS / "pix_bs1_dynamo_opt.onnx", PIX_X, "optimize=False"),
    "torchscript-default": (MODELS / "pix_bs1_ts_folded.onnx", PIX_X,
                            "do_constant_folding=False"),
}

def _compare(path: Path, data: Path) -> dict[str, object]:
    r = cli("compare", path, "--data", data, "--format", "json")
    assert r.code == 1, r.err
    return r.json()  # type: ignore[no-any-return]


@pytest.mark.parametrize("form", sorted(FOLLOWED))
def test_every_followed_form_reads_the_same_layers(form: str) -> None:
    path, _, layers = FOLLOWED[form]
    r = cli("inspect", path, "--format", "json")
    assert r.code == 0, r.err
    doc = r.json()
    assert [layer["name"] for layer in doc["layers"]] == layers
    assert not [f for f in doc["findings"] if f["severity"] == "error"]


@pytest.mark.parametrize("form", ["keras-export", "tf-saved-model-save", "dynamo-optimize-false",
                                  "by-hand"])
def test_every_followed_form_gets_the_verdict_of_its_own_file(form: str) -> None:
    path, data, _ = FOLLOWED[form]
    own = _compare(*FOLLOWED["keras" if data == KERAS_X else "torch"][:2])
    doc = _compare(path, data)
    for key in ("verdict", "diagnosis"):
        assert doc[key] == own[key]
    assert doc["recommendation"]["mode"] == own["recommendation"]["mode"] == "instance-norm"  # type: ignore[index]
    assert doc["train_batch_size"]["value"] == own["train_batch_size"]["value"] == 1  # type: ignore[index]
    assert doc["candidates"]["eval"]["mean"] == pytest.approx(  # type: ignore[index]
        own["candidates"]["eval"]["mean"], rel=1e-3)  # type: ignore[index]


def test_keras_3_savedmodel_fix_restores_the_trained_quality(tmp_path: Path) -> None:
    doc = _compare(MODELS / "keras_unet_bs1_export", KERAS_X)
    args = shlex.split(doc["recommendation"]["command"])[1:]  # type: ignore[index]
    out = tmp_path / "fixed.onnx"
    args[args.index("-o") + 1] = str(out)
    r = cli(*args)
    assert r.code == 0, r.out + r.err
    import onnxruntime as ort

    truth = json.loads((FIX / "keras_truth.json").read_text())["keras_unet_bs1"]
    s = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x, y = np.load(KERAS_X), np.load(KERAS_Y)
    name = s.get_inputs()[0].name
    fixed = np.concatenate([s.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])
    assert float(np.abs(fixed - y).mean()) == pytest.approx(truth["train_mode_l1"], rel=1e-3)
    assert truth["eval_l1"] > 5 * truth["train_mode_l1"]  # the fix is worth having


@pytest.mark.parametrize("form", sorted(LOST))
@pytest.mark.parametrize("command", ["compare", "rewrite"])
def test_a_form_whose_statistics_are_gone_is_one_sentence_never_ok(
        form: str, command: str, tmp_path: Path) -> None:
    path, data, advice = LOST[form]
    args = ["--mode", "instance-norm", "-o", tmp_path / "out.onnx"] if command == "rewrite" \
        else []
    r = cli(command, path, "--data", data, *args)
    assert r.code == 2, r.out + r.err
    assert advice in r.err and "Traceback" not in r.err
    assert len(r.err.strip().splitlines()) == 1
    assert not (tmp_path / "out.onnx").exists()
    r = cli("inspect", path, "--format", "json")
    assert r.code == 1
    hidden = [f for f in r.json()["findings"] if f["code"] == "hidden-norm"]
    assert len(hidden) == 1 and hidden[0]["severity"] == "error" and advice in hidden[0]["message"]


class _Variant(torch.nn.Module):
    """A conv and a BatchNorm written out in one of the algebraic forms people write."""

    def __init__(self, form: str) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 6, 3)
        self.register_buffer("running_mean", torch.randn(6, generator=g))
        self.register_buffer("running_var", torch.rand(6, generator=g) + 0.5)
        self.weight = torch.nn.Parameter(torch.rand(6, generator=g) + 0.5)
        self.form = form

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        m, v = self.running_mean.view(1, -1, 1, 1), self.running_var.view(1, -1, 1, 1)
        w = self.weight.view(1, -1, 1, 1)
        if self.form == "rsqrt":
            return (y - m) * torch.rsqrt(v + 1e-3) * w
        if self.form == "pow":
            return (y - m) * w * (v + 1e-3) ** -0.5
        return (y - m) * w / torch.sqrt(v + 1e-3)


@pytest.mark.parametrize("form", ["rsqrt", "pow", "gamma-first"])
def test_onnx_batchnorm_written_in_other_algebraic_forms_is_one_layer(
        form: str, tmp_path: Path) -> None:
    net = _Variant(form).eval()
    path = tmp_path / f"{form}.onnx"
    x = torch.randn(4, 3, 8, 8)
    torch.onnx.export(net, (x,), path, dynamo=False, do_constant_folding=False,
                      input_names=["x"], dynamic_axes={"x": {0: "n"}})
    r = cli("inspect", path, "--format", "json")
    assert r.code == 0, r.err
    (layer,) = r.json()["layers"]
    assert layer["kind"] == "BatchNormalization" and layer["channels"] == 6
    assert layer["eps"] == pytest.approx(1e-3)
    # Read as one node, the graph still computes what it did.
    from bncheck.backends.onnxrt.model import OnnxModel

    model = OnnxModel.load(path)
    assert [n.op_type for n in model.proto.graph.node] == ["Conv", "BatchNormalization"]
    out = model.run([x.numpy()])
    np.testing.assert_allclose(out.reshape(4, -1), net(x).detach().numpy().reshape(4, -1),
                               rtol=1e-4, atol=1e-5)


def test_input_normalization_is_not_taken_for_batchnorm(tmp_path: Path) -> None:
    # (x - mean) / std with std a stored constant: preprocessing inside the graph, not a layer.
    class Normalized(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv((x - self.mean) / self.std)

    path = tmp_path / "normalized.onnx"
    torch.onnx.export(Normalized().eval(), (torch.zeros(1, 3, 8, 8),), path, dynamo=False,
                      do_constant_folding=False)
    r = cli("inspect", path, "--format", "json")
    assert r.code == 0 and r.json()["layers"] == []


def test_unread_running_statistics_are_never_ok(tmp_path: Path) -> None:
    # Statistics stored in the graph but reached by ops bncheck does not know (here a Neg of
    # the mean, an Add instead of the Sub) leave a layer it cannot see.
    class Odd(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.bn = torch.nn.Module()
            self.bn.register_buffer("running_mean", torch.ones(4))
            self.bn.register_buffer("running_var", torch.ones(4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            mean, var = self.bn.running_mean, self.bn.running_var
            y = self.conv(x) + (-mean).view(1, -1, 1, 1)  # type: ignore[operator]
            return y * torch.exp(-0.5 * torch.log(var)).view(1, -1, 1, 1)  # type: ignore[arg-type]

    path = tmp_path / "odd.onnx"
    torch.onnx.export(Odd().eval(), (torch.zeros(1, 3, 8, 8),), path, dynamo=False,
                      do_constant_folding=False)
    r = cli("compare", path, "--data", PIX_X)
    assert r.code == 2 and "running statistics no normalization node reads" in r.err
    assert "bn.running_mean" in r.err


def test_tensorflow_batchnorm_over_other_than_images_is_said(tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    pytest.importorskip("tf2onnx")
    rng = np.random.default_rng(0)
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 8, 8, 3], name="image")
        images = tf.nn.batch_normalization(
            x, tf.constant(rng.normal(size=3).astype(np.float32), name="bn/moving_mean"),
            tf.constant(rng.uniform(0.5, 2, 3).astype(np.float32), name="bn/moving_variance"),
            None, None, 1e-3, name="bn/batchnorm")
        flat = tf.reshape(images, [-1, 192])
        mean = tf.constant(rng.normal(size=192).astype(np.float32), name="head_bn/moving_mean")
        var = tf.constant(rng.uniform(0.5, 2, 192).astype(np.float32),
                          name="head_bn/moving_variance")
        tf.identity(tf.nn.batch_normalization(flat, mean, var, None, None, 1e-3), name="out")
    path = tmp_path / "graph.pb"
    path.write_bytes(graph.as_graph_def().SerializeToString())
    r = cli("inspect", path, "--format", "json")
    doc = r.json()
    # The image BatchNorm becomes a layer, named by its statistics; the (N, C) one is said.
    assert [layer["name"] for layer in doc["layers"]] == ["bn"]
    (hidden,) = [f for f in doc["findings"] if f["code"] == "hidden-norm"]
    assert "head_bn" in hidden["message"] and ".keras file" in hidden["message"]
    assert r.code == 1


def test_a_plain_onnx_graph_is_left_as_written() -> None:
    proto = onnx.load(str(model_path("pix_bs1", "onnx")))
    from bncheck.backends.onnxrt.decomposed import fuse_decomposed

    same, rebuilt = fuse_decomposed(proto)
    assert same is proto and rebuilt == []
