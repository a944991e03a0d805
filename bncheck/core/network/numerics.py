"""Numeric constants the statistics code shares."""

# The eps torch and ONNX use when a layer does not set one.
DEFAULT_EPS = 1e-5
# Denominators are kept at least this large, so a zero variance or norm never divides by zero.
TINY = 1e-12
