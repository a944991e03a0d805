"""Baseline programs the benchmark times as whole processes: what a user would run without bncheck."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def torch_eval(model: str, data: str, bs: str) -> None:
    """Plain eval-mode forward over the samples."""
    import numpy as np
    import torch

    m = torch.load(model, weights_only=False).eval()
    x = np.load(data)
    with torch.no_grad():
        for s in range(0, len(x), int(bs)):
            m(torch.from_numpy(x[s:s + int(bs)]))


def ort_eval(model: str, data: str, bs: str) -> None:
    """Plain onnxruntime inference over the samples."""
    import numpy as np
    import onnxruntime as ort

    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = np.load(data)
    for s in range(0, len(x), int(bs)):
        sess.run(None, {name: x[s:s + int(bs)]})


def update_bn(model: str, data: str, bs: str, out: str, shuffles: str = "1") -> None:
    """torch.optim.swa_utils.update_bn over the same batches, then save: with ``shuffles``
    above 1, the seeded shuffles bncheck's recalibration gathers over
    (bncheck/core/passes/recalibration.py), computed here as it computes them."""
    import numpy as np
    import torch
    from torch.optim.swa_utils import update_bn as swa_update_bn

    m = torch.load(model, weights_only=False)
    x = np.load(data)
    b = int(bs)
    if shuffles == "1":
        loader = [torch.from_numpy(x[s:s + b]) for s in range(0, len(x), b)]
    else:
        used = np.random.default_rng(0).permutation(len(x))[:len(x) - len(x) % b]
        orders = [used, *(np.random.default_rng(k).permutation(used)
                          for k in range(1, int(shuffles)))]
        loader = [torch.from_numpy(x[o[s:s + b]]) for o in orders for s in range(0, o.size, b)]
    swa_update_bn(loader, m)
    torch.save(m, out)


def torch_eval_cuda(model: str, data: str, bs: str) -> None:
    """Plain eval-mode forward on the GPU."""
    import numpy as np
    import torch

    m = torch.load(model, weights_only=False).eval().cuda()
    x = np.load(data, mmap_mode="r")
    with torch.no_grad():
        for s in range(0, len(x), int(bs)):
            m(torch.from_numpy(np.ascontiguousarray(x[s:s + int(bs)])).cuda())
    torch.cuda.synchronize()


def update_bn_cuda(model: str, data: str, bs: str, out: str) -> None:
    """update_bn on the GPU, then save."""
    import numpy as np
    import torch
    from torch.optim.swa_utils import update_bn as swa_update_bn

    m = torch.load(model, weights_only=False).cuda()
    x = np.load(data, mmap_mode="r")
    loader = [torch.from_numpy(np.ascontiguousarray(x[s:s + int(bs)])).cuda()
              for s in range(0, len(x), int(bs))]
    swa_update_bn(loader, m)
    torch.save(m.cpu(), out)


def torch_load(path: str) -> None:
    """Read a checkpoint."""
    import torch

    torch.load(path, weights_only=True)


def main() -> None:
    """Dispatch on argv[1]."""
    fn = {"torch-eval": torch_eval, "ort-eval": ort_eval, "update-bn": update_bn,
          "torch-load": torch_load, "torch-eval-cuda": torch_eval_cuda,
          "update-bn-cuda": update_bn_cuda}[sys.argv[1]]
    fn(*sys.argv[2:])


if __name__ == "__main__":
    main()
