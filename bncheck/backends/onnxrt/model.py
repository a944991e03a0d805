"""The ONNX backend: an onnx ModelProto run with onnxruntime, with statistics taps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from bncheck.backends.onnxrt.decomposed import fuse_decomposed
from bncheck.backends.onnxrt.dropout import (
    activate_dropout,
    deactivate_dropout,
    dropout_nodes,
    has_active_dropout,
)
from bncheck.backends.onnxrt.graph import (
    NP_TYPES,
    conv2d_outputs,
    ensure_opset,
    load_proto,
    opset,
    static_shapes,
)
from bncheck.backends.onnxrt.hidden import KEEP_BN, exporter, hidden_norms, listed
from bncheck.backends.onnxrt.layers import discover, is_training_mode, nested_norms
from bncheck.backends.onnxrt.passes import apply_pass
from bncheck.backends.onnxrt.taps import add_taps, row_fits, summary
from bncheck.backends.onnxrt.weights import session
from bncheck.core.network.formats import ModelFormat
from bncheck.core.network.layers import NormLayer
from bncheck.core.network.model import (
    InputSpec,
    LayerShapes,
    PassResult,
    PopulationStats,
    TapFn,
    TapSummary,
)
from bncheck.core.network.options import Device, RewriteMode
from bncheck.errors import BncheckError


class OnnxModel:
    """An ONNX graph; passes produce new OnnxModels, sessions are built lazily and cached."""

    backend = "onnx"

    def __init__(self, proto: onnx.ModelProto, path: Path, device: Device = Device.CPU,
                 fmt: ModelFormat = ModelFormat.ONNX, notes: tuple[str, ...] = (),
                 hidden: tuple[str, ...] | None = None) -> None:
        self.proto = proto
        self.path = path
        self.format = fmt
        self.device = device
        try:
            self._layers, self._refs = discover(proto)
        except BncheckError as e:
            raise BncheckError(f"{path}: {e}") from e
        inits = {t.name for t in proto.graph.initializer}
        # Older exports list initializers among the inputs too; those are not fed.
        self._inputs = [vi for vi in proto.graph.input if vi.name not in inits]
        # By tapped tensors, and whether only their summaries are computed (``stop_after``).
        self._sessions: dict[tuple[tuple[str, ...], bool], object] = {}
        # Tapped in the taps' short form (rank 4 by construction) until a run shows rows too
        # long for it; then those are tapped in the general form.
        self._short = conv2d_outputs(proto.graph)
        self.notes = notes
        self.hidden = hidden_norms(proto) if hidden is None else hidden
        self.keep_bn: str | None = KEEP_BN[exporter(proto)]
        # onnxruntime's CPU provider computes in plain float32; the CUDA one is told to (below).
        self.precision: Mapping[str, object] | None = {"provider_tf32": False}
        # A batch dimension the graph fixes: runs are split into batches of this size.
        fixed = [d.dim_value for vi in self._inputs[:1]
                 for d in vi.type.tensor_type.shape.dim[:1] if d.dim_value > 0]
        self.max_batch: int | None = fixed[0] if fixed else None
        self._batch_checked = False
        # Whether outputs depend on batch composition (BN on batch statistics): a fixed-batch
        # graph can then be given a smaller batch only when repeating it keeps its statistics.
        self._batch_stats = any(is_training_mode(n) for n in proto.graph.node)
        # The model's outputs: not the updated running stats a training-mode BN also returns.
        stats_out = {o for n in proto.graph.node if is_training_mode(n) for o in n.output[1:]}
        self._outputs = [o.name for o in proto.graph.output if o.name not in stats_out]
        if not self._outputs:
            raise BncheckError(f"{path}: the graph has no outputs bncheck can compare; export it "
                               "with its real outputs")

    @classmethod
    def load(cls, path: Path, device: Device = Device.CPU) -> OnnxModel:
        """Read an .onnx file (and check the device before any work).

        Test-time dropout that bncheck wrote is switched off for analysis, as eval mode does; a
        rewrite with --keep-dropout switches it on again.
        """
        if device is not Device.CPU:
            _providers(device)  # imports onnxruntime, which a plain inspect never needs
        return cls.of(load_proto(path), path, device)

    @classmethod
    def of(cls, proto: onnx.ModelProto, path: Path, device: Device = Device.CPU) -> OnnxModel:
        """The model of a graph as read: a BatchNorm written in elementwise ops becomes one
        BatchNormalization node, test-time dropout bncheck wrote is off."""
        proto, rebuilt = fuse_decomposed(proto)
        notes = () if not rebuilt else (
            f"BatchNorm {listed(rebuilt)} {'were' if len(rebuilt) > 1 else 'was'} written as "
            "elementwise ops with its running statistics as constants; bncheck reads, and "
            "rewrites, each as one BatchNormalization node computing the same function",)
        return OnnxModel(deactivate_dropout(proto) if has_active_dropout(proto) else proto, path,
                         device, notes=notes)

    @property
    def float_eps(self) -> float:
        """Machine epsilon of the first input's type (float16 graphs round far more)."""
        elem = int(self._inputs[0].type.tensor_type.elem_type) if self._inputs else 0
        half = elem == onnx.TensorProto.FLOAT16
        return float(np.finfo(np.float16 if half else np.float32).eps)

    @property
    def runs_on(self) -> str:
        """``onnxruntime`` and its first provider."""
        first = _providers(self.device)[0]
        return f"onnxruntime {first[0] if isinstance(first, tuple) else first}"

    def layers(self) -> list[NormLayer]:
        """Normalization layers in graph order."""
        return list(self._layers)

    def runnable(self, example: Sequence[np.ndarray] | None) -> OnnxModel:
        """Self; or, for a graph that fixes its batch size (an export without dynamic axes), a
        copy with a free batch dimension when the graph runs that way."""
        if self.max_batch is None or example is None or self._batch_checked:
            return self
        relaxed = onnx.ModelProto()
        relaxed.CopyFrom(self.proto)
        _dynamic_batch(relaxed)
        free = OnnxModel(relaxed, self.path, self.device, self.format, (
            *self.notes, f"the graph fixes the batch size at {self.max_batch}; bncheck runs it, "
            "and writes it, with a free batch dimension, which the graph allows"), self.hidden)
        try:
            # Two different batch sizes: a graph that only pretends to be free fails one.
            free.run([np.concatenate([a[:1]] * 2) for a in example])
            free.run([np.concatenate([a[:1]] * 3) for a in example])
        except BncheckError:
            fixed = OnnxModel(self.proto, self.path, self.device, self.format, (
                *self.notes, f"the graph only runs at batch size {self.max_batch}: runs are "
                f"split into batches of {self.max_batch}, and the reference cannot be larger"),
                self.hidden)
            fixed._batch_checked = True
            return fixed
        return free

    def inputs(self) -> list[InputSpec]:
        """Graph inputs that are not initializers."""
        return [InputSpec(vi.name, tuple(d.dim_value if d.dim_value > 0 else None
                                         for d in vi.type.tensor_type.shape.dim))
                for vi in self._inputs]

    def _session(self, taps: tuple[str, ...], only_taps: bool = False) -> object:
        if (taps, only_taps) in self._sessions:
            return self._sessions[taps, only_taps]
        import onnxruntime as ort

        proto = self.proto
        opts = ort.SessionOptions()
        # Fatal only: every error comes back as an exception that bncheck words itself.
        opts.log_severity_level = 4
        if taps:
            # Tapped tensors feed reductions whose results become graph outputs. A tensor with
            # two consumers is never fused away (Conv+BN stays unfused there), so full
            # optimization keeps it: measured equal to an unoptimized session within 1.2e-6
            # relative, at half the run time. tests/test_compare.py checks taps against numpy.
            proto = add_taps(self.proto, taps, only_taps=only_taps, rows=self._short)
        providers = _providers(self.device)
        try:
            sess = session(proto, opts, providers, owned=bool(taps))
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
            raise BncheckError(f"{self.path}: onnxruntime cannot run this graph: "
                               f"{str(e).splitlines()[0]}") from e
        self._sessions[taps, only_taps] = sess
        return sess

    def run(self, batch: Sequence[np.ndarray], taps: Sequence[str] = (),
            on_tap: TapFn | None = None, stop_after: int | None = None) -> np.ndarray:
        """Run one batch, passing each tapped layer's input to ``on_tap``.

        With ``stop_after``, a graph cut down to what the first that many taps need runs.
        """
        n = batch[0].shape[0]
        if self.max_batch is not None and n > self.max_batch:
            # A fixed-batch graph: one chunk at a time (only batch-independent runs are
            # larger than the model allows; the reference plan caps its batch size).
            step = self.max_batch
            return np.concatenate([self.run([a[i:i + step] for a in batch], taps, on_tap,
                                            stop_after) for i in range(0, n, step)])
        if self.max_batch is not None and n < self.max_batch:
            return self._filled(batch, self.max_batch, taps, on_tap, stop_after)
        if stop_after is not None:
            taps = taps[:stop_after]
        by_layer = {r.name: r.input for r in self._refs}
        tensors = tuple(dict.fromkeys(by_layer[t] for t in taps))
        # Cut the graph down only when summaries are what the caller wants back.
        only_taps = stop_after is not None and on_tap is not None and bool(tensors)
        sess = self._session(tensors, only_taps)
        feed: dict[str, np.ndarray] = {
            vi.name: np.ascontiguousarray(
                a.astype(NP_TYPES.get(vi.type.tensor_type.elem_type, np.float32), copy=False))
            for vi, a in zip(self._inputs, batch, strict=True)}
        out_names = [o.name for o in sess.get_outputs()]  # type: ignore[attr-defined]
        try:
            results = sess.run(None, feed)  # type: ignore[attr-defined]
        except Exception as e:  # onnxruntime's own error types: the graph refused these inputs
            shapes = ", ".join(str(a.shape) for a in batch)
            first = " ".join(str(e).split())[:300]
            raise BncheckError(f"{self.path}: onnxruntime cannot run the model on inputs of "
                               f"shape {shapes}: {first}") from e
        got = dict(zip(out_names, results, strict=True))
        long = {t for t in tensors if t in self._short and not row_fits(got, t)}
        if long:
            # Rows over MAX_ROW would be summed in float32: tap those generally, run again.
            self._short -= long
            self._sessions = {k: v for k, v in self._sessions.items() if not k[0]}
            return self.run(batch, taps, on_tap, stop_after)
        if on_tap is not None:
            for t in taps:
                on_tap(t, summary(got, by_layer[t]))
        if stop_after is not None:
            return np.empty((n, 0), np.float32)
        flat = [np.asarray(got[o], dtype=np.float32).reshape(n, -1) for o in self._outputs]
        return np.concatenate(flat, axis=1)

    def _filled(self, batch: Sequence[np.ndarray], size: int, taps: Sequence[str],
                on_tap: TapFn | None, stop_after: int | None) -> np.ndarray:
        """Run a batch smaller than a graph that only runs at its fixed size (a pass's last
        batch, one sample alone): its samples repeated up to ``size``, the first outputs and
        tap rows kept. Eval mode treats each sample alone; batch statistics stay the same when
        every sample repeats equally often, so only a batch size that divides the graph's may
        run with them."""
        n = batch[0].shape[0]
        if size % n and self._batch_stats:
            raise BncheckError(f"{self.path}: the graph only runs at batch size {size}, and a "
                               f"batch of {n} cannot fill it without changing its batch "
                               f"statistics; give a batch size that divides {size} "
                               "(--train-batch-size, or rewrite's --batch-size)")
        fill = np.arange(size) % n

        def first(name: str, s: TapSummary) -> None:
            assert on_tap is not None
            on_tap(name, TapSummary(s.mean[:n], s.m2[:n], s.shape))

        out = self.run([a[fill] for a in batch], taps, first if on_tap is not None else None,
                       stop_after)
        return out[:n]

    def apply(self, mode: RewriteMode, stats: PopulationStats | None = None,
              shapes: LayerShapes | None = None) -> PassResult:
        """Apply one pass; the graph keeps its opset (very old ones are converted, and say so).

        Each BN input's shape comes from ``shapes`` (a tapped run), else from shape inference.
        """
        nested = nested_norms(self.proto)
        if nested and mode is not RewriteMode.RECALIBRATE:
            raise BncheckError(f"{self.path}: {nested} normalization node(s) sit inside If/Loop "
                               "subgraphs; bncheck does not rewrite inside control flow")
        base = ensure_opset(self.proto)
        inputs = {r.name: r.input for r in self._refs}
        known = {inputs[n]: (None, *s) for n, s in (shapes or {}).items() if n in inputs}
        norm_inputs = {n.input[0] for n in base.graph.node if n.op_type == "BatchNormalization"}
        # Shape inference over the whole graph costs more than the pass itself; skip it when a
        # tapped run has shown every BN input's shape.
        static = {} if norm_inputs <= known.keys() else static_shapes(base)
        on_cpu = _providers(self.device)[0] == "CPUExecutionProvider"
        proto, notes = apply_pass(base, mode, {**static, **known}, stats, training_nodes=on_cpu)
        if opset(base) != opset(self.proto):
            notes.append(f"opset {opset(self.proto)} converted to {opset(base)}: older "
                         "BatchNormalization semantics differ")
        new = OnnxModel(proto, self.path, self.device, self.format, self.notes)
        new._batch_stats = self._batch_stats or mode in (
            RewriteMode.REFERENCE, RewriteMode.SPATIAL_REFERENCE, RewriteMode.BATCH_STATS)
        # Replaced layers still read the same input tensor; keep tapping them by name.
        tensors = {i for n in proto.graph.node for i in n.input}
        names = {r.name for r in new._refs}
        new._refs += [r for r in self._refs if r.name not in names and r.input in tensors]
        return PassResult(new, notes)

    def dropout_layers(self) -> list[str]:
        """The graph's Dropout nodes."""
        return dropout_nodes(self.proto)

    def save(self, path: Path, example: Sequence[np.ndarray], keep_dropout: bool = False) -> None:
        """Write an .onnx file (the caller has vetted the suffix with rewrite.matrix), with a
        free batch dimension unless the graph only runs at its fixed one."""
        proto = activate_dropout(self.proto) if keep_dropout else onnx.ModelProto()
        if not keep_dropout:
            proto.CopyFrom(self.proto)
        if self.max_batch is None:
            # A graph that only runs at its fixed batch size (``runnable``) keeps saying so.
            _dynamic_batch(proto)
        onnx.save(proto, str(path))


