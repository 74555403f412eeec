"""Whole-model operations: sparsify, strip, masks in and out, initialization, reports.

Keys: every prunable weight is addressed as ``'<layer name>/<attribute>'`` (e.g.
``'conv2d/kernel'``, ``'sep/pointwise_kernel'``), where the layer name is the user's layer
name (the wrapper is named ``'sparse_<name>'``). Where a map is keyed by layer, a plain
layer name stands for all prunable weights of that layer.
"""

import warnings
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import keras
import numpy as np
import tensorflow as tf

from rigl_tf.keras.wrapper import (
    SparseWrapper,
    get_pattern,
    get_unit_axes,
    is_prunable,
    pattern_axes,
    supported_layer_types,
)
from rigl_tf.sparsity import distributions as dist_lib
from rigl_tf.sparsity import init as init_lib
from rigl_tf.sparsity import masks as masks_lib
from rigl_tf.sparsity import patterns as patterns_lib

KeepDense = Union[None, str, type, Callable, Sequence]


def check_keras3_model(model, name="model"):
    """Raises TypeError unless ``model`` is a Keras 3 model.

    Args:
      model: the object to check.
      name: the parameter name in the message.
    """
    if isinstance(model, keras.Model):
        return
    module = type(model).__module__ or ""
    if module.startswith("tf_keras") or module.startswith("tensorflow.python.keras") or (
        module.startswith("keras.") and not module.startswith("keras.src")
    ):
        raise TypeError(
            f"`{name}` is a Keras 2 (tf_keras) model ({type(model).__name__} from {module}); "
            f"rigl_tf works on Keras 3 models. Convert it, or use rigl_tf.interop.tfmot for "
            f"tf_keras / tensorflow-model-optimization models."
        )
    raise TypeError(
        f"`{name}` must be a Keras 3 keras.Model, got {type(model).__name__} ({module})."
    )


