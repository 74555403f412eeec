"""Sparse inference: execute sufficiently sparse Dense and 1x1 Conv2D layers with sparse kernels.

A sparse model stores masked weights as zeros and computes densely, which is what training
needs. For inference, :func:`to_sparse_inference` returns a copy whose sparse enough Dense
layers (and 1x1, stride-1, channels-last, ungrouped Conv2D layers, which are Dense layers
on the channel axis) are replaced by :class:`SparseDense`: the kernel is kept only as the
indices and values of its non-zeros and multiplied with a sparse kernel.

Two sparse kernels are available (``kind``):

* ``'coo'``: ``tf.sparse.sparse_dense_matmul`` with the kernel as a ``tf.SparseTensor``.
  Its cost grows with non-zeros x rows; on CPU it is the faster sparse kernel for a few
  rows (batch 1 decoding, small online batches).
* ``'csr'``: the kernel converted to TensorFlow's CSR sparse matrix on every call
  (``tf.raw_ops.SparseTensorToCSRSparseMatrix``, cost ~ non-zeros) and multiplied with
  ``tf.raw_ops.SparseMatrixMatMul``; faster than 'coo' from about 16 rows on.
* ``'auto'`` (default): 'coo' below :data:`AUTO_CSR_MIN_ROWS` rows, 'csr' from there on,
  chosen statically when the number of rows is known at trace time, else with ``tf.cond``.

Rows are the product of all input dimensions but the last (batch x height x width for a
1x1 convolution). Whether sparse beats dense depends on sparsity, shape, rows and CPU:
measure with ``tools/bench_inference.py``.
"""

from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from rigl_tf.keras import model_ops

KINDS = ("auto", "coo", "csr")

# 'auto' switches from COO to CSR at this many rows (measured on a 2-core x86 CPU, TF 2.21:
# COO wins up to ~8 rows, CSR from ~16, for 512..2048-wide kernels at 80-99% sparsity).
AUTO_CSR_MIN_ROWS = 16


def _check_kind(kind):
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"`kind` must be one of {list(KINDS)}, got {kind!r}.")
    return kind


