"""SparseWrapper: a Keras 3 layer wrapper that owns one binary mask per prunable weight.

Masked weights are stored as exact zeros in the wrapped layer's own variables, so the
forward pass is the layer's own computation (no extra multiply) and the gradient with
respect to a kernel is dense: exactly what RigL needs to score inactive connections.
Keeping them zero is the job of whoever changes weights: ``SparseOptimizer`` masks
gradients (re-applying masks where its inner optimizer needs it), ``set_masks`` zeroes
weights it prunes.

Which weights are prunable is decided by a registry from layer class to
:class:`PrunableWeight` specs. A custom layer declares its own in one of two ways::

    class MyLayer(keras.layers.Layer):
        # (attribute, input-unit axes, output-unit axes)
        prunable_weights_spec = [("w", (0,), (1,))]

or ``rigl_tf.register_prunable_layer(MyLayer, [PrunableWeight("w", (0,), (1,))])``.
The axes tell the sparsity-aware initializer which entries share a unit (fan-in/fan-out).
"""

import dataclasses
import string
from typing import Dict, List, Sequence, Tuple

import keras
import numpy as np

from rigl_tf.sparsity import patterns as patterns_lib

_MASK_ATTR = "_rigl_mask"
_SPEC_ATTR = "_rigl_spec"
_KEY_ATTR = "_rigl_key"
_PATTERN_ATTR = "_rigl_pattern"


@dataclasses.dataclass(frozen=True)
class PrunableWeight:
    """A prunable weight of a layer.

    Attributes:
      attr: the layer attribute holding the variable (e.g. 'kernel').
      in_axes: axes of the weight that index input units.
      out_axes: axes of the weight that index output units.
    """

    attr: str
    in_axes: Tuple[int, ...] = (-2,)
    out_axes: Tuple[int, ...] = (-1,)


_L = keras.layers
_DENSE = [PrunableWeight("kernel", (0,), (1,))]
_CONV = [PrunableWeight("kernel", (-2,), (-1,))]
_CONV_T = [PrunableWeight("kernel", (-1,), (-2,))]  # kernel is [..., out, in]
_DEPTHWISE = [PrunableWeight("kernel", (-2,), (-2, -1))]
_SEPARABLE = [
    PrunableWeight("depthwise_kernel", (-2,), (-2, -1)),
    PrunableWeight("pointwise_kernel", (-2,), (-1,)),
]

_REGISTRY: Dict[type, object] = {
    _L.Dense: _DENSE,
    _L.Conv1D: _CONV,
    _L.Conv2D: _CONV,
    _L.Conv3D: _CONV,
    _L.Conv1DTranspose: _CONV_T,
    _L.Conv2DTranspose: _CONV_T,
    _L.Conv3DTranspose: _CONV_T,
    _L.DepthwiseConv1D: _DEPTHWISE,
    _L.DepthwiseConv2D: _DEPTHWISE,
    _L.SeparableConv1D: _SEPARABLE,
    _L.SeparableConv2D: _SEPARABLE,
    _L.Embedding: [PrunableWeight("embeddings", (0,), (1,))],
}


def _einsum_spec(layer) -> List[PrunableWeight]:
    """EinsumDense: kernel axes that appear in the output index output units."""
    equation = layer.equation.replace(" ", "")
    inputs, output = equation.split("->")
    kernel = inputs.split(",")[1]
    letters = [c for c in kernel if c in string.ascii_letters]
    out_axes = tuple(i for i, c in enumerate(letters) if c in output)
    in_axes = tuple(i for i, c in enumerate(letters) if c not in output)
    return [PrunableWeight("kernel", in_axes or (0,), out_axes or (len(letters) - 1,))]


_REGISTRY[_L.EinsumDense] = _einsum_spec


def register_prunable_layer(layer_class, weights: Sequence[PrunableWeight]):
    """Declares the prunable weights of a layer class (and its subclasses).

    Args:
      layer_class: a ``keras.layers.Layer`` subclass.
      weights: list of :class:`PrunableWeight`.
    """
    if not (isinstance(layer_class, type) and issubclass(layer_class, keras.layers.Layer)):
        raise TypeError(
            f"`layer_class` must be a keras.layers.Layer subclass, got {layer_class!r}."
        )
    _REGISTRY[layer_class] = [
        w if isinstance(w, PrunableWeight) else PrunableWeight(*w) for w in weights
    ]


def prunable_spec(layer) -> List[PrunableWeight]:
    """Returns the prunable weight specs of ``layer`` ([] if it has none)."""
    declared = getattr(layer, "prunable_weights_spec", None)
    if declared is not None:
        return [w if isinstance(w, PrunableWeight) else PrunableWeight(*w) for w in declared]
    for cls in type(layer).__mro__:
        if cls in _REGISTRY:
            spec = _REGISTRY[cls]
            return spec(layer) if callable(spec) else list(spec)
    return []


def is_prunable(layer) -> bool:
    """True if ``layer`` has at least one prunable weight."""
    return bool(prunable_spec(layer))


def supported_layer_types() -> List[str]:
    """Names of the layer classes with registered prunable weights."""
    return sorted(cls.__name__ for cls in _REGISTRY)


def get_mask(variable):
    """Returns the mask variable paired with a weight variable, or None if it has none."""
    return getattr(variable, _MASK_ATTR, None)


def get_key(variable):
    """Returns the 'layer/attr' key of a masked weight variable (its path otherwise)."""
    return getattr(variable, _KEY_ATTR, variable.path)


