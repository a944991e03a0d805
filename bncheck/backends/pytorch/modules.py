"""Modules that stand in for normalization layers after a rewrite, in plain exportable ops."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def _shape(x: torch.Tensor) -> tuple[int, ...]:
    return (1, -1) + (1,) * (x.dim() - 2)


class StatNorm(nn.Module):
    """Normalizes with statistics of its own input: per batch, or per sample (instance norm).

    Written with mean/sub/mul/sqrt so that the ONNX export is portable (no training-mode
    BatchNormalization, which onnxruntime's CUDA provider does not run at opset >= 14). With
    ``keep_no_spatial``, an input with one value per channel per sample ((N, C), or 1x1 maps) has
    no per-sample statistics and keeps using the running stats.
    """

    gamma: torch.Tensor
    beta: torch.Tensor
    running_mean: torch.Tensor
    running_var: torch.Tensor

    # Not "weight"/"bias": torch.export's instance_norm decomposition claims those names.
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, running_mean: torch.Tensor,
                 running_var: torch.Tensor, eps: float, per_sample: bool,
                 keep_no_spatial: bool) -> None:
        super().__init__()
        self.register_buffer("gamma", weight.detach().clone())
        self.register_buffer("beta", bias.detach().clone())
        self.register_buffer("running_mean", running_mean.detach().clone())
        self.register_buffer("running_var", running_var.detach().clone())
        self.eps = eps
        self.per_sample = per_sample
        self.keep_no_spatial = keep_no_spatial

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize ``x`` (N, C, *spatial)."""
        if self.keep_no_spatial and math.prod(x.shape[2:]) == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.gamma, self.beta,
                                False, 0.0, self.eps)
        if self.per_sample:
            # Exports as one InstanceNormalization node, the same as the ONNX pass writes.
            return F.instance_norm(x, None, None, self.gamma, self.beta, True, 0.0, self.eps)
        if not (torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting()):
            # Eager runs use torch's fused kernel (2x faster than the ops below, same result to
            # 1e-6); exports get the portable form. verify() checks the two agree.
            return F.batch_norm(x, None, None, self.gamma, self.beta, True, 0.0, self.eps)
        dims = (0, *range(2, x.dim()))
        mean = x.mean(dims, keepdim=True)
        centered = x - mean
        var = (centered * centered).mean(dims, keepdim=True)
        shape = _shape(x)
        # The scale is computed per channel, so only four ops touch every element.
        scale = self.gamma.view(shape) / torch.sqrt(var + self.eps)
        return centered * scale + self.beta.view(shape)


class ScaleShift(nn.Module):
    """A folded BatchNorm that had no op to fold into: ``x * scale + shift`` per channel."""

    scale: torch.Tensor
    shift: torch.Tensor

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the per-channel affine map."""
        shape = _shape(x)
        return x * self.scale.view(shape) + self.shift.view(shape)


class ExportedBatchNorm(_BatchNorm):
    """A BatchNorm rebuilt from a torch.export graph node; accepts any input rank."""

    def __init__(self, num_features: int, eps: float, momentum: float | None,
                 original: str) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.original = original

    def _check_input_dim(self, input: torch.Tensor) -> None:
        """Any rank >= 2 is valid: the exported graph already fixed it."""
