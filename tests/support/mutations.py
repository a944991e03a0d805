"""A seeded generator of hostile and broken inputs for the robustness suite.

Each case is a folder with its own files and a bncheck command line. Some are the cases a
mutation campaign found (named after what they do); the rest are seeded random mutations of the
fixture models and data: byte flips, truncations, protobuf field edits, crafted archives.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.support.onnx_models import onnx_model

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "fixtures" / "models"
DATA = ROOT / "fixtures" / "data"

Build = Callable[[Path], list[str]]


@dataclass(frozen=True)
class Case:
    """A hostile input: ``build(folder)`` writes its files and returns the bncheck arguments."""

    name: str
    build: Build
    # A file a pickle payload would create if it ever ran.
    marker: str = "pwned"


def _copy(name: str, folder: Path, as_name: str | None = None) -> Path:
    dst = folder / (as_name or name)
    shutil.copyfile(MODELS / name if (MODELS / name).exists() else DATA / name, dst)
    return dst


def _onnx_edit(source: str, edit: Callable[[onnx.ModelProto], None]) -> Build:
    def build(folder: Path) -> list[str]:
        m = onnx.load(MODELS / source)
        edit(m)
        path = folder / "model.onnx"
        path.write_bytes(m.SerializeToString())
        return ["compare", str(path), "--data", str(_copy("digits_x.npy", folder))]
    return build


def _bn_param(m: onnx.ModelProto, index: int) -> TensorProto:
    bn = next(n for n in m.graph.node if n.op_type == "BatchNormalization")
    name = bn.input[index]
    return next(t for t in m.graph.initializer if t.name == name)


def _short_scale(m: onnx.ModelProto) -> None:
    t = _bn_param(m, 1)
    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t)[:4], t.name))


def _string_var(m: onnx.ModelProto) -> None:
    t = _bn_param(m, 4)
    t.CopyFrom(helper.make_tensor(t.name, TensorProto.STRING, [8], [b"x"] * 8))


def _huge_dims(m: onnx.ModelProto) -> None:
    t = _bn_param(m, 4)
    del t.dims[:]
    t.dims.append(1 << 40)


def _undefined_dtype(m: onnx.ModelProto) -> None:
    _bn_param(m, 3).data_type = TensorProto.UNDEFINED


def _no_outputs(m: onnx.ModelProto) -> None:
    del m.graph.output[:]


def _ir3(m: onnx.ModelProto) -> None:
    m.ir_version = 3


def _zero_channels(folder: Path) -> list[str]:
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"])
    inits = [numpy_helper.from_array(np.zeros(0, np.float32), n) for n in "sbmv"]
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                      ["N", 0, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    path = folder / "zero.onnx"
    onnx.save(onnx_model(g, 15), path)
    return ["inspect", str(path)]


def _zero_channels_run(command: list[str]) -> Build:
    """compare or rewrite on a graph whose one BatchNormalization has 0 channels."""
    def build(folder: Path) -> list[str]:
        args = _zero_channels(folder)
        data = folder / "x.npy"
        np.save(data, np.zeros((8, 0, 4, 4), np.float32))
        return [command[0], args[1], "--data", str(data),
                *[a.replace("OUT", str(folder / "o.onnx")) for a in command[1:]]]
    return build


def _var_as_graph_input(folder: Path) -> list[str]:
    m = onnx.load(MODELS / "digits.onnx")
    t = _bn_param(m, 4)
    m.graph.input.append(helper.make_tensor_value_info(t.name, TensorProto.FLOAT, [8]))
    m.graph.initializer.remove(t)
    path = folder / "model.onnx"
    onnx.save(m, path)
    return ["rewrite", str(path), "--mode", "fold", "-o", str(folder / "out.onnx")]


def _bn_in_subgraph(folder: Path) -> list[str]:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.uniform(0.5, 1.5, 3).astype(np.float32), n)
             for n in ("s", "b", "m", "v")]
    bn = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y1"])
    then = helper.make_graph([bn], "then", [], [helper.make_tensor_value_info("y1",
                                                                              TensorProto.FLOAT,
                                                                              None)], inits)
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["y2"])], "else", [],
                              [helper.make_tensor_value_info("y2", TensorProto.FLOAT, None)])
    cond = numpy_helper.from_array(np.array(True), "cond")
    node = helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                      ["N", 3, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [cond])
    path = folder / "if.onnx"
    onnx.save(onnx_model(g, 15), path)
    data = folder / "x.npy"
    np.save(data, rng.normal(size=(32, 3, 4, 4)).astype(np.float32))
    return ["rewrite", str(path), "--mode", "instance-norm", "-o", str(folder / "out.onnx"),
            "--data", str(data)]


def _escaping_external_data(folder: Path) -> list[str]:
    m = onnx.load(MODELS / "digits.onnx")
    t = _bn_param(m, 4)
    t.ClearField("raw_data")
    del t.float_data[:]
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "../../etc/passwd"), ("offset", "0"), ("length", "32")):
        entry = t.external_data.add()
        entry.key, entry.value = k, v
    path = folder / "model.onnx"
    path.write_bytes(m.SerializeToString())
    return ["inspect", str(path)]


def _fixed_batch(extra: list[str]) -> Build:
    def build(folder: Path) -> list[str]:
        m = onnx.load(MODELS / "digits.onnx")
        for vi in list(m.graph.input) + list(m.graph.output):
            d = vi.type.tensor_type.shape.dim[0]
            d.ClearField("dim_param")
            d.dim_value = 1
        path = folder / "fixed1.onnx"
        onnx.save(m, path)
        data = _copy("digits_x.npy", folder)
        if extra and extra[0] == "fold":
            return ["rewrite", str(path), "--mode", "fold", "-o", str(folder / "out.onnx")]
        return ["compare", str(path), "--data", str(data), *extra]
    return build


def _zip_rewrite(source: Path, dst: Path, edit: Callable[[dict[str, bytes]], None]) -> None:
    with zipfile.ZipFile(source) as z:
        members = {n: z.read(n) for n in z.namelist()}
    edit(members)
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as z:
        for n, data in members.items():
            z.writestr(n, data)


def _checkpoint(edit: Callable[[dict], None], arch: bool = False) -> Build:  # type: ignore[type-arg]
    def build(folder: Path) -> list[str]:
        import torch

        ck = torch.load(MODELS / "digits.pth", weights_only=True)
        edit(ck["state_dict"])
        path = folder / "ck.pth"
        torch.save(ck, path)
        return ["inspect", str(path)] + (["--arch", "fixtures.archs:digits"] if arch else [])
    return build


def _nbt(value: object) -> Callable[[dict], None]:  # type: ignore[type-arg]
    def edit(sd: dict) -> None:  # type: ignore[type-arg]
        import torch

        sd["module.features.1.num_batches_tracked"] = torch.tensor(value)
    return edit


def _sparse_var(sd: dict) -> None:  # type: ignore[type-arg]
    sd["module.features.1.running_var"] = sd["module.features.1.running_var"].to_sparse()


def _quantized_var(sd: dict) -> None:  # type: ignore[type-arg]
    import warnings

    import torch

    v = sd["module.features.1.running_var"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch deprecates creating quantized tensors
        sd["module.features.1.running_var"] = torch.quantize_per_tensor(v, 0.01, 0, torch.qint8)


def _short_weight(sd: dict) -> None:  # type: ignore[type-arg]
    sd["module.features.4.weight"] = sd["module.features.4.weight"][:3].clone()


def _cut_storage(folder: Path) -> list[str]:
    path = folder / "cut.pth"

    def edit(members: dict[str, bytes]) -> None:
        key = next(n for n in members if n.endswith("/data/8"))
        members[key] = members[key][:2]
    _zip_rewrite(MODELS / "digits.pth", path, edit)
    return ["inspect", str(path)]


class _Storage:
    """Pickles as a persistent storage record, as torch.save writes them."""


class _Rebuild:
    def __init__(self, numel: int) -> None:
        self.numel = numel

    def __reduce__(self):  # type: ignore[no-untyped-def]
        import torch

        return (torch._utils._rebuild_tensor_v2,
                (_Storage(), 0, (self.numel,), (1,), False, OrderedDict()))


def _huge_storage(folder: Path) -> list[str]:
    import torch

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj: object) -> object:
            if isinstance(obj, _Storage):
                return ("storage", torch.FloatStorage, "0", "cpu", 1 << 33)
            return None

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(OrderedDict(
        [("bn.running_mean", _Rebuild(1 << 33)), ("bn.running_var", _Rebuild(1 << 33))]))
    path = folder / "huge.pth"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("huge/data.pkl", buf.getvalue())
        z.writestr("huge/data/0", b"\0" * 4)
        z.writestr("huge/version", "3\n")
        z.writestr("huge/byteorder", "little")
    return ["inspect", str(path)]


def _expanded_storage(folder: Path) -> list[str]:
    """An expanded view: one stored float that claims 2^33 elements (64 GiB as float64)."""
    import torch

    path = folder / "expanded.pth"
    torch.save({"bn.running_mean": torch.zeros(1).expand(1 << 33),
                "bn.running_var": torch.ones(1).expand(1 << 33)}, path)
    return ["inspect", str(path)]


def _npy_header(header: bytes) -> Callable[[Path], Path]:
    """A version-2 .npy with this header and a little data."""
    import struct

    return _raw("x.npy", b"\x93NUMPY\x02\x00" + struct.pack("<I", len(header)) + header
                + b"\0" * 64)


def _data_case(make: Callable[[Path], Path], model: str = "digits.onnx",
               extra: tuple[str, ...] = ()) -> Build:
    def build(folder: Path) -> list[str]:
        return ["compare", str(_copy(model, folder)), "--data", str(make(folder)), *extra]
    return build


def _npy(arr: np.ndarray) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        p = folder / "x.npy"
        np.save(p, arr)
        return p
    return make


def _raw(name: str, content: bytes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        p = folder / name
        p.write_bytes(content)
        return p
    return make


def _truncated_npz(folder: Path) -> Path:
    p = folder / "x.npz"
    np.savez(p, input=np.load(DATA / "digits_x.npy"))
    p.write_bytes(p.read_bytes()[:3000])
    return p


def _torch_data(kind: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        import torch

        x = torch.from_numpy(np.load(DATA / "digits_x.npy"))
        obj: object = {"bf16": x.to(torch.bfloat16), "sparse": x.to_sparse(),
                       "scalar": torch.tensor(1.0), "pickled": {"x": x, "f": _Rebuild}}[kind]
        p = folder / "x.pt"
        torch.save(obj, p)
        return p
    return make


def _png_bomb(folder: Path) -> Path:
    import struct
    import zlib

    d = folder / "imgs"
    d.mkdir()
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    png = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + \
        struct.pack(">I", zlib.crc32(chunk)) + b"\0\0\0\0IEND\xaeB`\x82"
    for i in range(3):
        (d / f"{i}.png").write_bytes(png)
    return d


def _readonly_out(folder: Path) -> list[str]:
    out = folder / "ro"
    out.mkdir()
    out.chmod(0o500)
    return ["rewrite", str(_copy("digits.onnx", folder)), "--mode", "fold", "-o",
            str(out / "x.onnx"), "--data", str(_copy("digits_x.npy", folder))]


def _out_is_data(folder: Path) -> list[str]:
    import torch

    data = folder / "x.pt"
    torch.save(torch.from_numpy(np.load(DATA / "digits_x.npy")), data)
    return ["rewrite", str(_copy("digits.full.pt", folder)), "--allow-pickle", "--mode",
            "recalibrate", "-o", str(data), "--data", str(data), "--force"]


def _cli(args: Callable[[Path], list[str]]) -> Build:
    return args


def _pt2_member(edit: Callable[[dict[str, bytes]], None]) -> Build:
    def build(folder: Path) -> list[str]:
        path = folder / "m.pt2"
        _zip_rewrite(MODELS / "digits.pt2", path, edit)
        return ["inspect", str(path)]
    return build


def _evil_pickle(marker: Path) -> bytes:
    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, (f"touch {marker}",))
    return pickle.dumps(Evil())


def _pt2_sample_inputs(folder: Path) -> list[str]:
    path = folder / "m.pt2"

    def edit(members: dict[str, bytes]) -> None:
        key = next(n for n in members if n.endswith("sample_inputs/model.pt"))
        members[key] = _evil_pickle(folder / "pwned")
    _zip_rewrite(MODELS / "digits.pt2", path, edit)
    return ["compare", str(path), "--data", str(_copy("digits_x.npy", folder))]


def _pt2_use_pickle(folder: Path) -> list[str]:
    path = folder / "m.pt2"

    def edit(members: dict[str, bytes]) -> None:
        key = next(n for n in members if n.endswith("model_weights_config.json"))
        cfg = json.loads(members[key])
        first = next(iter(cfg["config"].values()))
        first["use_pickle"] = True
        members[key] = json.dumps(cfg).encode()
        root = key.split("/")[0]
        members[f"{root}/data/weights/{first['path_name']}"] = _evil_pickle(folder / "pwned")
    _zip_rewrite(MODELS / "digits.pt2", path, edit)
    return ["inspect", str(path)]


def _keras_truncated(folder: Path) -> list[str]:
    data = (MODELS / "keras_unet_bs1.keras").read_bytes()
    path = folder / "cut.keras"
    path.write_bytes(data[: len(data) // 2])
    return ["inspect", str(path)]


def _h5_missing_weights(folder: Path) -> list[str]:
    import h5py

    path = _copy("keras_unet_bs1.h5", folder)
    with h5py.File(path, "a") as f:
        del f["model_weights"]["enc2_bn"]
    return ["compare", str(path), "--data", str(_copy("keras_unet_inputs.npy", folder))]


def keras_lambda(folder: Path) -> list[str]:
    """A .keras whose Lambda layer's code would write the marker when deserialized."""
    import base64
    import marshal
    import zipfile

    import keras

    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.BatchNormalization()(keras.layers.Lambda(
        lambda t: t * 2)(inp)))
    path = folder / "lambda.keras"
    model.save(path)
    with zipfile.ZipFile(path) as z:
        files = {n: z.read(n) for n in z.namelist()}
    config = json.loads(files["config.json"])
    lam = next(c for c in config["config"]["layers"] if c["class_name"] == "Lambda")
    # A one-argument function, as a Lambda's is: with --allow-pickle it would run, and load.
    code = eval(f"lambda t: (open({str(folder / 'pwned')!r}, 'w').write('ran'), t)[1]").__code__
    lam["config"]["function"]["config"]["code"] = base64.b64encode(marshal.dumps(code)).decode()
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as z:
        for n, data in files.items():
            z.writestr(n, data)
    return ["inspect", str(path)]


