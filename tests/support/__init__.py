"""Test-only helpers: torchvision/timm loading without their compiled ops, real architectures."""
