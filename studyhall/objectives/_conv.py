"""A 3x3 convolution and a 2x2 max-pool written as slices and one matrix product.

Measured on the project's 2-core VM (JAX 0.10 on CPU, a 16/32-filter CNN, batch 128): XLA's
native convolution ran 70-90 ms a training step when called step by step, and 250-330 ms inside
``lax.scan`` (the compiled epoch of ``_loop``); ``MaxPooling2D``'s backward pass was slow there
too. The same network with each 3x3 convolution as nine shifted slices concatenated and
multiplied by the kernel matrix (im2col), and pooling as a reshape and a max, ran 19-40 ms a
step inside the scan: 4-8x faster, and the maths is the same (a test checks it against
``keras.layers.Conv2D``). Only ``keras.ops`` is used, so every backend runs it.

Importing this module imports Keras; ``mnist.build_model`` imports it when a trial trains.
"""

from __future__ import annotations

from typing import Any

from studyhall.objectives import _keras

__all__ = ["Conv3x3", "MaxPool2x2"]

_k = _keras.keras()
_ops = _k.ops
_serializable = _k.saving.register_keras_serializable(package="studyhall")


@_serializable
class Conv3x3(_k.layers.Layer):  # type: ignore[name-defined]
    """``Conv2D(filters, 3, padding="valid")`` on NHWC images, as im2col + matmul.

    The kernel has Conv2D's shape (3, 3, in, out), so initialisers see the same fan-in/out.
    """

    def __init__(self, filters: int, activation: str | None = None,
                 kernel_initializer: str = "glorot_uniform", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.activation = _k.activations.get(activation)
        self._activation_name = activation
        self.kernel_initializer = kernel_initializer

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        channels = int(input_shape[-1])  # type: ignore[arg-type]
        self.kernel = self.add_weight(name="kernel", shape=(3, 3, channels, self.filters),
                                      initializer=self.kernel_initializer)
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")

    def call(self, x: Any) -> Any:
        h, w = x.shape[1] - 2, x.shape[2] - 2
        # Row-major (i, j, channel) order, the order of the kernel reshaped to (9 * in, out).
        patches = _ops.concatenate(
            [x[:, i:i + h, j:j + w, :] for i in range(3) for j in range(3)], axis=-1
        )
        kernel = _ops.reshape(self.kernel, (-1, self.filters))
        return self.activation(_ops.matmul(patches, kernel) + self.bias)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        n, h, w, _ = input_shape
        return (n, None if h is None else h - 2, None if w is None else w - 2, self.filters)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "filters": self.filters,
                "activation": self._activation_name, "kernel_initializer": self.kernel_initializer}


@_serializable
class MaxPool2x2(_k.layers.Layer):  # type: ignore[name-defined]
    """``MaxPooling2D(2)`` (valid: an odd last row/column is dropped), as reshape + max."""

    def call(self, x: Any) -> Any:
        h, w, c = x.shape[1] // 2, x.shape[2] // 2, x.shape[3]
        x = x[:, : 2 * h, : 2 * w, :]
        return _ops.max(_ops.reshape(x, (-1, h, 2, w, 2, c)), axis=(2, 4))

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        n, h, w, c = input_shape
        return (n, None if h is None else h // 2, None if w is None else w // 2, c)
