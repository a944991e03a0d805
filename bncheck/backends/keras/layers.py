"""The Keras layer bncheck writes for batch-stats: batch statistics at inference.

Registered as ``bncheck>BatchStatNormalization``: a ``.keras`` file that holds it loads where
``bncheck.backends.keras.layers`` is imported (``import bncheck.backends.keras.layers``).
"""

from __future__ import annotations

from typing import Any

from bncheck.backends.keras.runtime import import_keras

keras = import_keras()


@keras.saving.register_keras_serializable(package="bncheck")
class BatchStatNormalization(keras.layers.Layer):  # type: ignore[name-defined]
    """Normalizes with the statistics of the batch it is given, in training and at inference.

    With ``keep_no_spatial``, an input with one value per channel per sample normalizes with the
    moving statistics instead (it has no per-sample statistics), as the torch form does.
    """

    def __init__(self, axis: int = -1, epsilon: float = 1e-3, keep_no_spatial: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.axis = axis
        self.epsilon = epsilon
        self.keep_no_spatial = keep_no_spatial

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        """Per-channel gamma, beta and moving statistics."""
        channels = int(input_shape[self.axis])  # type: ignore[arg-type]
        self.gamma = self.add_weight(shape=(channels,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(channels,), initializer="zeros", name="beta")
        self.moving_mean = self.add_weight(shape=(channels,), initializer="zeros",
                                           name="moving_mean", trainable=False)
        self.moving_variance = self.add_weight(shape=(channels,), initializer="ones",
                                               name="moving_variance", trainable=False)

    def call(self, x: Any) -> Any:
        """Normalize ``x`` over every axis but the channel axis."""
        ops = keras.ops
        axis = self.axis % len(x.shape)
        reduce = [i for i in range(len(x.shape)) if i != axis]
        spatial = [d for i, d in enumerate(x.shape) if i not in (0, axis)]
        if self.keep_no_spatial and all(d == 1 for d in spatial):
            mean, var = self.moving_mean, self.moving_variance
        else:
            mean, var = ops.moments(x, axes=reduce)
        return ops.batch_normalization(x, mean, var, axis=axis, offset=self.beta,
                                       scale=self.gamma, epsilon=self.epsilon)

    def get_config(self) -> dict[str, Any]:
        """Config for saving."""
        return {**super().get_config(), "axis": self.axis, "epsilon": self.epsilon,
                "keep_no_spatial": self.keep_no_spatial}
