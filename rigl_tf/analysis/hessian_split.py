"""Exact Hessians of piecewise-linear chain networks through the Gauss-Newton / residual split.

For a mean loss L = 1/N sum_n l(f_n(theta), y_n) over logits f_n (K of them),

    H = 1/N sum_n [ J_n^T A_n J_n + sum_k g_nk d^2 f_nk / d theta^2 ] = G + R,

with J_n the (K, P) Jacobian of the logits, A_n = d^2 l / df^2 (diag(p) - p p^T for softmax
cross-entropy) and g_n = dl/df. Nothing is dropped: G is the Gauss-Newton matrix and R the
residual, and both are computed exactly. R is the Hessian of F(theta) = sum_n g_n . f_n(theta)
with g held fixed.

Structure used (a.e., i.e. away from ReLU kinks and max-pool ties; autodiff uses the same
convention: the derivative of ReLU is 0 or 1, its second derivative 0). Let layer l compute
z_l = A_l(a_{l-1}) W_l + b_l, where A_l takes patches (convolution) or is a reshape (dense),
followed only by ReLU / max-pool / linear ops up to the next parametric layer. Let
delta_l = dF/dz_l; it depends on the parameters of layers after l only (the ReLU and max-pool
patterns are locally constant), and dF/dW_l = A_l^T delta_l, dF/db_l = sum delta_l. Hence:

* R within one layer (W_l, b_l with W_l, b_l) is 0: A_l does not depend on layer l.
* For m < l: R[theta_m, W_l] = sum_n A_l'(theta_m)^T delta_l, where A_l' is the forward
  derivative (JVP) of layer l's input patches in the direction of theta_m.
* For m < l: R[theta_m, b_l] = 0.

So G costs K backward passes per example (the K logits) plus one matrix product, and R needs
forward tangents only from the coordinates of layer m into the later layers, contracted with
the ordinary backprop delta of each later layer; the lower block triangle is the transpose.
For a dense source layer the tangent of coordinate (v, u) is A_m[n, v] times the tangent of
unit u, so one tangent per unit suffices ("unit" mode); convolution sources use one tangent
per coordinate. Everything runs in the model's dtype and is accumulated in float64.

The model must be a chain of (optionally SparseWrapper-wrapped) Dense / Conv2D layers with
ReLU or linear activations, ReLU / max-pooling / average-pooling / flatten / reshape /
dropout layers in between, ending in the logits; `parse_chain` raises `NotSupported` (with the
reason) otherwise, and `rigl_tf.analysis.hessian(method="auto")` then uses the generic
forward-over-reverse products.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from rigl_tf.analysis import _common

# Floats of one tangent's activations times batch size kept per call (~64 MB in float32).
TANGENT_BUDGET = 1 << 24
# Contract tangents with a dense product (then gather) when the layer's size is at most this
# many times its active count.
DENSE_PRODUCT_RATIO = 64


class NotSupported(ValueError):
    """The model is not a piecewise-linear chain the split method handles (message: why)."""


def _unwrap(layer):
    from rigl_tf.keras.wrapper import SparseWrapper

    while isinstance(layer, SparseWrapper):
        layer = layer.layer
    return layer


def _activation_kind(fn, where):
    name = getattr(fn, "__name__", str(fn))
    if name in ("relu", "linear"):
        return name
    raise NotSupported(
        f"{where}: activation {name!r} is not piecewise linear (only relu and linear are)."
    )


@dataclasses.dataclass
class _Param:
    layer: object
    kind: str  # "dense" or "conv"
    activation: str
    kernel_index: int
    bias_index: object  # int or None
    # Filled by the plan: active coordinates.
    q_idx: np.ndarray = None
    o_idx: np.ndarray = None
    flat_idx: np.ndarray = None
    bias_idx: np.ndarray = None
    w_global: np.ndarray = None
    b_global: np.ndarray = None

    @property
    def kernel(self):
        return _common.tf_variable(self.layer.kernel)

    @property
    def bias(self):
        return None if self.bias_index is None else _common.tf_variable(self.layer.bias)

    @property
    def q_size(self):
        return int(np.prod(self.layer.kernel.shape[:-1]))

    @property
    def o_size(self):
        return int(self.layer.kernel.shape[-1])

    def conv_args(self):
        layer = self.layer
        return dict(
            strides=[1, *layer.strides, 1],
            padding=layer.padding.upper(),
            dilations=[1, *layer.dilation_rate, 1],
        )

    def patches(self, a):
        """Input patches (B, positions, Q) of a batch of layer inputs."""
        if self.kind == "dense":
            return tf.reshape(a, [tf.shape(a)[0], -1, self.q_size])
        kh, kw = self.layer.kernel_size
        args = self.conv_args()
        p = tf.image.extract_patches(
            a, sizes=[1, kh, kw, 1], strides=args["strides"], rates=args["dilations"],
            padding=args["padding"],
        )
        return tf.reshape(p, [tf.shape(a)[0], -1, self.q_size])

    def linear(self, a):
        """a -> a W (no bias), for a batch of inputs (leading dims merged)."""
        w = self.kernel
        if self.kind == "dense":
            return tf.tensordot(a, w, axes=[[a.shape.rank - 1], [0]])
        return tf.nn.conv2d(a, w, **self.conv_args())


@dataclasses.dataclass
class _Op:
    """A parameter-free step: 'relu', 'maxpool' or 'linear' (a linear per-example layer)."""

    kind: str
    layer: object = None


def parse_chain(model):
    """The model as a list of `_Param` / `_Op` steps; raises `NotSupported` with the reason."""
    if not isinstance(model, keras.Model):
        raise NotSupported(f"model: expected a keras.Model; got {type(model).__name__}.")
    layers = [lyr for lyr in model.layers if not isinstance(lyr, keras.layers.InputLayer)]
    index_of = {id(v): i for i, v in enumerate(model.trainable_variables)}
    steps, used = [], set()
    for outer in layers:
        layer = _unwrap(outer)
        where = f"layer {outer.name!r}"
        if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D)):
            if isinstance(layer, keras.layers.Conv2D):
                if type(layer) is not keras.layers.Conv2D:
                    raise NotSupported(f"{where}: {type(layer).__name__} is not supported.")
                if layer.data_format != "channels_last" or layer.groups != 1:
                    raise NotSupported(f"{where}: only channels_last, groups=1 convolutions.")
                kind = "conv"
            else:
                if type(layer) is not keras.layers.Dense or getattr(layer, "lora_enabled", False):
                    raise NotSupported(f"{where}: {type(layer).__name__} is not supported.")
                kind = "dense"
            kernel_index = index_of.get(id(layer.kernel))
            bias = layer.bias if layer.use_bias else None
            bias_index = None if bias is None else index_of.get(id(bias))
            if kernel_index is None or (bias is not None and bias_index is None):
                raise NotSupported(f"{where}: its kernel and bias must be trainable.")
            used.update(i for i in (kernel_index, bias_index) if i is not None)
            act = _activation_kind(layer.activation, where)
            steps.append(_Param(layer, kind, act, kernel_index, bias_index))
            if act == "relu":
                steps.append(_Op("relu"))
            continue
        if layer.trainable_variables:
            raise NotSupported(
                f"{where}: {type(layer).__name__} has trainable variables; only Dense and "
                "Conv2D layers may."
            )
        if isinstance(layer, keras.layers.ReLU):
            if (layer.max_value is not None or float(layer.negative_slope) != 0.0
                    or float(layer.threshold) != 0.0):
                raise NotSupported(f"{where}: only the plain ReLU is supported.")
            steps.append(_Op("relu"))
        elif isinstance(layer, keras.layers.Activation):
            if _activation_kind(layer.activation, where) == "relu":
                steps.append(_Op("relu"))
        elif isinstance(layer, keras.layers.MaxPooling2D):
            if layer.data_format != "channels_last":
                raise NotSupported(f"{where}: only channels_last pooling.")
            steps.append(_Op("maxpool", layer))
        elif isinstance(
            layer,
            (keras.layers.Flatten, keras.layers.Reshape, keras.layers.AveragePooling2D,
             keras.layers.Dropout, keras.layers.ZeroPadding2D),
        ):
            steps.append(_Op("linear", layer))
        else:
            raise NotSupported(
                f"{where}: {type(layer).__name__} is not one of the layers the split method "
                "handles (Dense, Conv2D, ReLU, MaxPooling2D, AveragePooling2D, Flatten, "
                "Reshape, Dropout, ZeroPadding2D)."
            )
    if len(used) != len(model.trainable_variables):
        raise NotSupported("model: has trainable variables outside its Dense/Conv2D layers.")
    params = [s for s in steps if isinstance(s, _Param)]
    if not params:
        raise NotSupported("model: has no Dense or Conv2D layer.")
    last = max(i for i, s in enumerate(steps) if isinstance(s, _Param))
    if any(s.kind in ("relu", "maxpool") for s in steps[last + 1:]):
        raise NotSupported("model: the logits must be the output of the last Dense/Conv2D.")
    return steps


def _set_coordinates(steps, coords):
    """Stores each parametric layer's active coordinates (and their global indices)."""
    for s in steps:
        if not isinstance(s, _Param):
            continue
        k = s.kernel_index
        flat = np.asarray(coords.flat_indices[k], np.int64)
        s.flat_idx = flat
        s.q_idx, s.o_idx = flat // s.o_size, flat % s.o_size
        s.w_global = coords.offsets[k] + np.arange(len(flat))
        if s.bias_index is None:
            s.bias_idx = np.zeros(0, np.int64)
            s.b_global = np.zeros(0, np.int64)
        else:
            b = s.bias_index
            s.bias_idx = np.asarray(coords.flat_indices[b], np.int64)
            s.b_global = coords.offsets[b] + np.arange(len(s.bias_idx))


