"""Streaming float64 statistics against direct numpy computations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bncheck.core.network.moments import Moments
from tests.support.onnx_models import onnx_model
from tests.support.stats import accumulate


def test_population_and_per_sample_moments_match_numpy() -> None:
    rng = np.random.default_rng(0)
    x = (rng.normal(3.0, 2.0, (37, 5, 6, 7)) * rng.uniform(0.5, 2, (37, 1, 1, 1))).astype(np.float32)
    acc = accumulate(*(x[s:s + 8] for s in range(0, 37, 8)))  # uneven batches, merged
    x64 = x.astype(np.float64)
    flat = x64.transpose(1, 0, 2, 3).reshape(5, -1)
    assert acc.population.mean is not None
    np.testing.assert_allclose(acc.population.mean, flat.mean(1), rtol=1e-12)
    np.testing.assert_allclose(acc.population.var, flat.var(1), rtol=1e-7)
    np.testing.assert_allclose(acc.population.var_unbiased, flat.var(1, ddof=1), rtol=1e-7)
    per_sample_mean = x64.mean((2, 3))
    np.testing.assert_allclose(acc.between_var, per_sample_mean.var(0), rtol=1e-10)
    np.testing.assert_allclose(acc.within_var, x64.var((2, 3)).mean(0), rtol=1e-7)


def test_merge_is_exact_for_large_offsets() -> None:
    # Naive sum-of-squares loses everything here; Chan's merge must not.
    rng = np.random.default_rng(1)
    data = 1e6 + rng.normal(0, 1e-2, 10_000)
    m = Moments()
    for chunk in np.array_split(data, 13):
        m.merge(float(chunk.size), np.array([chunk.mean()]), np.array([((chunk - chunk.mean()) ** 2).sum()]))
    np.testing.assert_allclose(m.var, [data.var()], rtol=1e-9)


def test_expected_batch_var_limits() -> None:
    rng = np.random.default_rng(2)
    acc = accumulate(rng.normal(rng.normal(0, 3, (64, 2, 1)), 1.0, (64, 2, 50)).astype(np.float32))
    np.testing.assert_allclose(acc.expected_batch_var(1), acc.within_var)
    np.testing.assert_allclose(acc.expected_batch_var(10**9), acc.population.var, rtol=1e-6)


def _offset_data() -> np.ndarray:
    # Mean 100, std 1, and one channel 1e4 higher: float32 sums that are not two-pass would lose
    # the variance under the offset.
    rng = np.random.default_rng(0)
    x = rng.normal(100.0, 1.0, (48, 3, 16, 16))
    x[:, 1] += 1e4
    return x.astype(np.float32)


def _tap_backends(tmp_path: Path) -> list[object]:
    import onnx
    import torch

    from bncheck.backends.base import load_model
    from bncheck.backends.pytorch.export import to_onnx_proto

    net = torch.nn.Sequential(torch.nn.BatchNorm2d(3)).eval()
    torch.save(net, tmp_path / "bn.pt")
    onnx.save(to_onnx_proto(net, [torch.zeros(2, 3, 16, 16)], ["input"]), tmp_path / "bn.onnx")
    models = [load_model(tmp_path / "bn.pt", allow_pickle=True), load_model(tmp_path / "bn.onnx")]
    if torch.cuda.is_available():
        from bncheck.core.network.options import Device

        models.append(load_model(tmp_path / "bn.pt", allow_pickle=True, device=Device.CUDA))
    return models


def test_taps_are_exact_under_a_large_offset(tmp_path: Path) -> None:
    from bncheck.core.network.model import TapSummary
    from bncheck.core.stats.taps import TapCollector

    x = _offset_data()
    x64 = x.astype(np.float64)
    for model in _tap_backends(tmp_path):
        summaries: list[TapSummary] = []
        taps = TapCollector()

        def on_tap(name: str, s: TapSummary, taps: TapCollector = taps,
                   kept: list[TapSummary] = summaries) -> None:
            kept.append(s)
            taps(name, s)

        for i in range(0, 48, 16):
            model.run([x[i:i + 16]], ["0"], on_tap)  # type: ignore[attr-defined]
        mean = np.concatenate([s.mean for s in summaries])
        var = np.concatenate([s.m2 for s in summaries]) / 256
        np.testing.assert_allclose(mean, x64.mean((2, 3)), rtol=1e-5)
        np.testing.assert_allclose(var, x64.var((2, 3)), rtol=1e-5)
        pop = taps.acc["0"].population
        np.testing.assert_allclose(pop.mean, x64.mean((0, 2, 3)), rtol=1e-5)
        np.testing.assert_allclose(pop.var, x64.var((0, 2, 3)), rtol=1e-5)


def test_device_summaries_cross_to_the_host_in_tap_order_for_every_dtype() -> None:
    import torch

    from bncheck.backends.pytorch.model import reduce_on_device, to_host

    # One host copy per pass: layers of different widths, ranks and dtypes share one buffer.
    torch.manual_seed(0)
    xs = [torch.randn(4, 3, 5, 5).half() + 100, torch.randn(4, 2, 7).double() * 3,
          torch.randn(4, 6).bfloat16(), torch.randn(4, 1, 2, 2)]
    pending = [(f"l{i}", *reduce_on_device(x), tuple(x.shape[1:])) for i, x in enumerate(xs)]
    got = to_host(pending)
    assert [name for name, _ in got] == ["l0", "l1", "l2", "l3"]
    for (_, s), x in zip(got, xs, strict=True):
        x64 = x.double().reshape(x.shape[0], x.shape[1], -1).numpy()
        assert s.mean.dtype == np.float64 and s.shape == tuple(x.shape[1:])
        np.testing.assert_allclose(s.mean, x64.mean(2), rtol=1e-6)
        dev = x64 - x64.mean(2, keepdims=True)
        np.testing.assert_allclose(s.m2, (dev * dev).sum(2), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("shape", "dtype"), [
    ((4, 3, 512, 512), np.float32),  # rows of 512: the float32 part of the sums
    ((1, 3, 1024, 1024), np.float32),  # 1.9e-05 when the shift was one mean of the whole map
    ((2, 3, 4, 4096), np.float32),  # a wide last axis: the longest float32 row
    ((2, 3, 2, 16384), np.float32),  # longer rows: 1.2e-05 when summed in float32
    ((4, 3, 16000), np.float32),  # rank 3: summed in float64 along its one axis
    ((4, 3, 6, 8, 8), np.float32),
    ((64, 3), np.float32),  # one value per channel: the mean is exact, M2 is 0
    ((8, 3, 16, 16), np.float16),  # half precision is reduced in float32
])
def test_onnx_taps_are_exact_for_every_rank(shape: tuple[int, ...], dtype: type) -> None:
    """The in-graph reductions against float64 numpy, under the 1e4 offset, for each layout."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from bncheck.backends.onnxrt.graph import opset
    from bncheck.backends.onnxrt.taps import MAX_ROW, add_taps, summary

    elem = TensorProto.FLOAT16 if dtype is np.float16 else TensorProto.FLOAT
    # The short form too, where it applies: rank 4, rows within MAX_ROW.
    forms = [frozenset(), frozenset({"x"})] if len(shape) == 4 and shape[-1] <= MAX_ROW \
        else [frozenset()]
    # 8: the row length by integer arithmetic (no Where); axes and slice bounds as attributes,
    # then as inputs.
    for version, rows in ((v, r) for v in (8, 9, 13, 18) for r in forms):
        graph = helper.make_graph(
            [helper.make_node("Relu", ["x"], ["y"])], "g",
            [helper.make_tensor_value_info("x", elem, ["N", *shape[1:]])],
            [helper.make_tensor_value_info("y", elem, None)])
        proto = add_taps(onnx_model(graph, version), ("x",), rows=rows)
        assert opset(proto) == version
        assert any(n.op_type == "Where" for n in proto.graph.node) == (not rows and version >= 9)
        rng = np.random.default_rng(0)
        scale = 0.25 if dtype is np.float16 else 1.0  # float16 has 11 bits: a smaller offset
        x = rng.normal(100.0 * scale, scale, shape)
        x[:, 1] += 1e4 * scale
        x = x.astype(dtype)
        sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"x": x}),
                       strict=True))
        s = summary(got, "x")
        x64 = x.astype(np.float64).reshape(shape[0], shape[1], -1)
        assert s.shape == shape[1:]
        np.testing.assert_allclose(s.mean, x64.mean(2), rtol=1e-5)
        if x64.shape[2] == 1:
            assert np.all(s.m2 == 0.0)
        else:
            np.testing.assert_allclose(s.m2 / x64.shape[2], x64.var(2), rtol=1e-5)