def cuda_provider() -> bool:
    """Whether this onnxruntime can run on a GPU (onnxruntime-gpu)."""
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def _providers(device: Device) -> list[Any]:
    """onnxruntime providers for ``device``; CUDA first when asked for and present."""
    cuda = cuda_provider()
    if device is Device.CUDA and not cuda:
        raise BncheckError("--device cuda: onnxruntime has no CUDA provider here "
                           "(install onnxruntime-gpu, or use --device cpu)")
    # TF32 would move results by about 1e-3, more than bncheck measures and verifies.
    return [("CUDAExecutionProvider", {"use_tf32": 0}), "CPUExecutionProvider"] \
        if cuda and device is not Device.CPU else ["CPUExecutionProvider"]


def _dynamic_batch(proto: onnx.ModelProto) -> None:
    """Make dimension 0 of every graph input and output symbolic so any batch size runs.

    A dimension that already has a name keeps it; a fixed one becomes ``batch``.
    """
    # Stale intermediate shapes would pin the old batch size; onnxruntime infers them again.
    del proto.graph.value_info[:]
    inits = {t.name for t in proto.graph.initializer}
    for vi in list(proto.graph.input) + list(proto.graph.output):
        if vi.name in inits or not vi.type.tensor_type.HasField("shape"):
            continue
        dims = vi.type.tensor_type.shape.dim
        if dims and not dims[0].dim_param:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "batch"