@keras.saving.register_keras_serializable(package="rigl_tf")
class SparseDense(keras.layers.Layer):
    """A Dense layer whose kernel is stored and multiplied as a sparse matrix.

    Computes ``activation(x @ W + b)`` on the last axis of ``x`` (any rank >= 2), where
    ``W`` has shape ``(input_dim, units)`` and is given by ``nnz`` (row, column) indices
    (a non-trainable int64 weight, row-major order) and values (a non-trainable weight).
    Build one from an existing layer with :meth:`from_layer`.

    Args:
      units: output width.
      input_dim: input width (the kernel's first dimension).
      nnz: number of stored kernel entries.
      activation: a Keras activation (name, callable or config).
      use_bias: whether a bias is added.
      kind: sparse kernel: 'coo', 'csr' or 'auto' (see the module docstring).
      **kwargs: Keras layer arguments (name, dtype, ...).

    Raises:
      ValueError: for non-positive sizes, ``nnz`` outside [0, input_dim * units] or an
        unknown ``kind``.
    """

    def __init__(self, units, input_dim, nnz, activation=None, use_bias=True, kind="auto",
                 **kwargs):
        super().__init__(**kwargs)
        for name, value in (("units", units), ("input_dim", input_dim)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
        if not isinstance(nnz, (int, np.integer)) or not 0 <= nnz <= input_dim * units:
            raise ValueError(
                f"`nnz` must be an int in [0, input_dim * units = {input_dim * units}], "
                f"got {nnz!r}."
            )
        self.units = int(units)
        self.input_dim = int(input_dim)
        self.nnz = int(nnz)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kind = _check_kind(kind)

    def build(self, input_shape):
        if input_shape[-1] is not None and input_shape[-1] != self.input_dim:
            raise ValueError(
                f"SparseDense {self.name!r} expects inputs with last dimension "
                f"{self.input_dim}, got input shape {tuple(input_shape)}."
            )
        self.kernel_indices = self.add_weight(
            name="kernel_indices", shape=(self.nnz, 2), dtype="int64",
            initializer="zeros", trainable=False,
        )
        self.kernel_values = self.add_weight(
            name="kernel_values", shape=(self.nnz,), initializer="zeros", trainable=False,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(self.units,), initializer="zeros", trainable=False,
            )
        self.built = True

    @classmethod
    def from_layer(cls, layer, kind: str = "auto", name: Optional[str] = None):
        """A built SparseDense computing what a Dense or eligible 1x1 Conv2D layer computes.

        Args:
          layer: a built ``keras.layers.Dense``, or a ``keras.layers.Conv2D`` for which
            :func:`is_convertible` is true.
          kind: sparse kernel, see the module docstring.
          name: layer name (default: ``layer.name``).

        Returns:
          A built SparseDense holding the non-zeros of ``layer``'s kernel and its bias.

        Raises:
          TypeError: if ``layer`` cannot be converted.
        """
        if not is_convertible(layer):
            raise TypeError(
                f"`layer` {getattr(layer, 'name', layer)!r} ({type(layer).__name__}) cannot be "
                f"executed as SparseDense; supported: built Dense layers and Conv2D layers "
                f"with a 1x1 kernel, strides 1, channels_last and groups=1 (not quantized)."
            )
        kernel = np.asarray(keras.ops.convert_to_numpy(layer.kernel))
        kernel = kernel.reshape(kernel.shape[-2], kernel.shape[-1])
        indices = np.argwhere(kernel != 0).astype(np.int64)  # row-major, as CSR needs
        values = kernel[kernel != 0]
        new = cls(
            units=kernel.shape[1],
            input_dim=kernel.shape[0],
            nnz=len(values),
            activation=layer.activation,
            use_bias=layer.use_bias,
            kind=kind,
            name=name or layer.name,
            dtype=layer.dtype_policy,
        )
        new.build((None, kernel.shape[0]))
        new.kernel_indices.assign(indices.reshape(-1, 2))
        new.kernel_values.assign(values.astype(new.kernel_values.dtype))
        if layer.use_bias:
            new.bias.assign(keras.ops.convert_to_numpy(layer.bias))
        return new

    @property
    def sparsity(self) -> float:
        """Fraction of kernel entries not stored."""
        return 1.0 - self.nnz / (self.input_dim * self.units)

    def _coo(self, x, values):
        kernel = tf.SparseTensor(
            tf.convert_to_tensor(self.kernel_indices), values, (self.input_dim, self.units)
        )
        return tf.sparse.sparse_dense_matmul(x, kernel)

    def _csr(self, x, values):
        csr = tf.raw_ops.SparseTensorToCSRSparseMatrix(
            indices=tf.convert_to_tensor(self.kernel_indices),
            values=values,
            dense_shape=tf.constant([self.input_dim, self.units], tf.int64),
        )
        # (x W)  =  (W^T x^T)^T, the product CSR computes with the matrix on the left.
        return tf.raw_ops.SparseMatrixMatMul(
            a=csr, b=x, transpose_a=True, transpose_b=True, transpose_output=True
        )

    def call(self, inputs):
        x = tf.convert_to_tensor(inputs)
        outer = tf.shape(x)[:-1]
        x2 = tf.reshape(x, (-1, self.input_dim))
        rows = x2.shape[0]
        if self.nnz == 0:
            y = tf.zeros((tf.shape(x2)[0], self.units), x2.dtype)
        else:
            values = tf.cast(tf.convert_to_tensor(self.kernel_values), x2.dtype)
            kind = self.kind
            if kind == "auto" and rows is not None:
                kind = "coo" if rows < AUTO_CSR_MIN_ROWS else "csr"
            if kind == "coo":
                y = self._coo(x2, values)
            elif kind == "csr":
                y = self._csr(x2, values)
            else:
                y = tf.cond(
                    tf.shape(x2)[0] < AUTO_CSR_MIN_ROWS,
                    lambda: self._coo(x2, values),
                    lambda: self._csr(x2, values),
                )
        if self.use_bias:
            y = y + tf.cast(tf.convert_to_tensor(self.bias), y.dtype)
        if self.activation is not None:
            y = self.activation(y)
        return tf.reshape(y, tf.concat([outer, [self.units]], axis=0))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update({
            "units": self.units,
            "input_dim": self.input_dim,
            "nnz": self.nnz,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kind": self.kind,
        })
        return config


def is_convertible(layer) -> bool:
    """True if ``layer`` can be executed as :class:`SparseDense`.

    That is a built, unquantized ``keras.layers.Dense`` or ``keras.layers.Conv2D`` with a
    1x1 kernel, strides 1, 'channels_last' data format and ``groups == 1`` (padding and
    dilation do not matter for a 1x1 kernel with stride 1).
    """
    if getattr(layer, "quantization_mode", None) is not None or not layer.built:
        return False
    if type(layer) is keras.layers.Dense:
        return True
    return (
        type(layer) is keras.layers.Conv2D
        and tuple(layer.kernel_size) == (1, 1)
        and tuple(layer.strides) == (1, 1)
        and layer.data_format == "channels_last"
        and layer.groups == 1
    )


def kernel_sparsity(layer) -> float:
    """Fraction of exact zeros in a layer's kernel."""
    kernel = np.asarray(keras.ops.convert_to_numpy(layer.kernel))
    return 1.0 - np.count_nonzero(kernel) / kernel.size


def to_sparse_inference(model, min_sparsity: float = 0.95, kind: str = "auto"):
    """Returns a copy of ``model`` that runs sparse enough layers with sparse kernels.

    SparseWrappers are stripped first (masked weights are exact zeros). Every layer for
    which :func:`is_convertible` holds and whose kernel has at least ``min_sparsity`` exact
    zeros becomes a :class:`SparseDense` with the same name; every other layer is copied
    with its weights. The copy computes the same function (up to float summation order)
    and has no trainable weights in the converted layers.

    Args:
      model: a Keras 3 Sequential or functional model, sparse or plain.
      min_sparsity: convert layers whose kernel sparsity is >= this, in [0, 1]. On CPU
        sparse kernels pay off only at high sparsity: on 2 x86 cores (TF 2.21) the sparse
        path beat dense at batch 1 from 90% sparsity and at batch 64 only from ~98%
        (``tools/bench_inference.py``); the default 0.95 wins ~2x at batch 1 and is about
        even at batch 64.
      kind: sparse kernel of the converted layers: 'auto', 'coo' or 'csr'.

    Returns:
      A new Keras model (``model.predict`` and ``model(x)`` work as usual). Its converted
      layers are listed by :func:`sparse_layers`.

    Raises:
      ValueError: for ``min_sparsity`` outside [0, 1] or an unknown ``kind``.
      TypeError: for a non-Keras-3 or subclassed model.
    """
    model_ops.check_keras3_model(model)
    if isinstance(min_sparsity, bool) or not isinstance(min_sparsity, (int, float)) or not (
        0.0 <= min_sparsity <= 1.0
    ):
        raise ValueError(f"`min_sparsity` must be a number in [0, 1], got {min_sparsity!r}.")
    _check_kind(kind)
    if not (isinstance(model, keras.Sequential) or type(model).__name__ == "Functional"
            or getattr(model, "_is_graph_network", False)):
        raise TypeError(
            f"`model` {model.name!r} is a subclassed model ({type(model).__name__}); "
            f"to_sparse_inference clones Sequential and functional models only. Replace its "
            f"layers with rigl_tf.inference.SparseDense.from_layer(...) yourself."
        )
    plain = model_ops.strip(model) if model_ops.wrappers(model) else model
    copies = []

    def clone_fn(layer):
        if is_convertible(layer) and kernel_sparsity(layer) >= min_sparsity:
            return SparseDense.from_layer(layer, kind=kind)
        new = layer.__class__.from_config(layer.get_config())
        copies.append((layer, new))
        return new

    sparse = keras.models.clone_model(plain, clone_function=clone_fn, recursive=True)
    for old, new in copies:
        if old.weights:
            new.set_weights(old.get_weights())
    return sparse


def sparse_layers(model):
    """The :class:`SparseDense` layers of a model (nested models included), in layer order."""
    return [layer for layer in model_ops.iter_layers(model) if isinstance(layer, SparseDense)]
