"""Let the CUDA torchvision wheel (the only one pip reaches here) import against CPU torch.

torchvision registers fake kernels for its compiled ``nms``/``qnms`` ops at import time; without the
compiled library those ops do not exist and the import fails, taking timm with it. Defining their
schemas first is enough for the model code, which never calls them. Test-only: bncheck itself
never imports torchvision.
"""

from __future__ import annotations

import torch

_SCHEMAS = ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
            "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


def install() -> None:
    """Define torchvision's op schemas unless its compiled library already did."""
    if hasattr(torch.ops.torchvision, "nms"):
        return
    lib = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _SCHEMAS:
        lib.define(schema)
    # The Library object must outlive this call, or the definitions go with it.
    _KEEP.append(lib)


_KEEP: list[torch.library.Library] = []
