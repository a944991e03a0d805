"""The torch backend: a torch nn.Module (eager, exported or state_dict + --arch) with taps."""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bncheck.backends.pytorch.export import save_pt2, to_onnx_proto
from bncheck.backends.pytorch.layers import discover_module, discover_state_dict, unmodeled_norms
from bncheck.backends.pytorch.load import Checkpoint, build_arch, load_file
from bncheck.backends.pytorch.passes import apply_pass
from bncheck.backends.pytorch.precision import POLICY, current, full_precision
from bncheck.core.network.formats import ModelFormat
from bncheck.core.network.layers import NormLayer
from bncheck.core.network.model import (
    InputSpec,
    LayerShapes,
    Model,
    PassResult,
    PopulationStats,
    TapFn,
    TapSummary,
)
from bncheck.core.network.options import Device, RewriteMode
from bncheck.errors import BncheckError

TORCHSCRIPT_ON_CPU = ("TorchScript runs as its ONNX form, and this onnxruntime has no CUDA "
                      "provider: it ran on the CPU, not the GPU (install onnxruntime-gpu to run "
                      "it there)")


def resolve_device(device: Device) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is a user error."""
    if device is Device.CUDA and not torch.cuda.is_available():
        raise BncheckError("--device cuda: no CUDA device is available here; use --device cpu")
    if device is Device.CPU or not torch.cuda.is_available():
        return torch.device("cpu")
    # Under torchrun each rank has its own GPU.
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def load_torch_model(path: Path, fmt: ModelFormat, *, allow_pickle: bool, arch: str | None,
                     device: Device) -> TorchModel:
    """Load any PyTorch format; a bare state_dict becomes runnable only with ``arch``."""
    loaded = load_file(path, fmt, allow_pickle=allow_pickle)
    module = loaded.module
    if arch is not None:
        if loaded.checkpoint is None:
            raise BncheckError(f"--arch is for bare state_dicts; {path} already holds a model")
        module = build_arch(arch, loaded.checkpoint.state_dict, path)
    return TorchModel(path, fmt, None if module is None else module.eval(), loaded.checkpoint,
                      resolve_device(device), input_shapes=loaded.input_shapes,
                      batch_limit=loaded.batch_limit)


class TorchModel:
    """A torch model; passes return new TorchModels."""

    backend = "torch"
    max_batch: int | None = None
    keep_bn: str | None = None

    def __init__(self, path: Path, fmt: ModelFormat, module: nn.Module | None,
                 checkpoint: Checkpoint | None, device: torch.device, *,
                 input_shapes: Sequence[tuple[int, ...]] = (),
                 batch_limit: int | None = None) -> None:
        self.path = path
        self.format = fmt
        # Train/eval flags are the caller's: a reference model keeps its norm layers in train mode.
        self.module = None if module is None else module.to(device)
        self.checkpoint = checkpoint
        self.device = device
        # A module holds its BatchNorm modules as they are, nothing folded out of sight; what it
        # may hide is a normalization with running statistics that bncheck does not model.
        self.hidden: tuple[str, ...] = () if module is None else unmodeled_norms(module)
        self._input_shapes = list(input_shapes)
        self.batch_limit = batch_limit
        user = current()
        self.precision: Mapping[str, object] | None = {"device": str(device), "policy": POLICY.to_json(),
                                             "user": user.to_json()}
        # On a GPU the user's TF32 settings would change results; say when bncheck's differ.
        self.notes: tuple[str, ...] = () if device.type != "cuda" or user == POLICY else (
            "bncheck ran its passes in full float32 (TF32 and reduced-precision matmul off), not "
            "with this process's settings, and restored them afterwards",)
        floating = [p.dtype for p in (module.parameters() if module is not None else ())
                    if p.is_floating_point()]
        # A half-precision model takes half-precision inputs; its statistics are still widened.
        self._input_dtype = floating[0] if floating else torch.float32

    @property
    def float_eps(self) -> float:
        """Machine epsilon of the module's parameters' type."""
        return float(torch.finfo(self._input_dtype).eps) if self._input_dtype.is_floating_point \
            else float(torch.finfo(torch.float32).eps)

    @property
    def runs_on(self) -> str:
        """``torch`` and the device."""
        return f"torch {self.device}"

    def layers(self) -> list[NormLayer]:
        """Layers of the module, or of the state_dict when there is no architecture."""
        if self.module is not None:
            return discover_module(self.module)
        assert self.checkpoint is not None
        return discover_state_dict(self.checkpoint.state_dict)

    def runnable(self, example: Sequence[np.ndarray] | None) -> Model:
        """Self, or the ONNX form of a TorchScript archive (hooks do not reach scripted code)."""
        if self.module is None:
            raise BncheckError(
                f"{self.path} is a bare state_dict: bncheck needs the architecture to run it. "
                "Pass --arch package.module:factory (run from the folder that holds the package)"
            )
        if isinstance(self.module, torch.jit.ScriptModule):
            if example is None:
                raise BncheckError(f"{self.path} is TorchScript; give --data so bncheck can "
                                   "trace it to ONNX")
            from bncheck.backends.onnxrt.model import OnnxModel, cuda_provider

            proto = to_onnx_proto(self.module, self._tensors(example), _input_names(len(example)))
            gpu = self.device.type == "cuda"
            on_gpu = gpu and cuda_provider()
            # Said, not silent: the user asked for the GPU, and the report must not imply it.
            notes = (TORCHSCRIPT_ON_CPU,) if gpu and not on_gpu else ()
            return OnnxModel(proto, self.path, Device.CUDA if on_gpu else Device.CPU,
                             fmt=self.format, notes=notes)
        if example is not None:
            self._input_shapes = [tuple(a.shape[1:]) for a in example]
        return self

    def inputs(self) -> list[InputSpec]:
        """Input shapes: exported or seen so far; else channels read off the first conv."""
        if self._input_shapes:
            names = _input_names(len(self._input_shapes))
            return [InputSpec(n, (None, *s))
                    for n, s in zip(names, self._input_shapes, strict=True)]
        if self.module is None:
            return []
        for m in self.module.modules():
            if isinstance(m, nn.modules.conv._ConvNd):
                rank = len(m.kernel_size)
                return [InputSpec("input", (None, m.in_channels, *(None,) * rank), guessed=True)]
        return []

    def _tensors(self, batch: Sequence[np.ndarray]) -> list[torch.Tensor]:
        tensors = [torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in batch]
        return [t.to(self._input_dtype) if t.is_floating_point() else t for t in tensors]

    def run(self, batch: Sequence[np.ndarray], taps: Sequence[str] = (),
            on_tap: TapFn | None = None, stop_after: int | None = None) -> np.ndarray:
        """Forward one batch under no_grad; pre-hooks reduce each tapped layer's input on the
        device, and the summaries cross to the host together once the pass is over.

        With ``stop_after``, the hook of the last layer wanted ends the forward pass there."""
        assert self.module is not None
        pending: list[_Reduced] = []
        handles = [self.module.get_submodule(name).register_forward_pre_hook(
            _hook(name, pending, stop_after)) for name in (taps if on_tap is not None else ())]
        out = None
        try:
            with torch.no_grad(), full_precision():
                out = self.module(*self._tensors(batch))
        except _Enough:
            pass
        except _TapFailure:
            raise  # bncheck's own bug: a traceback, not the user's problem
        except (RuntimeError, AssertionError, ValueError, TypeError, IndexError) as e:
            # What a model raises when it cannot take this input (shapes, dtypes, its asserts).
            shapes = ", ".join(str(tuple(a.shape)) for a in batch)
            raise BncheckError(f"{self.path}: the model rejected input of shape {shapes}: "
                               f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
        finally:
            for h in handles:
                h.remove()
        if on_tap is not None:
            for name, summary in to_host(pending):
                on_tap(name, summary)
        n = batch[0].shape[0]
        return np.empty((n, 0), np.float32) if stop_after is not None else _flatten(out, n)

    def apply(self, mode: RewriteMode, stats: PopulationStats | None = None,
              shapes: LayerShapes | None = None) -> PassResult:
        """Apply one pass to a copy of the module."""
        assert self.module is not None
        spatial = {name: math.prod(s[1:]) for name, s in (shapes or {}).items()}
        module, notes = apply_pass(self.module, mode, stats, spatial)
        return PassResult(TorchModel(self.path, self.format, module, self.checkpoint, self.device,
                                     input_shapes=self._input_shapes, batch_limit=self.batch_limit),
                          notes)

    def dropout_layers(self) -> list[str]:
        """Dropout modules with a non-zero rate."""
        if self.module is None:
            return []
        return [n for n, m in self.module.named_modules()
                if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0]

    def save(self, path: Path, example: Sequence[np.ndarray], keep_dropout: bool = False) -> None:
        """Write by suffix: .onnx, .pt2, else a checkpoint shaped like the input file.

        The caller has vetted the suffix against the input and modes (rewrite.matrix).
        """
        assert self.module is not None
        suffix = path.suffix.lower()
        module = copy.deepcopy(self.module).to("cpu").eval()
        dtype = self._input_dtype
        if keep_dropout:
            # Exported in train mode, Dropout becomes a node with training_mode=True.
            for m in module.modules():
                if isinstance(m, nn.modules.dropout._DropoutNd):
                    m.train()
        tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in example]
        tensors = [t.to(dtype) if t.is_floating_point() else t for t in tensors]
        if suffix == ".onnx":
            import onnx

            from bncheck.backends.onnxrt.dropout import activate_dropout

            proto = to_onnx_proto(module, tensors, _input_names(len(tensors)))
            onnx.save(activate_dropout(proto) if keep_dropout else proto, str(path))
        elif suffix == ".pt2":
            save_pt2(module, tensors, path, self.batch_limit)
        else:
            self._save_checkpoint(module, path)

    def _save_checkpoint(self, module: nn.Module, path: Path) -> None:
        state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
        if self.checkpoint is None:
            torch.save(module, str(path))  # the input was a pickled module; keep it one
        elif path.suffix.lower() == ".safetensors":
            from safetensors.torch import save_file

            save_file({k: t.contiguous() for k, t in self.checkpoint.rebuilt(state).items()},
                      str(path))
        else:
            torch.save(self.checkpoint.rebuilt(state), str(path))


# One tapped layer's input, reduced on its device: (name, (N, C) means, (N, C) sums of squared
# deviations, one sample's shape).
_Reduced = tuple[str, torch.Tensor, torch.Tensor, tuple[int, ...]]


def reduce_on_device(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and sum of squared deviations, computed where ``x`` lives.

    Two passes in the activation's own precision (half precision is widened to float32 first):
    the mean, then the squared deviations from it, so a large offset does not cancel the
    variance.
    """
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    xs = x.reshape(x.shape[0], x.shape[1], -1)
    mean = xs.mean(dim=2, keepdim=True)
    dev = xs - mean
    dev.mul_(dev)  # squared in place: one temporary the size of x, not two (3x faster here)
    return mean.squeeze(2), dev.sum(dim=2)