@pytest.mark.parametrize("width", [64, 5000])
def test_onnx_conv_outputs_take_the_short_taps_while_their_rows_fit(width: int) -> None:
    """A 2-D convolution's output is tapped in the short form; rows over MAX_ROW (float32 sums
    would lose precision there) switch that tensor to the general form, with exact figures."""
    from onnx import TensorProto, helper, numpy_helper

    from bncheck.backends.onnxrt.model import OnnxModel
    from bncheck.core.stats.taps import TapCollector

    c = 2
    nodes = [helper.make_node("Conv", ["x", "w"], ["conv"]),
             helper.make_node("BatchNormalization", ["conv", "g", "b", "m", "v"], ["y"])]
    inits = [numpy_helper.from_array(np.eye(c, dtype=np.float32).reshape(c, c, 1, 1), "w"),
             *(numpy_helper.from_array(np.full(c, v, np.float32), k)
               for k, v in (("g", 1.0), ("b", 0.0), ("m", 0.0), ("v", 1.0)))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["N", c, 3, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = OnnxModel(onnx_model(graph, 13), Path("conv.onnx"))
    assert model._short == {"conv"}
    rng = np.random.default_rng(0)
    x = rng.normal(100.0, 1.0, (4, c, 3, width))
    x[:, 1] += 1e4
    x = x.astype(np.float32)
    taps = TapCollector()
    name = model.layers()[0].name
    model.run([x], [name], taps)
    assert model._short == ({"conv"} if width <= 4096 else set())
    # One session per form: the one whose rows did not fit is gone.
    assert len(model._sessions) == 1
    acc = taps.acc[name]
    x64 = x.astype(np.float64).transpose(1, 0, 2, 3).reshape(c, -1)
    np.testing.assert_allclose(acc.population.mean, x64.mean(1), rtol=1e-9)
    np.testing.assert_allclose(acc.population.var, x64.var(1), rtol=1e-5)
