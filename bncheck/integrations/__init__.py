"""Checks during training: a PyTorch Lightning callback, a Keras callback and ``bncheck.watch``
for a plain PyTorch loop, all on one core (:mod:`bncheck.integrations.watcher`).

Every check runs :func:`bncheck.compare` on a private copy of the model and a fixed held-out set,
so it never changes the model's weights, buffers, train/eval mode or any RNG state; training with
and without a check gives bitwise-equal weights.
"""