def to_host(pending: Sequence[_Reduced]) -> list[tuple[str, TapSummary]]:
    """The summaries of one pass as float64 host arrays, in tap order.

    One concatenated copy once the forward pass is over: on a GPU each ``.cpu()`` waits for the
    device, so copying per layer would stall the pass once per layer; on a CPU, merging into the
    numpy accumulators between the layers' kernels cost 1.10x to 1.21x the untapped pass, after
    the pass 1.00x to 1.05x (docs/design.md, "Statistics").
    """
    if not pending:
        return []
    flat = torch.cat([t.reshape(-1) for _, mean, m2, _ in pending for t in (mean, m2)])
    host = flat.to(torch.float64).cpu().numpy()
    out, at = [], 0
    for name, mean, _, shape in pending:
        size, n_c = mean.numel(), tuple(mean.shape)
        out.append((name, TapSummary(host[at:at + size].reshape(n_c),
                                     host[at + size:at + 2 * size].reshape(n_c), shape)))
        at += 2 * size
    return out


def _hook(name: str, pending: list[_Reduced],  # type: ignore[no-untyped-def]
          stop_after: int | None):
    def hook(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        x = args[0]
        try:
            mean, m2 = reduce_on_device(x)
        except Exception as e:  # anything failing here is bncheck's fault, not the model's
            raise _TapFailure(f"tap on {name} failed") from e
        pending.append((name, mean, m2, tuple(x.shape[1:])))
        if stop_after is not None and len({p[0] for p in pending}) >= stop_after:
            raise _Enough

    return hook


class _Enough(Exception):
    """Raised by the hook of the last layer a ``stop_after`` pass wants: the rest need not run."""


class _TapFailure(Exception):
    """A statistics tap failed inside the forward pass: a bncheck bug, never a user error."""


def _input_names(n: int) -> list[str]:
    return ["input"] if n == 1 else [f"input_{i}" for i in range(n)]


def _flatten(out: object, n: int) -> np.ndarray:
    if isinstance(out, torch.Tensor):
        parts = [out]
    elif isinstance(out, (tuple, list)):
        parts = [t for t in out if isinstance(t, torch.Tensor)]
    elif isinstance(out, dict):
        parts = [t for t in out.values() if isinstance(t, torch.Tensor)]
    else:
        raise BncheckError(f"the model returned {type(out).__name__}; bncheck needs tensors")
    return np.concatenate([p.detach().float().cpu().numpy().reshape(n, -1) for p in parts], axis=1)
