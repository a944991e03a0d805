"""TensorFlow graphs through tf2onnx: the released-pix2pix pattern (is_training=True at test
time) in its three file forms, kept BatchNorm nodes, the fix, and files that are not graphs."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, FIX, MODELS, cli

from tests.support.mutations import tf_no_signature

tf = pytest.importorskip("tensorflow")  # the tensorflow extra; make test installs it
pytest.importorskip("tf2onnx")

PB = MODELS / "tf_pix2pix.pb"
FORMS = {"graph": PB, "savedmodel": MODELS / "tf_pix2pix_savedmodel",
         "checkpoint": MODELS / "tf_pix2pix_ckpt" / "model.ckpt"}
X = DATA / "keras_unet_inputs.npy"
LAYERS = ["enc2/batchnorm", "enc3/batchnorm", "dec3/batchnorm", "dec2/batchnorm"]


def _fused_count() -> int:
    graph = tf.compat.v1.GraphDef()
    graph.ParseFromString(PB.read_bytes())
    return sum(1 for n in graph.node if n.op.startswith("FusedBatchNorm"))


@pytest.mark.parametrize("form", sorted(FORMS))
def test_every_form_keeps_each_batch_norm_and_flags_training_mode(form: str) -> None:
    r = cli("inspect", FORMS[form], "--format", "json")
    assert r.code == 0, r.err
    doc = r.json()
    assert [layer["name"] for layer in doc["layers"]] == LAYERS
    assert len(doc["layers"]) == _fused_count() == 4
    training = [f for f in doc["findings"] if f["code"] == "training-mode"]
    assert [f["layer"] for f in training] == LAYERS
    assert "instance normalization" in training[0]["message"]


def test_seed_question_answered_and_fixed(tmp_path: Path) -> None:
    r = cli("compare", PB, "--data", X, "--format", "json")
    assert r.code == 1, r.err
    doc = r.json()
    assert doc["verdict"] == "mismatch" and doc["recommendation"]["mode"] == "instance-norm"
    assert doc["train_batch_size"]["value"] == 1
    assert doc["train_batch_size"]["source"] == "estimated"
    assert doc["candidates"]["eval"]["mean"] > 1.0  # is_training=False breaks it, in figures
    assert doc["candidates"]["instance-norm"]["mean"] < 1e-4
    # The printed fix, run verbatim (but writing into tmp_path), writes a verified model that
    # restores what the graph computes one image at a time.
    args = shlex.split(doc["recommendation"]["command"])[1:]
    out = tmp_path / "fixed.onnx"
    args[args.index("-o") + 1] = str(out)
    r = cli(*args)
    assert r.code == 0, r.out + r.err
    import onnxruntime as ort

    truth = json.loads((FIX / "keras_truth.json").read_text())["keras_unet_bs1"]
    s = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x, y = np.load(X), np.load(DATA / "keras_unet_targets.npy")
    name = s.get_inputs()[0].name
    fixed = np.concatenate([s.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])
    assert float(np.abs(fixed - y).mean()) == pytest.approx(truth["train_mode_l1"], rel=1e-3)


def test_eval_mode_with_recalibrated_statistics_is_offered(tmp_path: Path) -> None:
    r = cli("rewrite", PB, "--mode", "recalibrate", "-o", tmp_path / "eval.onnx", "--data", X,
            "--train-batch-size", "1")
    assert r.code == 0, r.out + r.err
    assert "running stats re-estimated" in r.out


def test_tf1_batch_norm_with_empty_statistics_finds_its_moving_averages(tmp_path: Path) -> None:
    # tf.contrib.layers.batch_norm(is_training=True) passes empty mean/variance to the fused op
    # and keeps the moving averages beside it, updated by separate assign ops.
    rng = np.random.default_rng(0)
    with tf.Graph().as_default() as g:
        x = tf.compat.v1.placeholder(tf.float32, [None, 6, 6, 3], name="x")
        with tf.compat.v1.variable_scope("BatchNorm"):
            mean = tf.constant(rng.normal(size=3).astype(np.float32), name="moving_mean")
            var = tf.constant(rng.uniform(1, 2, 3).astype(np.float32), name="moving_variance")
            empty = tf.constant([], tf.float32)
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x, tf.ones(3), tf.zeros(3), mean=empty, variance=empty, is_training=True)
        tf.identity(y, name="y")
        graph_def = g.as_graph_def()
    # The moving averages are not read by any op the output needs: keep them anyway.
    del mean, var
    path = tmp_path / "contrib.pb"
    path.write_bytes(graph_def.SerializeToString())
    r = cli("inspect", path, "--format", "json")
    assert r.code == 0, r.err
    (layer,) = r.json()["layers"]
    assert layer["name"] == "BatchNorm" and layer["running_var"][0] >= 1.0


def test_savedmodel_without_signature(tmp_path: Path) -> None:
    args = tf_no_signature(tmp_path)
    r = cli(*args)
    assert r.code == 2 and "signature" in r.err and "Traceback" not in r.err


def test_pb_that_is_not_a_graph(tmp_path: Path) -> None:
    path = tmp_path / "random.pb"
    path.write_bytes(np.random.default_rng(1).bytes(4096))
    before = path.read_bytes()
    r = cli("inspect", path)
    assert r.code == 2 and "cannot read it as a TensorFlow graph" in r.err and "Traceback" not in r.err
    assert path.read_bytes() == before


def test_checkpoint_without_its_meta(tmp_path: Path) -> None:
    source = MODELS / "tf_pix2pix_ckpt"
    for f in source.iterdir():
        if f.suffix != ".meta":
            (tmp_path / f.name).write_bytes(f.read_bytes())
    r = cli("inspect", tmp_path / "model.ckpt")
    assert r.code == 2 and ".meta" in r.err and "Traceback" not in r.err


def test_tensorflow_output_is_onnx_only(tmp_path: Path) -> None:
    r = cli("rewrite", PB, "--mode", "instance-norm", "-o", tmp_path / "x.pt2", "--data", X)
    assert r.code == 2 and "write .onnx" in r.err


def test_missing_extra_is_one_sentence() -> None:
    import subprocess
    import sys

    code = ("import sys; sys.modules['tensorflow'] = None\n"
            "from bncheck.cli.app import main\n"
            f"sys.argv = ['bncheck', 'inspect', {str(PB)!r}]\nmain()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 2 and "bncheck[tensorflow]" in r.stderr and "Traceback" not in r.stderr
