"""One contract over every format: the same model gives the same layers and statistics."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from conftest import FORMATS, MODELS, cli, model_path
from onnx import helper, numpy_helper

from bncheck.backends.base import load_model
from tests.support.onnx_models import onnx_model

NAMES = ["pix_bs1", "digits", "digits_nobn"]


def _layers(name: str, fmt: str):  # type: ignore[no-untyped-def]
    return load_model(model_path(name, fmt), allow_pickle=fmt == "full").layers()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_format_gives_the_same_layers_and_stats(name: str, fmt: str) -> None:
    want = {layer.name: layer for layer in _layers(name, "full")}
    got = {layer.name: layer for layer in _layers(name, fmt)}
    with_stats = {k for k, v in want.items() if v.running_mean is not None}
    if fmt in ("checkpoint", "safetensors"):
        # A bare state_dict shows only layers that carry running statistics.
        assert set(got) == with_stats
    else:
        # Names match everywhere, also where ONNX writes GroupNorm as InstanceNormalization.
        assert set(got) == set(want)
    for k in with_stats:
        np.testing.assert_allclose(got[k].running_mean, want[k].running_mean, rtol=1e-6)
        np.testing.assert_allclose(got[k].running_var, want[k].running_var, rtol=1e-6)
        if got[k].eps is not None:
            assert got[k].eps == pytest.approx(want[k].eps, rel=1e-6)
        if got[k].momentum is not None:
            assert got[k].momentum == pytest.approx(want[k].momentum, rel=1e-6)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_inspect_works_on_every_fixture_format(fmt: str) -> None:
    for path in sorted(MODELS.glob(f"*{FORMATS[fmt]}")):
        if fmt == "full" or not path.name.endswith(".full.pt"):
            r = cli("inspect", path, "--format", "json", *(["--allow-pickle"] if fmt == "full" else []))
            assert r.code in (0, 1), (path, r.err)
            assert r.json()["model"] == str(path)


def test_arch_builds_a_state_dict(tmp_path) -> None:  # type: ignore[no-untyped-def]
    r = cli("inspect", model_path("digits", "checkpoint"), "--arch", "fixtures.archs:digits",
            "--format", "json")
    assert r.code == 0, r.err
    kinds = {layer["name"]: layer["kind"] for layer in r.json()["layers"]}
    assert kinds == {"features.1": "BatchNorm2d", "features.4": "BatchNorm2d", "head.2": "BatchNorm1d"}


def test_real_stats_with_zero_counter_are_not_flagged_as_untouched(tmp_path) -> None:  # type: ignore[no-untyped-def]
    sd = torch.load(model_path("digits", "checkpoint"), weights_only=True)["state_dict"]
    for k in sd:
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(0)
    path = tmp_path / "zero_counter.pt"
    torch.save({"model_state_dict": sd}, path)
    r = cli("inspect", path, "--format", "json")
    assert r.code == 0
    doc = r.json()
    assert all(layer["num_batches_tracked"] == 0 for layer in doc["layers"])
    assert not [f for f in doc["findings"] if f["code"] == "stats-at-init"]


def _bn_graph(params_as: str) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    c = 3
    vals = {"scale": rng.uniform(0.5, 2, c), "bias": rng.normal(0, 1, c),
            "mean": rng.normal(0, 1, c), "var": rng.uniform(0.5, 2, c)}
    nodes, inits = [], []
    names = []
    for k, v in vals.items():
        arr = v.astype(np.float32)
        if params_as == "constant":
            nodes.append(helper.make_node("Constant", [], [f"bn.{k}"], value=numpy_helper.from_array(arr)))
            names.append(f"bn.{k}")
        else:  # shared initializer behind an Identity, as torch's exporter deduplicates them
            inits.append(numpy_helper.from_array(arr, f"shared_{k}"))
            nodes.append(helper.make_node("Identity", [f"shared_{k}"], [f"bn.{k}"]))
            names.append(f"bn.{k}")
    nodes.append(helper.make_node("BatchNormalization", ["x", *names], ["y"], epsilon=1e-5,
                                  momentum=0.9, name="bn"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, ["N", c, 4, 4])],
                              [helper.make_tensor_value_info("y", 1, ["N", c, 4, 4])], inits)
    return onnx_model(graph, 17), vals  # type: ignore[return-value]


@pytest.mark.parametrize("params_as", ["constant", "identity"])
def test_onnx_bn_parameters_from_constant_and_identity_nodes(tmp_path, params_as: str) -> None:  # type: ignore[no-untyped-def]
    model, vals = _bn_graph(params_as)
    path = tmp_path / f"{params_as}.onnx"
    onnx.save(model, path)
    r = cli("inspect", path, "--format", "json")
    assert r.code == 0, r.err
    (layer,) = r.json()["layers"]
    assert layer["channels"] == 3
    assert layer["momentum"] == pytest.approx(0.1)  # ONNX 0.9 is torch 0.1
    assert layer["running_var"] == pytest.approx([vals["var"].min(), vals["var"].max()], rel=1e-6)