def _pool_args(layer):
    return dict(
        ksize=[1, *layer.pool_size, 1],
        strides=[1, *layer.strides, 1],
        padding=layer.padding.upper(),
    )


class SplitHessian:
    """Accumulates the exact Hessian of a chain model batch by batch (see module docstring).

    Args:
      model: a Keras model accepted by `parse_chain`.
      coords: the `Coordinates` of the result (from `select_coordinates`).
      loss_fn: optional per-example loss `loss_fn(y_true, logits)`.
      chunk_size: the most tangents pushed forward by one call.

    `add(x, y)` adds one batch. `gn` (Gauss-Newton part, full) and `residual` (R, blocks above
    the block diagonal only) are un-normalised float64 sums over `count` examples; `result()`
    is the Hessian of the mean loss.
    """

    def __init__(self, model, coords, loss_fn=None, chunk_size=64):
        self.model = model
        self.coords = coords
        self.steps = parse_chain(model)
        self.params = [s for s in self.steps if isinstance(s, _Param)]
        _set_coordinates(self.steps, coords)
        self.loss_fn = loss_fn
        self.chunk_size = _common.check_positive_int(chunk_size, "chunk_size")
        num = coords.num_params
        self.gn = np.zeros((num, num))
        self.residual = np.zeros((num, num))
        self.count = 0
        self._checked = False
        self._prepare = tf.function(self._prepare_impl, reduce_retracing=True, autograph=False)
        self._source_fns = {}

    # ---- primal pass -------------------------------------------------------------------
    def _forward(self, x, tape):
        """Runs the chain under `tape`; returns (logits, per-step context)."""
        a = tf.convert_to_tensor(x)
        ctx = []
        for s in self.steps:
            if isinstance(s, _Param):
                z = s.linear(a)
                if s.bias is not None:
                    z = z + s.bias
                tape.watch(z)
                ctx.append({"input": a, "z": z})
                a = z
            elif s.kind == "relu":
                mask = tf.cast(a > 0, a.dtype)
                ctx.append({"mask": mask})
                a = a * mask
            elif s.kind == "maxpool":
                args = _pool_args(s.layer)
                _, argmax = tf.nn.max_pool_with_argmax(a, include_batch_in_index=False, **args)
                ctx.append({"argmax": argmax})
                a = tf.nn.max_pool2d(a, **args)
            else:
                ctx.append({})
                a = s.layer(a, training=False)
        return a, ctx

    def _prepare_impl(self, x, y):
        """Per batch: Gauss-Newton part, logits, patches, deltas, op contexts, z shapes.

        The Gauss-Newton part G is J^T (A J) for a custom `loss_fn`; for the default softmax
        cross-entropy it is M^T M:
        A_n = diag(p) - p p^T = L L^T with L = diag(sqrt p) - p sqrt(p)^T (exact, since
        sum p = 1), so M_n = L^T J_n, row k = sqrt(p_k) (J_nk - p^T J_n), and G = M^T M
        needs no per-example curvature matrix.
        """
        with tf.GradientTape(persistent=True) as tape:
            logits, ctx = self._forward(x, tape)
        if logits.shape.rank != 2:
            raise NotSupported(f"model: logits must be (batch, classes); got {logits.shape}.")
        num_classes = logits.shape[-1]
        if self.loss_fn is None:
            prob = tf.nn.softmax(logits)
            labels = tf.cast(tf.reshape(y, [-1]), tf.int32)
            g = prob - tf.one_hot(labels, num_classes, dtype=logits.dtype)
            curvature = None
        else:
            with tf.GradientTape() as outer:
                outer.watch(logits)
                with tf.GradientTape() as inner:
                    inner.watch(logits)
                    total = _common.loss_sum(y, logits, self.loss_fn)
                g = inner.gradient(total, logits)
            curvature = outer.batch_jacobian(g, logits)  # (B, K, K)
        del tape
        param_ctx = [c for s, c in zip(self.steps, ctx) if isinstance(s, _Param)]
        # d f_k / d z_l for every class k in ONE backward pass: the batch repeated K times
        # (row n*K + k carries the cotangent e_k).
        batch = tf.shape(logits)[0]
        with tf.GradientTape() as tiled_tape:
            tiled_logits, tiled_ctx = self._forward(tf.repeat(x, num_classes, axis=0),
                                                    tiled_tape)
        tiled_zs = [c["z"] for s, c in zip(self.steps, tiled_ctx) if isinstance(s, _Param)]
        cot = tf.tile(tf.eye(num_classes, dtype=tiled_logits.dtype), [batch, 1])
        tiled_grads = tiled_tape.gradient(tiled_logits, tiled_zs, output_gradients=cot,
                                          unconnected_gradients=tf.UnconnectedGradients.ZERO)
        parts, patches, deltas_f, zshapes = {}, [], [], []
        for s, c, gr in zip(self.params, param_ctx, tiled_grads):
            o = s.o_size
            zshapes.append(tf.shape(c["z"]))
            dk = tf.reshape(gr, [batch, num_classes, -1, o])  # (B,K,Pp,O)
            a_patch = s.patches(c["input"])  # (B, Pp, Q)
            patches.append(a_patch)
            deltas_f.append(tf.einsum("nk,nkpo->npo", g, dk))
            if len(s.flat_idx):
                if s.q_size * o <= 8 * len(s.flat_idx):
                    full = tf.einsum("npq,nkpo->nkqo", a_patch, dk)
                    jw = tf.gather(tf.reshape(full, [batch, num_classes, -1]), s.flat_idx, axis=2)
                else:
                    ag = tf.gather(a_patch, s.q_idx, axis=2)  # (B, Pp, nnz)
                    dg = tf.gather(dk, s.o_idx, axis=3)  # (B, K, Pp, nnz)
                    jw = tf.einsum("npj,nkpj->nkj", ag, dg)
                parts[s.kernel_index] = jw
            if s.bias_index is not None:
                parts[s.bias_index] = tf.gather(tf.reduce_sum(dk, axis=2), s.bias_idx, axis=2)
        jac = tf.concat([parts[i] for i in sorted(parts)], axis=2)  # (B, K, P)
        width = self.coords.num_params
        if curvature is None:
            mean_row = tf.einsum("nk,nkj->nj", prob, jac)[:, None, :]
            factor = tf.reshape(tf.sqrt(prob)[:, :, None] * (jac - mean_row), [-1, width])
            gn = tf.matmul(factor, factor, transpose_a=True)
        else:
            aj = tf.einsum("nkl,nlj->nkj", curvature, jac)
            gn = tf.matmul(tf.reshape(jac, [-1, width]), tf.reshape(aj, [-1, width]),
                           transpose_a=True)
        contexts = [c for s, c in zip(self.steps, ctx) if not isinstance(s, _Param)]
        return gn, logits, patches, deltas_f, contexts, zshapes

    # ---- tangents ----------------------------------------------------------------------
    def _propagate(self, start, tangent, patches, deltas_f, contexts, zshapes, keep_examples):
        """Pushes tangents of z at param `start` forward; returns rows per later param layer.

        `tangent` is (B, T, ...z shape). For each later parametric layer l the result is the
        contraction sum_p A_l'[n, t, p, q_j] delta_l[n, p, o_j] over its active (q_j, o_j),
        summed over examples (shape (T, nnz_l)) or not (`keep_examples`, (B, T, nnz_l)).
        """
        rows = []
        param_pos = self.params.index(start)
        step_pos = self.steps.index(start)
        op_i = sum(1 for s in self.steps[:step_pos] if not isinstance(s, _Param))
        batch, t_count = tf.shape(tangent)[0], tangent.shape[1]
        for s in self.steps[step_pos + 1:]:
            if isinstance(s, _Param):
                param_pos += 1
                merged = tf.reshape(tangent, tf.concat([[-1], tf.shape(tangent)[2:]], 0))
                rows.append(self._contract(s, merged, deltas_f[param_pos], zshapes[param_pos],
                                           batch, t_count, keep_examples))
                if param_pos == len(self.params) - 1:
                    break
                z = s.linear(merged)
                tangent = tf.reshape(z, tf.concat([[batch, t_count], tf.shape(z)[1:]], 0))
                continue
            c = contexts[op_i]
            op_i += 1
            if s.kind == "relu":
                tangent = tangent * c["mask"][:, None]
            elif s.kind == "maxpool":
                argmax = c["argmax"]
                flat = tf.reshape(tangent, [batch, t_count, -1])
                idx = tf.reshape(argmax, [batch, 1, -1])
                idx = tf.broadcast_to(idx, [batch, t_count, tf.shape(idx)[2]])
                out = tf.gather(flat, idx, batch_dims=2)
                tangent = tf.reshape(out, tf.concat([[batch, t_count], tf.shape(argmax)[1:]], 0))
            else:
                merged = tf.reshape(tangent, tf.concat([[-1], tf.shape(tangent)[2:]], 0))
                out = s.layer(merged, training=False)
                tangent = tf.reshape(out, tf.concat([[batch, t_count], tf.shape(out)[1:]], 0))
        return rows

    def _contract(self, s, merged, delta, zshape, batch, t_count, keep_examples):
        """Rows of R for layer `s`'s active weights from tangents of its input `merged`."""
        nnz = len(s.flat_idx)
        if nnz == 0:
            return tf.zeros([batch, t_count, 0] if keep_examples else [t_count, 0], merged.dtype)
        if s.kind == "conv" and not keep_examples:
            # The weight gradient of every tangent at once: tangents folded into channels.
            sh = tf.shape(merged)
            cin = int(s.layer.kernel.shape[2])
            folded = tf.reshape(merged, [batch, t_count, sh[1], sh[2], cin])
            folded = tf.reshape(tf.transpose(folded, [0, 2, 3, 1, 4]),
                                [batch, sh[1], sh[2], t_count * cin])
            kh, kw = s.layer.kernel_size
            grad = tf.compat.v1.nn.conv2d_backprop_filter(
                folded, [kh, kw, t_count * cin, s.o_size], tf.reshape(delta, zshape),
                **s.conv_args(),
            )
            grad = tf.reshape(grad, [kh, kw, t_count, cin, s.o_size])
            grad = tf.reshape(tf.transpose(grad, [2, 0, 1, 3, 4]), [t_count, -1])
            return tf.gather(grad, s.flat_idx, axis=1)
        a_t = tf.reshape(s.patches(merged), [batch, t_count, -1, s.q_size])  # (B,T,Pp,Q)
        # A dense product and a gather beat gathering first unless the layer is very sparse
        # (measured on CPU); per-example products are kept small.
        if not keep_examples and s.q_size * s.o_size <= DENSE_PRODUCT_RATIO * nnz:
            delta = tf.reshape(delta, [batch, -1, s.o_size])
            full = tf.einsum("ntpq,npo->tqo", a_t, delta)
            return tf.gather(tf.reshape(full, [t_count, -1]), s.flat_idx, axis=1)
        if keep_examples and s.q_size * s.o_size <= 8 * nnz:
            full = tf.einsum("ntpq,npo->ntqo", a_t, delta)
            return tf.gather(tf.reshape(full, [batch, t_count, -1]), s.flat_idx, axis=2)
        ag = tf.gather(a_t, s.q_idx, axis=3)  # (B, T, Pp, nnz)
        dg = tf.gather(delta, s.o_idx, axis=2)  # (B, Pp, nnz)
        if keep_examples:
            return tf.einsum("ntpj,npj->ntj", ag, dg)
        return tf.einsum("ntpj,npj->tj", ag, dg)

    def _source_fn(self, s, unit):
        key = (id(s), unit)
        if key in self._source_fns:
            return self._source_fns[key]
        pos = self.params.index(s)

        def coordinate_fn(patch_m, q, o, is_bias, patches, deltas_f, contexts, zshapes):
            batch = tf.shape(patch_m)[0]
            coef = tf.transpose(tf.gather(patch_m, q, axis=2), [0, 2, 1])  # (B, T, Pp)
            coef = tf.where(is_bias[None, :, None], tf.ones_like(coef), coef)
            hot = tf.one_hot(o, s.o_size, dtype=patch_m.dtype)  # (T, O)
            tangent = coef[..., None] * hot[None, :, None, :]  # (B, T, Pp, O)
            tangent = tf.reshape(tangent, tf.concat([[batch, hot.shape[0]], zshapes[pos][1:]], 0))
            return self._propagate(s, tangent, patches, deltas_f, contexts, zshapes, False)

        def unit_fn(patch_m, units, v_pad, valid, patches, deltas_f, contexts, zshapes):
            batch = tf.shape(patch_m)[0]
            hot = tf.one_hot(units, s.o_size, dtype=patch_m.dtype)  # (T, O)
            tangent = tf.broadcast_to(hot[None], [batch, hot.shape[0], s.o_size])
            per_layer = self._propagate(s, tangent, patches, deltas_f, contexts, zshapes, True)
            a_in = tf.gather(patch_m[:, 0, :], v_pad, axis=1) * valid[None]  # (B, T, S)
            return [(tf.einsum("nts,ntj->tsj", a_in, rows), tf.reduce_sum(rows, 0))
                    for rows in per_layer]

        def channel_fn(patch_m, q, is_bias, channel, patches, deltas_f, contexts, zshapes):
            # Tangents of one output channel stay in that channel through ReLU / pooling, so
            # the next convolution sees one input channel (C times less work).
            batch = tf.shape(patch_m)[0]
            t_count = q.shape[0]
            coef = tf.transpose(tf.gather(patch_m, q, axis=2), [0, 2, 1])  # (B, T, Pp)
            coef = tf.where(is_bias[None, :, None], tf.ones_like(coef), coef)
            spatial = zshapes[pos][1:3]
            tangent = tf.reshape(coef, tf.concat([[batch, t_count], spatial, [1]], 0))
            step_pos = self.steps.index(s)
            op_i = sum(1 for st in self.steps[:step_pos] if not isinstance(st, _Param))
            nxt = self.params[pos + 1]
            for st in self.steps[step_pos + 1:self.steps.index(nxt)]:
                c = contexts[op_i]
                op_i += 1
                if st.kind == "relu":
                    mask = tf.gather(c["mask"], [channel], axis=3)  # (B, H, W, 1)
                    tangent = tangent * mask[:, None]
                elif st.kind == "maxpool":
                    argmax = tf.gather(c["argmax"], channel, axis=3)  # (B, h, w)
                    idx = tf.reshape(argmax // s.o_size, [batch, 1, -1])
                    flat = tf.reshape(tangent, [batch, t_count, -1])
                    idx = tf.broadcast_to(idx, [batch, t_count, tf.shape(idx)[2]])
                    out = tf.gather(flat, idx, batch_dims=2)
                    tangent = tf.reshape(out, tf.concat([[batch, t_count], tf.shape(argmax)[1:],
                                                         [1]], 0))
                else:
                    merged = tf.reshape(tangent, tf.concat([[-1], tf.shape(tangent)[2:]], 0))
                    out = st.layer(merged, training=False)
                    tangent = tf.reshape(out, tf.concat([[batch, t_count], tf.shape(out)[1:]], 0))
            sh = tf.shape(tangent)
            merged = tf.reshape(tangent, [-1, sh[2], sh[3], 1])
            kh, kw = nxt.layer.kernel_size
            rows = []
            if len(nxt.flat_idx):
                folded = tf.transpose(tf.reshape(tangent, [batch, t_count, sh[2], sh[3]]),
                                      [0, 2, 3, 1])
                grad = tf.compat.v1.nn.conv2d_backprop_filter(
                    folded, [kh, kw, t_count, nxt.o_size],
                    tf.reshape(deltas_f[pos + 1], zshapes[pos + 1]), **nxt.conv_args())
                grad = tf.reshape(tf.transpose(grad, [2, 0, 1, 3]), [t_count, -1])
                cin = s.o_size
                idx = tf.constant((nxt.q_idx // cin) * nxt.o_size + nxt.o_idx)
                valid = tf.cast(tf.equal(tf.constant(nxt.q_idx % cin), channel), grad.dtype)
                rows.append(tf.gather(grad, idx, axis=1) * valid[None])
            else:
                rows.append(tf.zeros([t_count, 0], patch_m.dtype))
            if pos + 1 == len(self.params) - 1:
                return rows
            kernel = tf.gather(nxt.kernel, [channel], axis=2)
            z = tf.nn.conv2d(merged, kernel, **nxt.conv_args())
            tangent = tf.reshape(z, tf.concat([[batch, t_count], tf.shape(z)[1:]], 0))
            return rows + self._propagate(nxt, tangent, patches, deltas_f, contexts, zshapes,
                                          False)

        chosen = unit_fn if unit == "unit" else channel_fn if unit == "channel" else coordinate_fn
        fn = tf.function(chosen, reduce_retracing=True, autograph=False)
        self._source_fns[key] = fn
        return fn

    def _channel_mode(self, s):
        """A convolution followed, through per-channel ops only, by another convolution."""
        pos = self.params.index(s)
        if s.kind != "conv" or pos + 1 >= len(self.params) or self.params[pos + 1].kind != "conv":
            return False
        between = self.steps[self.steps.index(s) + 1:self.steps.index(self.params[pos + 1])]
        per_channel = (keras.layers.AveragePooling2D, keras.layers.Dropout,
                       keras.layers.ZeroPadding2D)
        return all(st.kind in ("relu", "maxpool") or isinstance(st.layer, per_channel)
                   for st in between)

    # ---- accumulation ------------------------------------------------------------------
    def add(self, x, y):
        """Adds the exact Hessian sum of one batch `(x, y)`; returns its example count."""
        gn, logits, patches, deltas_f, contexts, zshapes = self._prepare(x, y)
        if not self._checked:
            reference = self.model(x, training=False)
            err = float(tf.reduce_max(tf.abs(tf.cast(reference, logits.dtype) - logits)))
            scale = 1.0 + float(tf.reduce_max(tf.abs(reference)))
            if not np.isfinite(err) or err > 1e-3 * scale:
                raise NotSupported(
                    "model: its output differs from the chain of its layers (max difference "
                    f"{err:.3g}); the split method needs a plain chain of layers."
                )
            self._checked = True
        self.gn += gn.numpy().astype(np.float64)
        batch = int(logits.shape[0])
        for i, s in enumerate(self.params[:-1]):
            later = self.params[i + 1:]
            if not any(len(p.flat_idx) for p in later) or not (len(s.flat_idx) + len(s.bias_idx)):
                continue
            per = max([int(np.prod(zshapes[j].numpy()[1:])) for j in range(i, len(self.params))]
                      + [int(np.prod(patches[j].shape[1:])) for j in range(i + 1, len(self.params))
                         if self.params[j].kind == "dense"])
            chunk = int(max(1, min(self.chunk_size, TANGENT_BUDGET // max(1, batch * per))))
            args = (patches, deltas_f, contexts, zshapes)
            unit = (s.kind == "dense" and patches[i].shape[1] == 1
                    and all(p.kind == "dense" for p in later)
                    and s.o_size < len(s.flat_idx) + len(s.bias_idx))
            if unit:
                self._add_unit(s, patches[i], later, chunk, args)
            elif self._channel_mode(s):
                self._add_channels(s, patches[i], later, chunk, args)
            else:
                self._add_coordinates(s, patches[i], later, chunk, args)
        self.count += batch
        return batch

    def _add_coordinates(self, s, patch_m, later, chunk, args):
        q = np.concatenate([s.q_idx, np.zeros(len(s.bias_idx), np.int64)])
        o = np.concatenate([s.o_idx, s.bias_idx])
        is_bias = np.concatenate([np.zeros(len(s.q_idx), bool), np.ones(len(s.bias_idx), bool)])
        rows_global = np.concatenate([s.w_global, s.b_global])
        count = len(q)
        chunk = min(count, chunk)
        fn = self._source_fn(s, unit="coordinate")
        for start in range(0, count, chunk):
            sel = np.arange(start, min(start + chunk, count))
            pad = np.concatenate([sel, np.full(chunk - len(sel), sel[-1])])
            blocks = fn(patch_m, tf.constant(q[pad]), tf.constant(o[pad]),
                        tf.constant(is_bias[pad]), *args)
            r = rows_global[sel]
            for p, block in zip(later, blocks):
                if len(p.w_global):
                    self.residual[np.ix_(r, p.w_global)] += block.numpy()[: len(sel)]

    def _add_channels(self, s, patch_m, later, chunk, args):
        q = np.concatenate([s.q_idx, np.zeros(len(s.bias_idx), np.int64)])
        o = np.concatenate([s.o_idx, s.bias_idx])
        is_bias = np.concatenate([np.zeros(len(s.q_idx), bool), np.ones(len(s.bias_idx), bool)])
        rows_global = np.concatenate([s.w_global, s.b_global])
        fn = self._source_fn(s, unit="channel")
        width = min(chunk * s.o_size, max(np.bincount(o, minlength=s.o_size)))
        for channel in range(s.o_size):
            members = np.flatnonzero(o == channel)
            for start in range(0, len(members), width):
                sel = members[start:start + width]
                pad = np.concatenate([sel, np.full(width - len(sel), sel[-1])])
                blocks = fn(patch_m, tf.constant(q[pad]), tf.constant(is_bias[pad]),
                            tf.constant(channel, tf.int64), *args)
                r = rows_global[sel]
                for p, block in zip(later, blocks):
                    if len(p.w_global):
                        self.residual[np.ix_(r, p.w_global)] += block.numpy()[: len(sel)]

    def _add_unit(self, s, patch_m, later, chunk, args):
        units = np.arange(s.o_size)
        by_unit = [s.q_idx[s.o_idx == u] for u in units]
        glob_by_unit = [s.w_global[s.o_idx == u] for u in units]
        bias_global = dict(zip(s.bias_idx.tolist(), s.b_global.tolist()))
        width = max(1, max(len(v) for v in by_unit))
        chunk = min(len(units), chunk)
        fn = self._source_fn(s, unit="unit")
        dtype = patch_m.dtype.as_numpy_dtype
        for start in range(0, len(units), chunk):
            sel = np.arange(start, min(start + chunk, len(units)))
            pad = np.concatenate([sel, np.full(chunk - len(sel), sel[-1])])
            v_pad = np.zeros((chunk, width), np.int64)
            valid = np.zeros((chunk, width), dtype)
            for t, u in enumerate(sel):
                v_pad[t, : len(by_unit[u])] = by_unit[u]
                valid[t, : len(by_unit[u])] = 1
            blocks = fn(patch_m, tf.constant(units[pad]), tf.constant(v_pad),
                        tf.constant(valid), *args)
            for p, (w_rows, b_rows) in zip(later, blocks):
                if not len(p.w_global):
                    continue
                w_rows, b_rows = w_rows.numpy(), b_rows.numpy()
                for t, u in enumerate(sel):
                    g = glob_by_unit[u]
                    if len(g):
                        self.residual[np.ix_(g, p.w_global)] += w_rows[t, : len(g)]
                    if int(u) in bias_global:
                        self.residual[bias_global[int(u)], p.w_global] += b_rows[t]

    def result(self):
        """The exact Hessian of the mean loss over the examples added (float64, symmetric)."""
        if self.count == 0:
            raise ValueError("data: holds no examples; at least one (x, y) example is needed.")
        return assemble(self.gn, self.residual, self.count)


def assemble(gn, residual, count):
    """H = (G + G^T)/2 + R_upper + R_upper^T, divided by the example count."""
    return ((gn + gn.T) / 2.0 + residual + residual.T) / count