def get_pattern(variable):
    """Returns the structured-sparsity pattern of a masked weight (unstructured default)."""
    return getattr(variable, _PATTERN_ATTR, patterns_lib.UNSTRUCTURED)


def pattern_axes(variable):
    """(input axis, output axis) used by patterns: the last of each unit-axis tuple."""
    in_axes, out_axes = get_unit_axes(variable)
    return in_axes[-1], out_axes[-1]


def get_unit_axes(variable):
    """Returns the (in_axes, out_axes) of a masked weight variable."""
    return getattr(variable, _SPEC_ATTR, ((-2,), (-1,)))


@keras.saving.register_keras_serializable(package="rigl_tf")
class SparseWrapper(keras.layers.Wrapper):
    """Wraps a layer and holds a non-trainable 0/1 mask for each of its prunable weights.

    The mask has the weight's shape and dtype, starts as all ones, and is saved with the
    layer (``.keras`` files and ``tf.train.Checkpoint``). Use ``rigl_tf.sparsify`` to wrap a
    whole model; wrap layers directly in a subclassed model's ``__init__``.

    Args:
      layer: the layer to wrap; must have prunable weights (see ``prunable_spec``).
      pattern: structured sparsity of its masks: 'unstructured' (default), 'N:M' (e.g.
        '2:4' along the input axis) or 'block:RxC' (see ``rigl_tf.sparsity.patterns``).
      **kwargs: Keras layer arguments (e.g. ``name``; defaults to 'sparse_' + layer name).

    Raises:
      TypeError: if ``layer`` is not a Keras 3 layer or has no prunable weight.
      ValueError: for an unknown pattern, or (at build) one that does not divide a weight.
    """

    def __init__(self, layer, pattern=None, **kwargs):
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(
                f"SparseWrapper `layer` must be a Keras 3 layer, got {type(layer).__name__}."
            )
        spec = prunable_spec(layer)
        if not spec:
            raise TypeError(
                f"SparseWrapper `layer` {layer.name!r} ({type(layer).__name__}) has no "
                f"prunable weights. Supported layer types: {', '.join(supported_layer_types())}; "
                f"custom layers declare `prunable_weights_spec` or use "
                f"rigl_tf.register_prunable_layer."
            )
        kwargs.setdefault("name", f"sparse_{layer.name}")
        self.pattern = patterns_lib.get_pattern(pattern)
        super().__init__(layer, **kwargs)
        self.spec = spec
        self.supports_masking = getattr(layer, "supports_masking", False)
        self.masks = []

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
            self.layer.built = True
        masks = []
        for item in self.spec:
            weight = getattr(self.layer, item.attr, None)
            if weight is None:
                raise ValueError(
                    f"Layer {self.layer.name!r} has no weight attribute {item.attr!r} after "
                    f"build; fix its prunable weight spec."
                )
            key = f"{self.layer.name}/{item.attr}"
            self.pattern.validate(tuple(weight.shape), item.in_axes[-1], item.out_axes[-1], key)
            mask = self.add_weight(
                name=f"{item.attr}_mask",
                shape=tuple(weight.shape),
                dtype=weight.dtype,
                initializer="ones",
                trainable=False,
                aggregation="only_first_replica",
            )
            # Assigning to an attribute is what makes tf.train.Checkpoint track it.
            setattr(self, f"{item.attr}_mask", mask)
            setattr(weight, _MASK_ATTR, mask)
            setattr(weight, _SPEC_ATTR, (tuple(item.in_axes), tuple(item.out_axes)))
            setattr(weight, _KEY_ATTR, key)
            setattr(weight, _PATTERN_ATTR, self.pattern)
            masks.append(mask)
        self.masks = masks
        self.built = True

    def load_own_variables(self, store):
        """Loads the masks (from a ``.keras`` file) and checks they are exactly 0/1."""
        super().load_own_variables(store)
        for mask in self.masks:
            value = np.asarray(keras.ops.convert_to_numpy(mask))
            bad = value[(value != 0) & (value != 1)]
            if bad.size:
                raise ValueError(
                    f"The saved mask {mask.path!r} of layer {self.layer.name!r} must contain "
                    f"only 0 and 1, got {bad.size} other values (e.g. {float(bad.flat[0])!r}); "
                    f"the file is damaged or was not written by rigl_tf.")

    def get_config(self):
        config = super().get_config()
        if self.pattern.kind != "unstructured":
            config["pattern"] = self.pattern.spec
        return config

    def call(self, inputs, training=None):
        return self.layer(inputs, training=training)

    def compute_mask(self, inputs, mask=None):
        return self.layer.compute_mask(inputs, mask)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def compute_output_spec(self, *args, **kwargs):
        return self.layer.compute_output_spec(*args, **kwargs)

    @property
    def prunable_weights(self):
        """The wrapped layer's prunable variables, in spec order."""
        return [getattr(self.layer, item.attr) for item in self.spec]

    def masked_weights(self):
        """List of (key, weight, mask) for this layer; key is 'layer_name/attr'."""
        return [
            (f"{self.layer.name}/{item.attr}", getattr(self.layer, item.attr), mask)
            for item, mask in zip(self.spec, self.masks)
        ]

    def apply_masks(self):
        """Sets masked-out entries of every prunable weight to exactly zero."""
        for _, weight, mask in self.masked_weights():
            weight.assign(weight * mask)