def tf_no_signature(folder: Path) -> list[str]:
    import tensorflow as tf

    saved = folder / "nosig"
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="x")
        tf.identity(x * 2.0, name="y")
        builder = tf.compat.v1.saved_model.Builder(str(saved))
        builder.add_meta_graph_and_variables(sess, [tf.compat.v1.saved_model.SERVING])
        builder.save()
    return ["inspect", str(saved)]


def _tf_pb_not_a_graph(folder: Path) -> list[str]:
    path = folder / "random.pb"
    path.write_bytes(np.random.default_rng(5).bytes(4096))
    return ["inspect", str(path)]


def _tf_checkpoint_without_meta(folder: Path) -> list[str]:
    for f in (MODELS / "tf_pix2pix_ckpt").iterdir():
        if f.suffix != ".meta":
            shutil.copyfile(f, folder / f.name)
    return ["compare", str(folder / "model.ckpt"), "--data",
            str(_copy("keras_unet_inputs.npy", folder))]


NAMED: list[Case] = [
    Case("onnx-bn-scale-too-short", _onnx_edit("digits.onnx", _short_scale)),
    Case("onnx-bn-string-var", _onnx_edit("digits.onnx", _string_var)),
    Case("onnx-bn-dims-2^40", _onnx_edit("digits.onnx", _huge_dims)),
    Case("onnx-bn-undefined-dtype", _onnx_edit("digits.onnx", _undefined_dtype)),
    Case("onnx-no-outputs", _onnx_edit("digits.onnx", _no_outputs)),
    Case("onnx-ir3-initializers-not-inputs", _onnx_edit("digits.onnx", _ir3)),
    Case("onnx-zero-channel-bn", _zero_channels),
    Case("onnx-zero-channel-bn-compare", _zero_channels_run(["compare"])),
    Case("onnx-zero-channel-bn-fold", _zero_channels_run(["rewrite", "--mode", "fold", "-o",
                                                          "OUT"])),
    Case("onnx-fold-var-is-graph-input", _var_as_graph_input),
    Case("onnx-bn-in-if-subgraph", _bn_in_subgraph),
    Case("onnx-external-data-escapes", _escaping_external_data),
    Case("onnx-fixed-batch-compare", _fixed_batch([])),
    Case("onnx-fixed-batch-batch-size-1", _fixed_batch(["--batch-size", "1"])),
    Case("onnx-fixed-batch-fold-no-data", _fixed_batch(["fold"])),
    Case("ckpt-nbt-nan", _checkpoint(_nbt(float("nan")))),
    Case("ckpt-nbt-inf", _checkpoint(_nbt(float("inf")))),
    Case("ckpt-nbt-complex", _checkpoint(_nbt(1 + 2j))),
    Case("ckpt-sparse-var", _checkpoint(_sparse_var)),
    Case("ckpt-quantized-var", _checkpoint(_quantized_var)),
    Case("ckpt-weight-3-var-16", _checkpoint(_short_weight)),
    Case("ckpt-weight-3-var-16-arch", _checkpoint(_short_weight, arch=True)),
    Case("ckpt-storage-cut-to-2-bytes", _cut_storage),
    Case("ckpt-storage-2^33-elements", _huge_storage),
    Case("ckpt-expanded-view-2^33-elements", _expanded_storage),
    Case("pt2-pickled-sample-inputs", _pt2_sample_inputs),
    Case("pt2-use-pickle-weight", _pt2_use_pickle),
    Case("pt2-damaged-model-json", _pt2_member(
        lambda m: m.update({k: v[:50] for k, v in m.items() if k.endswith("models/model.json")}))),
    Case("data-structured-npy", _data_case(_npy(np.zeros(4, dtype=[("a", "f4"), ("b", "i4")])))),
    Case("data-string-npy", _data_case(_npy(np.array(["a", "b"])))),
    Case("data-0d-npy", _data_case(_npy(np.array(3.0)))),
    Case("data-garbage-npy-header", _data_case(_raw("x.npy", b"\x93NUMPY\x01\x00garbage"))),
    Case("data-npy-header-shape-overflows", _data_case(_npy_header(
        b"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,), }\n"))),
    Case("data-npy-header-200000-parens", _data_case(_npy_header(b"(" * 200000 + b"\n"))),
    Case("data-truncated-npz", _data_case(_truncated_npz)),
    Case("data-bf16-tensor", _data_case(_torch_data("bf16"))),
    Case("data-sparse-tensor", _data_case(_torch_data("sparse"))),
    Case("data-0d-tensor", _data_case(_torch_data("scalar"))),
    Case("data-pickled-object", _data_case(_torch_data("pickled"))),
    Case("data-png-bomb", _data_case(_png_bomb, model="digits.pt2")),
    Case("out-read-only-folder", _readonly_out),
    Case("out-is-the-data-file", _out_is_data),
    Case("cli-image-size-huge", _cli(lambda f: [
        "compare", str(_copy("digits.pt2", f)), "--data", str(DATA / "digits_png"),
        "--image-size", "99999,99999"])),
    Case("cli-input-shape-huge", _cli(lambda f: [
        "rewrite", str(_copy("digits.full.pt", f)), "--allow-pickle", "--mode", "fold", "-o",
        str(f / "o.onnx"), "--input-shape", "1,60000,60000"])),
    Case("cli-path-5000-chars", _cli(lambda f: ["inspect", str(f / ("x" * 5000 + ".onnx"))])),
    Case("cli-arch-os-system", _cli(lambda f: [
        "inspect", str(_copy("digits.pth", f)), "--arch", "os:system"])),
    Case("cli-arch-raises-on-import", _cli(lambda f: [
        "inspect", str(_copy("digits.pth", f)), "--arch",
        "tests.support.raises_on_import:make"])),
    Case("cli-arch-math-pi", _cli(lambda f: [
        "inspect", str(_copy("digits.pth", f)), "--arch", "math:pi"])),
    Case("cli-mean-3-values-1-channel", _cli(lambda f: [
        "compare", str(_copy("digits.pt2", f)), "--data", str(DATA / "digits_png"),
        "--mean", "0.5,0.5,0.5"])),
    Case("cli-image-size-empty", _cli(lambda f: [
        "compare", str(_copy("digits.pt2", f)), "--data", str(DATA / "digits_png"),
        "--image-size", ""])),
    Case("cli-std-nan", _cli(lambda f: [
        "compare", str(_copy("digits.pt2", f)), "--data", str(DATA / "digits_png"),
        "--std", "nan"])),
    Case("keras-truncated-zip", _keras_truncated),
    Case("keras-h5-missing-weights", _h5_missing_weights),
    Case("keras-lambda-writes-marker", keras_lambda),
    Case("tf-savedmodel-no-signature", tf_no_signature),
    Case("tf-pb-not-a-graph", _tf_pb_not_a_graph),
    Case("tf-checkpoint-without-meta", _tf_checkpoint_without_meta),
]