def iter_layers(model) -> Iterable:
    """Yields every layer of a model, descending into nested models (not into wrappers)."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from iter_layers(layer)


def wrappers(model) -> List[SparseWrapper]:
    """All SparseWrappers of a model (nested models included), in layer order."""
    return [layer for layer in iter_layers(model) if isinstance(layer, SparseWrapper)]


def masked_weights(model) -> List[Tuple[str, object, object]]:
    """List of (key, weight variable, mask variable) for every masked weight of ``model``."""
    out = []
    for wrapper in wrappers(model):
        out.extend(wrapper.masked_weights())
    return out


def _require_sparse(model, name="model"):
    check_keras3_model(model, name)
    items = masked_weights(model)
    if not items:
        raise ValueError(
            f"`{name}` has no SparseWrapper layers; call rigl_tf.sparsify(model, ...) first "
            f"(or wrap layers of a subclassed model with rigl_tf.SparseWrapper)."
        )
    return items


def _matches(layer, keep_dense) -> bool:
    if keep_dense is None:
        return False
    if isinstance(keep_dense, str):
        return layer.name == keep_dense
    if isinstance(keep_dense, type):
        return isinstance(layer, keep_dense)
    if callable(keep_dense):
        return bool(keep_dense(layer))
    return any(_matches(layer, item) for item in keep_dense)


def _keep_dense_names(keep_dense) -> List[str]:
    if isinstance(keep_dense, str):
        return [keep_dense]
    if isinstance(keep_dense, (list, tuple, set)):
        return [n for item in keep_dense for n in _keep_dense_names(item)]
    return []


def _expand_layer_map(name: str, mapping: Optional[Mapping], keys: Sequence[str]):
    """Expands a map keyed by layer name or 'layer/attr' to 'layer/attr' keys."""
    if not mapping:
        return {}
    out = {}
    for k, v in mapping.items():
        hits = [key for key in keys if key == k or key.split("/")[0] == k]
        if not hits:
            layers = sorted({key.split("/")[0] for key in keys})
            raise ValueError(
                f"`{name}` names {k!r}, which is not a prunable (wrapped) layer or weight of "
                f"the model; prunable layers are: {layers}."
            )
        for key in hits:
            out[key] = v
    return out


def sparsify(
    model,
    sparsity: float = 0.9,
    distribution: str = "erk",
    *,
    keep_dense: KeepDense = None,
    custom_sparsity: Optional[Mapping[str, float]] = None,
    masks: Optional[Mapping[str, np.ndarray]] = None,
    init: str = "dense",
    init_method: str = "fanavg_uniform",
    init_scale: float = 1.0,
    seed: int = 0,
    min_active: int = 1,
    erk_power_scale: float = 1.0,
    pattern=None,
):
    """Returns a sparse copy of a Sequential or functional model.

    Every layer with prunable weights (see ``rigl_tf.SparseWrapper``) is wrapped, except
    those selected by ``keep_dense``. The copy starts from the model's current weights,
    gets masks with exactly ``round(density * size)`` ones per weight, and is initialized
    with ``init``. Subclassed models cannot be cloned: wrap their layers with
    ``SparseWrapper`` in ``__init__`` and call :func:`init_masks` and :func:`initialize`.

    Args:
      model: a Keras 3 Sequential or functional model (nested models included).
      sparsity: overall sparsity of the prunable weights, in [0, 1).
      distribution: 'erk', 'er', 'uniform' or 'global' (see ``rigl_tf.sparsity``).
      keep_dense: layers not to wrap: a layer name, a layer class, a predicate
        ``fn(layer) -> bool``, or a list of those.
      custom_sparsity: per-layer (or 'layer/attr') sparsity overriding the distribution.
      masks: optional initial masks keyed 'layer/attr' (e.g. from another run); weights
        not listed get random masks from the distribution.
      init: 'dense' (current weights, masked), 'layer_scaled' or 'unit_scaled'.
      init_method: unit_scaled method ('fanin_normal', 'fanout_uniform', ...).
      init_scale: unit_scaled variance numerator (1: Glorot-like, 2: He-like).
      seed: seed for random masks and initialization (stateless; same seed, same model).
      min_active: minimum active weights per layer (0 allows disconnecting a layer).
      erk_power_scale: exponent of the ERK raw probabilities (ERK only, as in the reference).
      pattern: structured sparsity for the wrapped layers: 'unstructured' (default),
        'N:M' (e.g. '2:4'; fixes those weights' density at N/M) or 'block:RxC'; or a map
        from layer name to pattern (other layers unstructured).

    Returns:
      A new Keras model whose prunable layers are SparseWrappers.

    Raises:
      TypeError: for a non-Keras-3 or subclassed model.
      ValueError: for bad sparsity, names, masks, or a model without prunable layers.
    """
    check_keras3_model(model)
    dist_lib.check_sparsity(sparsity)
    if distribution not in dist_lib.DISTRIBUTIONS:
        dist_lib.get_densities({}, sparsity, distribution)  # raises the standard message
    init_lib.check_initializer(init)
    if init == "unit_scaled":
        init_lib.check_method(init_method)
    if not (isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False)
            or type(model).__name__ == "Functional"):
        raise TypeError(
            f"`model` {model.name!r} is a subclassed model ({type(model).__name__}); sparsify "
            f"clones Sequential and functional models only. Wrap the layers of a subclassed "
            f"model with rigl_tf.SparseWrapper in its __init__, then call "
            f"rigl_tf.init_masks(model, ...) and rigl_tf.initialize(model, ...)."
        )
    all_names = {layer.name for layer in iter_layers(model)}
    if isinstance(pattern, Mapping):
        patterns = {k: patterns_lib.get_pattern(v) for k, v in pattern.items()}
        unknown = sorted(set(patterns) - all_names)
        if unknown:
            raise ValueError(
                f"`pattern` names layers that are not in the model: {unknown}; layers are: "
                f"{sorted(all_names)}."
            )
    else:
        default_pattern = patterns_lib.get_pattern(pattern)
        patterns = {}
    for name in _keep_dense_names(keep_dense):
        if name not in all_names:
            raise ValueError(
                f"`keep_dense` names layer {name!r}, which is not in the model; layers are: "
                f"{sorted(all_names)}."
            )
    if not any(is_prunable(layer) and not _matches(layer, keep_dense)
               for layer in iter_layers(model)):
        raise ValueError(
            f"`model` {model.name!r} has no prunable layer left to sparsify (supported types: "
            f"{', '.join(supported_layer_types())}; keep_dense={keep_dense!r})."
        )

    pairs = []

    def clone_fn(layer):
        new = layer.__class__.from_config(layer.get_config())
        pairs.append((layer, new))
        if is_prunable(layer) and not _matches(layer, keep_dense):
            layer_pattern = patterns.get(layer.name) if isinstance(pattern, Mapping) else (
                default_pattern)
            return SparseWrapper(new, pattern=layer_pattern)
        return new

    sparse = keras.models.clone_model(model, clone_function=clone_fn, recursive=True)
    for old, new in pairs:
        if old.weights:
            new.set_weights(old.get_weights())
    try:
        init_masks(
            sparse,
            sparsity,
            distribution,
            custom_sparsity=custom_sparsity,
            masks=masks,
            seed=seed,
            min_active=min_active,
            erk_power_scale=erk_power_scale,
        )
        initialize(sparse, init, method=init_method, scale=init_scale, seed=seed)
    except Exception:
        del sparse
        raise
    return sparse


def init_masks(
    model,
    sparsity: float,
    distribution: str = "erk",
    *,
    custom_sparsity: Optional[Mapping[str, float]] = None,
    masks: Optional[Mapping[str, np.ndarray]] = None,
    seed: int = 0,
    min_active: int = 1,
    erk_power_scale: float = 1.0,
) -> Dict[str, int]:
    """Sets random (stateless, seeded) masks with exact counts on an already wrapped model.

    Args:
      model: a model with SparseWrappers.
      sparsity, distribution, custom_sparsity, seed, min_active, erk_power_scale: see
        :func:`sparsify`.
      masks: masks to use as given for some or all weights (keyed 'layer/attr').

    Returns:
      The number of active weights per key.
    """
    items = _require_sparse(model)
    keys = [k for k, _, _ in items]
    shapes = {k: tuple(w.shape) for k, w, _ in items}
    custom = _expand_layer_map("custom_sparsity", custom_sparsity, keys)
    given = _expand_layer_map("masks", masks, keys)
    densities = dist_lib.get_densities(shapes, sparsity, distribution, custom, erk_power_scale)
    counts = dist_lib.get_counts(shapes, densities, min_active)
    weights = {k: w for k, w, _ in items}
    structured = {k for k in keys if get_pattern(weights[k]).kind != "unstructured"}
    if structured and distribution == "global":
        raise ValueError(
            f"`distribution` 'global' cannot be combined with structured patterns "
            f"(weights {sorted(structured)}); use a layerwise distribution."
        )
    new_masks = {}
    for index, key in enumerate(keys):
        if key in structured and key not in given:
            pat = get_pattern(weights[key])
            in_axis, out_axis = pattern_axes(weights[key])
            density = patterns_lib.pattern_density(pat, densities[key])
            k = pat.count(shapes[key], density, min_active)
            scores = masks_lib.random_scores(shapes[key], seed, 0, index)
            new_masks[key] = pat.select(scores, k, in_axis, out_axis).numpy()
    if distribution == "global":
        free = [k for k in keys if k not in custom and k not in given]
        total = dist_lib.num_active(
            1.0 - sparsity, sum(int(np.prod(shapes[k])) for k in free), min_active
        )
        scores = [masks_lib.random_scores(shapes[k], seed, 0, keys.index(k)) for k in free]
        if free:
            for k, m in zip(free, masks_lib.global_topk_masks(scores, total)):
                new_masks[k] = m.numpy()
    for index, key in enumerate(keys):
        if key in given or key in new_masks:
            continue
        new_masks[key] = masks_lib.random_mask(shapes[key], counts[key], seed, index).numpy()
    new_masks.update(given)
    set_masks(model, new_masks)
    return {k: int(np.sum(v)) for k, v in get_masks(model).items()}


def initialize(model, init: str = "unit_scaled", *, method: str = "fanavg_uniform",
               scale: float = 1.0, seed: int = 0):
    """(Re-)initializes every masked weight under its current mask.

    Args:
      model: a model with SparseWrappers.
      init: 'dense' (keep current values, masked), 'layer_scaled' (current values divided by
        sqrt(layer density); use on a freshly initialized model) or 'unit_scaled' (the
        gradient-flow paper's per-unit variance ``scale / fan``).
      method: unit_scaled fan and distribution, e.g. 'fanin_normal', 'fanavg_uniform'.
      scale: unit_scaled variance numerator.
      seed: stateless RNG seed (weight i uses its own stream).
    """
    items = _require_sparse(model)
    init_lib.check_initializer(init)
    if init == "unit_scaled":
        init_lib.check_method(method)
    for index, (_, weight, mask) in enumerate(items):
        in_axes, out_axes = get_unit_axes(weight)
        values = init_lib.sparse_initialize(
            init, mask, weight, in_axes, out_axes, method, scale, seed, index
        )
        weight.assign(tf.cast(values, weight.dtype))


def get_masks(model) -> Dict[str, np.ndarray]:
    """Returns the masks of a sparse model as numpy arrays keyed 'layer/attr'."""
    return {k: np.asarray(m.numpy()) for k, _, m in _require_sparse(model)}


def set_masks(model, masks: Mapping[str, np.ndarray], apply: bool = True):
    """Sets masks (keyed 'layer/attr' or by layer name for single-weight layers).

    Args:
      model: a model with SparseWrappers.
      masks: map to 0/1 arrays of the weights' shapes. Keys not given keep their masks.
      apply: also zero the weights where the new masks are zero. With False, call
        ``apply_masks`` before training on: a ``SparseOptimizer`` whose inner optimizer
        keeps zeros re-applies masks only at step 0 and after topology updates.

    Every built ``SparseOptimizer`` resets its slots where the new masks are zero.

    Raises:
      ValueError: for unknown keys, wrong shapes or non-binary values. Nothing is changed
        unless every mask is valid.
    """
    items = _require_sparse(model)
    keys = [k for k, _, _ in items]
    expanded = _expand_layer_map("masks", masks, keys)
    by_key = {k: (w, m) for k, w, m in items}
    checked = {}
    for key, value in expanded.items():
        value = np.asarray(value)
        weight, mask = by_key[key]
        if tuple(value.shape) != tuple(mask.shape):
            raise ValueError(
                f"`masks[{key!r}]` has shape {tuple(value.shape)}, expected "
                f"{tuple(mask.shape)} (the shape of {key})."
            )
        if not np.all((value == 0) | (value == 1)):
            raise ValueError(f"`masks[{key!r}]` must contain only 0 and 1.")
        checked[key] = value
    for key, value in checked.items():
        weight, mask = by_key[key]
        mask.assign(value.astype(mask.dtype))
        if apply:
            weight.assign(weight * mask)
    _masks_changed([by_key[key][1] for key in checked])


def apply_masks(model):
    """Zeroes every masked-out weight of ``model`` (exact zeros) and the optimizer slots
    there (of every built ``SparseOptimizer``)."""
    items = _require_sparse(model)
    for _, weight, mask in items:
        weight.assign(weight * mask)
    _masks_changed([mask for _, _, mask in items])


def _masks_changed(masks):
    from rigl_tf.keras.built import masks_changed

    masks_changed(masks)


def strip(model):
    """Returns a plain Keras model with the same architecture and weights, wrappers removed.

    The masked weights are already exact zeros, so the stripped model's outputs are
    identical to the sparse model's. ``model`` itself is not changed.

    Compilation: an uncompiled ``model`` gives an uncompiled copy. A compiled one gives a
    copy compiled with the same loss, metrics and other compile arguments; its optimizer
    is a fresh instance of the same configuration (fresh slots, step 0), and where
    ``model`` was compiled with a :class:`rigl_tf.SparseOptimizer` (or another wrapper
    with an ``inner_optimizer``) it is the *inner* optimizer, e.g. the plain SGD: a
    stripped model has no masks for a sparse optimizer to update.

    Args:
      model: a Keras 3 Sequential or functional model.

    Returns:
      The plain model.
    """
    check_keras3_model(model)
    pairs = []

    def clone_fn(layer):
        source = layer.layer if isinstance(layer, SparseWrapper) else layer
        new = source.__class__.from_config(source.get_config())
        pairs.append((source, new))
        return new

    compile_config = model.get_compile_config() if model.compiled else None
    # clone_model re-compiles the clone from the compile config, which would build a
    # SparseOptimizer on a model without masks; clone uncompiled and compile below.
    model.compiled = False
    try:
        plain = keras.models.clone_model(model, clone_function=clone_fn, recursive=True)
    finally:
        model.compiled = compile_config is not None
    for old, new in pairs:
        if old.weights:
            new.set_weights(old.get_weights())
    if compile_config is not None:
        optimizer = model.optimizer
        while hasattr(optimizer, "inner_optimizer"):
            optimizer = optimizer.inner_optimizer
        compile_config = dict(compile_config)
        compile_config["optimizer"] = keras.optimizers.serialize(optimizer)
        plain.compile_from_config(compile_config)
    return plain


class SparsityReport:
    """Per-weight and total sparsity of a model; ``str(report)`` is a table.

    Attributes:
      rows: list of dicts with keys name, shape, size, active (mask ones), nonzero (weight
        entries != 0), sparsity (1 - active / size).
      total: dict with size, active, nonzero, sparsity over all rows.
    """

    def __init__(self, rows):
        self.rows = rows
        size = sum(r["size"] for r in rows)
        active = sum(r["active"] for r in rows)
        nonzero = sum(r["nonzero"] for r in rows)
        self.total = {
            "size": size,
            "active": active,
            "nonzero": nonzero,
            "sparsity": 1.0 - active / size if size else 0.0,
        }

    def as_dict(self):
        """A JSON-serialisable dict."""
        return {"layers": self.rows, "total": self.total}

    def __str__(self):
        head = f"{'weight':<40} {'shape':<20} {'size':>10} {'active':>10} {'nonzero':>10} {'sparsity':>9}"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            lines.append(
                f"{r['name']:<40} {str(tuple(r['shape'])):<20} {r['size']:>10} "
                f"{r['active']:>10} {r['nonzero']:>10} {r['sparsity']:>9.4f}"
            )
        t = self.total
        lines.append("-" * len(head))
        lines.append(
            f"{'total':<40} {'':<20} {t['size']:>10} {t['active']:>10} {t['nonzero']:>10} "
            f"{t['sparsity']:>9.4f}"
        )
        return "\n".join(lines)

    __repr__ = __str__


def sparsity_report(model, include_dense: bool = False) -> SparsityReport:
    """Reports per-weight size, active count, non-zeros and sparsity.

    Args:
      model: a Keras 3 model (sparse or not).
      include_dense: also list the trainable weights that have no mask (biases, BN, layers
        kept dense), counted as fully active.
    """
    check_keras3_model(model)
    rows = []
    masked = set()
    for key, weight, mask in masked_weights(model):
        m = mask.numpy()
        rows.append(_row(key, weight.numpy(), int(m.sum())))
        masked.add(id(weight))
    if include_dense:
        for weight in model.trainable_weights:
            if id(weight) not in masked:
                w = weight.numpy()
                rows.append(_row(weight.path, w, int(w.size)))
    return SparsityReport(rows)


def _row(name, value, active):
    size = int(value.size)
    return {
        "name": name,
        "shape": list(value.shape),
        "size": size,
        "active": active,
        "nonzero": int(np.count_nonzero(value)),
        "sparsity": 1.0 - active / size if size else 0.0,
    }


def warn_if_disconnected(model):
    """Warns for every masked weight with no active entry."""
    for key, _, mask in masked_weights(model):
        if float(tf.reduce_sum(mask)) == 0.0:
            warnings.warn(f"Weight {key!r} has no active connections.", stacklevel=2)
