"""bncheck: find and fix BatchNorm train/eval mismatches in PyTorch and ONNX models."""

__version__ = "0.1.0"