_SOURCES = ["digits.onnx", "pix_bs1.onnx", "digits.pth", "digits.full.pt", "digits.pt2",
            "digits.safetensors", "digits.torchscript.pt"]


def _mutated(source: str, seed: int, kind: str) -> Build:
    def build(folder: Path) -> list[str]:
        rng = np.random.default_rng(seed)
        data = bytearray((MODELS / source).read_bytes())
        if kind == "flip":
            for i in rng.integers(0, len(data), size=int(rng.integers(1, 16))):
                data[i] ^= int(rng.integers(1, 256))
        else:
            data = data[: int(len(data) * rng.uniform(0.05, 0.98))]
        path = folder / source
        path.write_bytes(bytes(data))
        pickled = ["--allow-pickle"] if source.endswith(".full.pt") else []
        if rng.random() < 0.5:
            return ["inspect", str(path), *pickled]
        arch = ["--arch", "fixtures.archs:digits"] if source.endswith((".pth", ".safetensors")) \
            else []
        x = "pix_inputs.npy" if source.startswith("pix") else "digits_x.npy"
        return ["compare", str(path), "--data", str(DATA / x), "--limit", "64",
                "--train-batch-size", "8", *arch, *pickled]
    return build


def random_cases(n: int, seed: int = 0) -> list[Case]:
    """``n`` seeded byte-flip and truncation mutations of the fixture models."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        source = _SOURCES[int(rng.integers(len(_SOURCES)))]
        kind = "flip" if rng.random() < 0.5 else "truncate"
        out.append(Case(f"random-{i:03d}-{kind}-{source}", _mutated(source, seed * 1000 + i, kind)))
    return out
