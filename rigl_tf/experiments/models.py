"""Model registry: the networks of the sparse-training and lottery-ticket literature.

Every model is a Sequential or functional Keras 3 model (never subclassed, so
`keras.models.clone_model` can wrap its layers), built for a fixed input shape, and
outputs **logits** (no softmax): train with
`keras.losses.SparseCategoricalCrossentropy(from_logits=True)`.

Models are looked up by name::

    model = get_model("resnet20", input_shape=(32, 32, 3), num_classes=10)

Common keyword arguments accepted by every builder (where meaningful):

* `activation`: hidden-layer activation (default `'relu'`).
* `weight_decay`: if > 0, an L2 `kernel_regularizer` (`weight_decay * sum(w**2)`) on
  every Dense/Conv kernel (and depthwise kernel).
* `width_multiplier`: scales every hidden width / channel count; each scaled width is
  `max(1, round(width * width_multiplier))`. The output layer keeps `num_classes` units.
* `use_batch_norm`: BatchNormalization after hidden layers (models that always use it,
  such as the ResNets, do not take this argument).
* `kernel_initializer`: default `'glorot_uniform'` for the LeNet / MLP / Conv-n family,
  `'he_normal'` for VGG, ResNets and MobileNet.
"""

import functools
import inspect
import math
import numbers

import keras

_MODELS = {}

def register_model(name):
    """Decorator registering a model builder under `name`.

    The builder is called as `builder(input_shape, num_classes, **kwargs)` and must
    return a `keras.Model` (Sequential or functional) that outputs logits.

    Args:
      name: registry name, a non-empty string not already registered.

    Returns:
      The decorator, which returns the builder unchanged.

    Raises:
      ValueError: if `name` is empty, not a string or already registered.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_model: `name` must be a non-empty string, got {name!r}.")
    if name in _MODELS:
        raise ValueError(
            f"register_model: `name`={name!r} is already registered; choose another name."
        )

    def decorator(builder):
        _MODELS[name] = builder
        return builder

    return decorator


def list_models():
    """Returns the sorted names of all registered models."""
    return sorted(_MODELS)


def get_model(network_name, input_shape, num_classes, **kwargs):
    """Builds the registered model `network_name`.

    Args:
      network_name: a name from `list_models()`.
      input_shape: shape of one example without the batch dimension, e.g. `(32, 32, 3)`.
      num_classes: number of output logits, a positive int.
      **kwargs: model-specific options (see the builder's docstring and the module
        docstring for the common ones).

    Returns:
      A built `keras.Model` mapping `(batch,) + input_shape` to `(batch, num_classes)`
      logits.

    Raises:
      ValueError: on an unknown `network_name`, a bad `input_shape` / `num_classes`, or a
        keyword argument the builder does not accept.
    """
    if network_name not in _MODELS:
        raise ValueError(
            f"Unknown `network_name`={network_name!r}; known models: "
            f"{', '.join(list_models())}."
        )
    builder = _MODELS[network_name]
    input_shape = _check_input_shape(input_shape)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"`num_classes` must be a positive int, got {num_classes!r}.")
    accepted = [
        p for p in inspect.signature(builder).parameters if p not in ("input_shape", "num_classes")
    ]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"Model {network_name!r} does not accept keyword argument(s) {unknown}; "
            f"accepted: {', '.join(accepted)}."
        )
    if "width_multiplier" in kwargs:
        wm = kwargs["width_multiplier"]
        if isinstance(wm, bool) or not isinstance(wm, (int, float)) or not wm > 0:
            raise ValueError(f"`width_multiplier` must be a number > 0, got {wm!r}.")
    if "weight_decay" in kwargs:
        wd = kwargs["weight_decay"]
        if isinstance(wd, bool) or not isinstance(wd, (int, float)) or not wd >= 0:
            raise ValueError(f"`weight_decay` must be a number >= 0, got {wd!r}.")
    return builder(input_shape, num_classes, **kwargs)


def count_params(model, kernels_only=True):
    """Counts a model's parameters.

    Args:
      model: a `keras.Model`.
      kernels_only: if True, count only the prunable kernel weights: every weight whose
        name ends in `kernel` (Dense and Conv kernels, depthwise and pointwise kernels);
        biases, BatchNorm parameters and statistics are excluded. Weights shared between
        layers are counted once. If False, return `model.count_params()` (all weights,
        including non-trainable BatchNorm moving statistics).

    Returns:
      The number of parameters, an int.
    """
    if not kernels_only:
        return int(model.count_params())
    seen = set()
    total = 0
    for w in model.weights:
        if id(w) in seen or not w.name.endswith("kernel"):
            continue
        seen.add(id(w))
        total += math.prod(w.shape)
    return int(total)


def small_dense_width_multiplier(
    name, input_shape, num_classes, target_params, *, tolerance=1e-3, **kwargs
):
    """Finds the width multiplier whose dense model has about `target_params` kernel weights.

    Used to build small-dense baselines with as many parameters as a sparse model has
    non-zeros. Parameters are counted with `count_params(model, kernels_only=True)`
    (Dense/Conv kernels only). The count is non-decreasing in the multiplier, so the
    search brackets the target and bisects (in log space) until the bracket is narrower
    than `tolerance` (relative), then returns the end whose count is closer.

    Args:
      name: a registered model name (see `list_models()`).
      input_shape: input shape without the batch dimension.
      num_classes: number of output logits.
      target_params: desired number of kernel weights, a positive number.
      tolerance: relative width of the final bracket on the multiplier.
      **kwargs: further builder arguments (not `width_multiplier`).

    Returns:
      The width multiplier, a float > 0.

    Raises:
      ValueError: on a non-positive `target_params`, a `width_multiplier` in `kwargs`, or
        any error `get_model` raises.
    """
    if isinstance(target_params, bool) or not isinstance(target_params, (int, float)) or (
        not target_params > 0
    ):
        raise ValueError(f"`target_params` must be a number > 0, got {target_params!r}.")
    if "width_multiplier" in kwargs:
        raise ValueError(
            "small_dense_width_multiplier searches `width_multiplier` itself; do not pass it "
            f"(got width_multiplier={kwargs['width_multiplier']!r})."
        )
    cache = {}

    def params_at(multiplier):
        if multiplier not in cache:
            model = get_model(
                name, input_shape, num_classes, width_multiplier=multiplier, **kwargs
            )
            cache[multiplier] = count_params(model, kernels_only=True)
        return cache[multiplier]

    lo, hi = 1.0, 1.0
    while params_at(hi) < target_params and hi < 2.0**12:
        hi *= 2.0
    if params_at(hi) < target_params:
        return hi
    lo = hi / 2.0
    while params_at(lo) >= target_params and lo > 2.0**-12:
        hi, lo = lo, lo / 2.0
    if params_at(lo) >= target_params:
        return lo
    # Invariant: params_at(lo) < target_params <= params_at(hi).
    while hi / lo > 1.0 + tolerance:
        mid = math.sqrt(lo * hi)
        if params_at(mid) < target_params:
            lo = mid
        else:
            hi = mid
    if abs(params_at(lo) - target_params) < abs(params_at(hi) - target_params):
        return lo
    return hi


# --------------------------------------------------------------------------- helpers


def _check_input_shape(input_shape):
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = ()
    if not shape or not all(
        isinstance(d, numbers.Integral) and not isinstance(d, bool) and d >= 1 for d in shape
    ):
        raise ValueError(
            "`input_shape` must be a sequence of positive ints without the batch dimension, "
            f"got {input_shape!r}."
        )
    return tuple(int(d) for d in shape)


def _require_image_shape(name, input_shape):
    if len(input_shape) != 3:
        raise ValueError(
            f"Model {name!r} needs an image `input_shape` (height, width, channels), "
            f"got {input_shape!r}."
        )


def _scale(width, width_multiplier):
    return max(1, int(round(width * width_multiplier)))


def _regularizer(weight_decay):
    return keras.regularizers.L2(weight_decay) if weight_decay > 0 else None


class _Layers:
    """Creates layers sharing one model's initializer, regularizer and activation."""

    def __init__(self, activation, weight_decay, kernel_initializer):
        self.activation = activation
        self.weight_decay = weight_decay
        self.kernel_initializer = kernel_initializer

    def conv(self, filters, kernel_size, strides=1, use_bias=True, activation=None):
        return keras.layers.Conv2D(
            filters,
            kernel_size,
            strides=strides,
            padding="same",
            use_bias=use_bias,
            activation=activation,
            kernel_initializer=self.kernel_initializer,
            kernel_regularizer=_regularizer(self.weight_decay),
        )

    def dense(self, units, activation=None, use_bias=True):
        return keras.layers.Dense(
            units,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=self.kernel_initializer,
            kernel_regularizer=_regularizer(self.weight_decay),
        )

    def act(self):
        return keras.layers.Activation(self.activation)


def _hidden(x, layer_fn, units, use_batch_norm, layers):
    """Applies a hidden Dense/Conv layer, optionally followed by BatchNorm, then the activation.

    With BatchNorm the layer has no bias (BN's beta replaces it) and the order is
    layer -> BN -> activation; without it the activation is fused into the layer.
    """
    if use_batch_norm:
        x = layer_fn(units, use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        return layers.act()(x)
    return layer_fn(units, activation=layers.activation)(x)


# --------------------------------------------------------------------------- LeNet / MLP


def _check_widths(name, hidden_sizes, count=None):
    """Validates `hidden_sizes` (positive ints, `count` of them if given); returns a tuple."""
    try:
        widths = tuple(hidden_sizes)
    except TypeError:
        widths = None
    ok = widths is not None and all(
        isinstance(w, numbers.Integral) and not isinstance(w, bool) and w > 0 for w in widths
    )
    if not ok or (count is not None and len(widths) != count):
        need = f"{count} positive ints" if count is not None else "a sequence of positive ints"
        raise ValueError(f"`hidden_sizes` of {name} must be {need}, got {hidden_sizes!r}.")
    return tuple(int(w) for w in widths)


def _check_bool(name, value):
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be True or False, got {value!r}.")
    return value


def _reference_hidden(x, layer, use_batch_norm, pool=False):
    """The reference network's order: layer (with bias and activation) -> [pool] -> [BN]."""
    x = layer(x)
    if pool:
        x = keras.layers.MaxPooling2D(2)(x)
    if use_batch_norm:
        x = keras.layers.BatchNormalization()(x)
    return x


@register_model("lenet5")
def lenet5(
    input_shape,
    num_classes,
    hidden_sizes=(6, 16, 120, 84),
    activation="relu",
    weight_decay=0.0,
    width_multiplier=1.0,
    use_batch_norm=False,
    kernel_initializer="glorot_uniform",
):
    """LeNet5 of the gradient-flow paper (Evci et al.) and the reference RigL TF2 code.

    Conv(6, 5x5, valid, relu) - MaxPool 2 - Conv(16, 5x5, valid, relu) - MaxPool 2 -
    Flatten - Dense(120, relu) - Dense(84, relu) - Dense(num_classes). With
    ``use_batch_norm`` a BatchNormalization follows each pooling and each hidden dense
    layer (after the activation), as in the reference. At 28x28x1 with 10 classes:
    44,426 parameters. The Caffe LeNet (20/50/500) is ``lenet5_caffe``.

    Args:
      input_shape: (height, width, channels).
      num_classes: number of output logits.
      hidden_sizes: (conv1 filters, conv2 filters, dense1 units, dense2 units).
      activation: hidden activation.
      weight_decay: L2 coefficient on kernels (0 disables).
      width_multiplier: scales `hidden_sizes`.
      use_batch_norm: BatchNorm after each pooling / hidden dense layer.
      kernel_initializer: kernel initializer.

    Returns:
      A functional model outputting logits.
    """
    _require_image_shape("lenet5", input_shape)
    if min(input_shape[:2]) < 16:  # two (5x5 valid conv, 2x2 pool) stages need 16 pixels
        raise ValueError(
            f"Model 'lenet5' needs images of at least 16x16 (two 5x5 'valid' convolutions "
            f"with 2x2 pooling), got `input_shape`={input_shape!r}; resize them (e.g. "
            f"data.image_size = 28) or use 'lenet5_caffe' or 'mlp'."
        )
    sizes = _check_widths("lenet5", hidden_sizes, 4)
    _check_bool("use_batch_norm", use_batch_norm)
    c1, c2, d1, d2 = (_scale(h, width_multiplier) for h in sizes)
    kw = dict(activation=activation, kernel_initializer=kernel_initializer,
              kernel_regularizer=_regularizer(weight_decay))
    inputs = keras.Input(input_shape)
    x = _reference_hidden(inputs, keras.layers.Conv2D(c1, 5, **kw), use_batch_norm, pool=True)
    x = _reference_hidden(x, keras.layers.Conv2D(c2, 5, **kw), use_batch_norm, pool=True)
    x = keras.layers.Flatten()(x)
    x = _reference_hidden(x, keras.layers.Dense(d1, **kw), use_batch_norm)
    x = _reference_hidden(x, keras.layers.Dense(d2, **kw), use_batch_norm)
    outputs = keras.layers.Dense(num_classes, **{**kw, "activation": None})(x)
    return keras.Model(inputs, outputs, name="lenet5")


@register_model("lenet5_caffe")
def lenet5_caffe(
    input_shape,
    num_classes,
    hidden_sizes=(20, 50, 500),
    activation="relu",
    weight_decay=0.0,
    width_multiplier=1.0,
    use_batch_norm=False,
    kernel_initializer="glorot_uniform",
):
    """The Caffe LeNet: two 5x5 'same' conv + max-pool stages and one hidden dense layer.

    Conv(20, 5x5, same) - MaxPool 2x2 - Conv(50, 5x5, same) - MaxPool 2x2 - Flatten -
    Dense(500) - Dense(num_classes). At 28x28x1 with 10 classes: 1,256,080 parameters.
    (Not the gradient-flow paper's network; that is ``lenet5``.)

    Args:
      input_shape: (height, width, channels).
      num_classes: number of output logits.
      hidden_sizes: (conv1 filters, conv2 filters, dense units).
      activation: hidden activation.
      weight_decay: L2 coefficient on kernels (0 disables).
      width_multiplier: scales `hidden_sizes`.
      use_batch_norm: BatchNorm after each hidden conv/dense layer.
      kernel_initializer: kernel initializer.

    Returns:
      A functional model outputting logits.
    """
    _require_image_shape("lenet5_caffe", input_shape)
    sizes = _check_widths("lenet5_caffe", hidden_sizes, 3)
    _check_bool("use_batch_norm", use_batch_norm)
    c1, c2, d = (_scale(h, width_multiplier) for h in sizes)
    L = _Layers(activation, weight_decay, kernel_initializer)
    conv5 = functools.partial(L.conv, kernel_size=5)
    inputs = keras.Input(input_shape)
    x = _hidden(inputs, conv5, c1, use_batch_norm, L)
    x = keras.layers.MaxPooling2D(2, padding="same")(x)
    x = _hidden(x, conv5, c2, use_batch_norm, L)
    x = keras.layers.MaxPooling2D(2, padding="same")(x)
    x = keras.layers.Flatten()(x)
    x = _hidden(x, L.dense, d, use_batch_norm, L)
    outputs = L.dense(num_classes)(x)
    return keras.Model(inputs, outputs, name="lenet5_caffe")


@register_model("mlp")
def mlp(
    input_shape,
    num_classes,
    hidden_sizes=(300, 100),
    activation="relu",
    weight_decay=0.0,
    width_multiplier=1.0,
    use_batch_norm=False,
    kernel_initializer="glorot_uniform",
):
    """Fully connected network (LeNet-300-100 by default): Flatten - Dense... - Dense(classes).

    As in the reference code, every hidden Dense has a bias and the activation, and with
    ``use_batch_norm`` a BatchNormalization follows it. On 784 inputs with 10 classes:
    266,610 parameters.

    Args:
      input_shape: any shape; the input is flattened.
      num_classes: number of output logits.
      hidden_sizes: units of each hidden layer (any length, may be empty).
      activation: hidden activation.
      weight_decay: L2 coefficient on kernels (0 disables).
      width_multiplier: scales `hidden_sizes`.
      use_batch_norm: BatchNorm after each hidden layer.
      kernel_initializer: kernel initializer.

    Returns:
      A functional model outputting logits.
    """
    sizes = _check_widths("mlp", hidden_sizes)
    _check_bool("use_batch_norm", use_batch_norm)
    kw = dict(activation=activation, kernel_initializer=kernel_initializer,
              kernel_regularizer=_regularizer(weight_decay))
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    for h in sizes:
        x = _reference_hidden(x, keras.layers.Dense(_scale(h, width_multiplier), **kw),
                              use_batch_norm)
    outputs = keras.layers.Dense(num_classes, **{**kw, "activation": None})(x)
    return keras.Model(inputs, outputs, name="mlp")


# --------------------------------------------------------------------------- Conv-n


def _conv_n(
    name,
    input_shape,
    num_classes,
    conv_stages,
    dense_sizes,
    activation,
    weight_decay,
    width_multiplier,
    use_batch_norm,
    kernel_initializer,
):
    _require_image_shape(name, input_shape)
    L = _Layers(activation, weight_decay, kernel_initializer)
    conv3 = functools.partial(L.conv, kernel_size=3)
    inputs = keras.Input(input_shape)
    x = inputs
    for stage in conv_stages:
        for filters in stage:
            x = _hidden(x, conv3, _scale(filters, width_multiplier), use_batch_norm, L)
        x = keras.layers.MaxPooling2D(2, padding="same")(x)
    x = keras.layers.Flatten()(x)
    for units in dense_sizes:
        x = _hidden(x, L.dense, _scale(units, width_multiplier), use_batch_norm, L)
    outputs = L.dense(num_classes)(x)
    return keras.Model(inputs, outputs, name=name)


@register_model("conv4")
def conv4(
    input_shape,
    num_classes,
    activation="relu",
    weight_decay=0.0,
    width_multiplier=1.0,
    use_batch_norm=False,
    kernel_initializer="glorot_uniform",
):
    """Conv-4 of Frankle & Carbin (2019): 64,64,pool,128,128,pool, dense 256,256,classes.

    All convolutions 3x3 'same'; pools 2x2. About 2.4M parameters on CIFAR-10.

    Args:
      input_shape: (height, width, channels).
      num_classes: number of output logits.
      activation: hidden activation.
      weight_decay: L2 coefficient on kernels (0 disables).
      width_multiplier: scales every conv and hidden dense width.
      use_batch_norm: BatchNorm after each hidden layer.
      kernel_initializer: kernel initializer.

    Returns:
      A functional model outputting logits.
    """
    return _conv_n(
        "conv4", input_shape, num_classes, [(64, 64), (128, 128)], (256, 256),
        activation, weight_decay, width_multiplier, use_batch_norm, kernel_initializer,
    )  # fmt: skip


@register_model("conv6")
def conv6(
    input_shape,
    num_classes,
    activation="relu",
    weight_decay=0.0,
    width_multiplier=1.0,
    use_batch_norm=False,
    kernel_initializer="glorot_uniform",
):
    """Conv-6 of Frankle & Carbin (2019): Conv-4 plus a 256,256,pool stage.

    About 1.7M parameters on CIFAR-10.

    Args:
      input_shape: (height, width, channels).
      num_classes: number of output logits.
      activation: hidden activation.
      weight_decay: L2 coefficient on kernels (0 disables).
      width_multiplier: scales every conv and hidden dense width.
      use_batch_norm: BatchNorm after each hidden layer.
      kernel_initializer: kernel initializer.

    Returns:
      A functional model outputting logits.
    """
    return _conv_n(
        "conv6", input_shape, num_classes, [(64, 64), (128, 128), (256, 256)], (256, 256),
        activation, weight_decay, width_multiplier, use_batch_norm, kernel_initializer,
    )  # fmt: skip


# --------------------------------------------------------------------------- VGG

_VGG16_STAGES = [(64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)]


@register_model("vgg16")
def vgg16(
    input_shape,
    num_classes,
    variant="cifar",
    classifier_sizes=None,
    dropout_rate=None,
    activation="relu",
    weight_decay=0.0,
    width_multiplier=1.0,
    use_batch_norm=None,
    kernel_initializer="he_normal",
):
    """VGG16: 13 3x3 convolutions in 5 stages with 2x2 max-pools, then a dense classifier.

    `variant='cifar'` (default): BatchNorm after every conv, classifier
    Flatten(512 at 32x32) -> num_classes (`classifier_sizes=(512,)` adds one hidden
    dense layer), about 14.7M parameters. `variant='imagenet'`: no BatchNorm, classifier
    4096 - 4096 - num_classes with dropout 0.5, about 138M parameters at 224x224.
    Pools use 'same' padding so small inputs (e.g. 28x28) still build.

    Args:
      input_shape: (height, width, channels).
      num_classes: number of output logits.
      variant: 'cifar' or 'imagenet'; chooses the defaults of the `None` arguments.
      classifier_sizes: hidden dense widths; default () for 'cifar', (4096, 4096) for
        'imagenet'.
      dropout_rate: dropout after each hidden dense layer; default 0 for 'cifar', 0.5
        for 'imagenet'.
      activation: hidden activation.
      weight_decay: L2 coefficient on kernels (0 disables).
      width_multiplier: scales every conv and hidden dense width.
      use_batch_norm: default True for 'cifar', False for 'imagenet'.
      kernel_initializer: kernel initializer.

    Returns:
      A functional model outputting logits.

    Raises:
      ValueError: on an unknown `variant` or `dropout_rate` outside [0, 1).
    """
    defaults = {"cifar": ((), 0.0, True), "imagenet": ((4096, 4096), 0.5, False)}
    if variant not in defaults:
        raise ValueError(
            f"`variant`={variant!r} is not supported by vgg16; use one of {sorted(defaults)}."
        )
    d_sizes, d_dropout, d_bn = defaults[variant]
    classifier_sizes = d_sizes if classifier_sizes is None else tuple(classifier_sizes)
    dropout_rate = d_dropout if dropout_rate is None else dropout_rate
    use_batch_norm = d_bn if use_batch_norm is None else use_batch_norm
    if not 0 <= dropout_rate < 1:
        raise ValueError(f"`dropout_rate` must be in [0, 1), got {dropout_rate!r}.")
    _require_image_shape("vgg16", input_shape)
    L = _Layers(activation, weight_decay, kernel_initializer)
    conv3 = functools.partial(L.conv, kernel_size=3)
    inputs = keras.Input(input_shape)
    x = inputs
    for stage in _VGG16_STAGES:
        for filters in stage:
            x = _hidden(x, conv3, _scale(filters, width_multiplier), use_batch_norm, L)
        x = keras.layers.MaxPooling2D(2, padding="same")(x)
    x = keras.layers.Flatten()(x)
    for units in classifier_sizes:
        x = _hidden(x, L.dense, _scale(units, width_multiplier), use_batch_norm, L)
        if dropout_rate > 0:
            x = keras.layers.Dropout(dropout_rate)(x)
    outputs = L.dense(num_classes)(x)
    return keras.Model(inputs, outputs, name="vgg16")


# --------------------------------------------------------------------------- ResNets


def _conv_bn(x, L, filters, kernel_size, strides=1, activate=True):
    x = L.conv(filters, kernel_size, strides=strides, use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    return L.act()(x) if activate else x


def _shortcut(x, L, filters, strides):
    """Identity, or a 1x1 projection conv + BN when the shape changes."""
    if strides != 1 or x.shape[-1] != filters:
        return _conv_bn(x, L, filters, 1, strides=strides, activate=False)
    return x


def _basic_block(x, L, filters, strides):
    shortcut = _shortcut(x, L, filters, strides)
    y = _conv_bn(x, L, filters, 3, strides=strides)
    y = _conv_bn(y, L, filters, 3, activate=False)
    return L.act()(keras.layers.Add()([shortcut, y]))


def _bottleneck_block(x, L, filters, strides, expansion=4):
    # The stride sits on the 3x3 conv ("ResNet v1.5", as in torchvision); the parameter
    # count equals the original v1 placement on the first 1x1 conv.
    shortcut = _shortcut(x, L, filters * expansion, strides)
    y = _conv_bn(x, L, filters, 1)
    y = _conv_bn(y, L, filters, 3, strides=strides)
    y = _conv_bn(y, L, filters * expansion, 1, activate=False)
    return L.act()(keras.layers.Add()([shortcut, y]))


def _cifar_resnet(name, input_shape, num_classes, n, activation, weight_decay,
                  width_multiplier, kernel_initializer):  # fmt: skip
    _require_image_shape(name, input_shape)
    L = _Layers(activation, weight_decay, kernel_initializer)
    inputs = keras.Input(input_shape)
    x = _conv_bn(inputs, L, _scale(16, width_multiplier), 3)
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(n):
            strides = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(x, L, _scale(filters, width_multiplier), strides)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = L.dense(num_classes)(x)
    return keras.Model(inputs, outputs, name=name)


def _make_cifar_resnet(name, n):
    def builder(
        input_shape,
        num_classes,
        activation="relu",
        weight_decay=0.0,
        width_multiplier=1.0,
        kernel_initializer="he_normal",
    ):
        return _cifar_resnet(name, input_shape, num_classes, n, activation, weight_decay,
                             width_multiplier, kernel_initializer)  # fmt: skip

    builder.__name__ = name
    builder.__doc__ = f"""CIFAR ResNet-{6 * n + 2} (He et al. 2016): 3 stages of {n} basic blocks.

    3x3 conv(16) + BN + ReLU, then stages of 16/32/64 channels (stride 2 at the start of
    stages 2 and 3), BatchNorm everywhere, identity shortcuts or a 1x1 projection conv +
    BN where the shape changes, global average pooling, Dense(num_classes).

    Args:
      input_shape: (height, width, channels).
      num_classes: number of output logits.
      activation: hidden activation.
      weight_decay: L2 coefficient on kernels (0 disables).
      width_multiplier: scales every channel count.
      kernel_initializer: kernel initializer.

    Returns:
      A functional model outputting logits.
    """
    return register_model(name)(builder)


resnet20 = _make_cifar_resnet("resnet20", 3)
resnet32 = _make_cifar_resnet("resnet32", 5)
resnet56 = _make_cifar_resnet("resnet56", 9)


def _imagenet_resnet(name, input_shape, num_classes, block, blocks_per_stage, stem,
                     activation, weight_decay, width_multiplier, kernel_initializer):  # fmt: skip
    _require_image_shape(name, input_shape)
    stems = ("auto", "imagenet", "cifar")
    if stem not in stems:
        raise ValueError(f"`stem`={stem!r} is not supported by {name}; use one of {stems}.")
    if stem == "auto":
        stem = "cifar" if input_shape[0] < 64 else "imagenet"
    L = _Layers(activation, weight_decay, kernel_initializer)
    inputs = keras.Input(input_shape)
    if stem == "imagenet":
        x = _conv_bn(inputs, L, _scale(64, width_multiplier), 7, strides=2)
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same")(x)
    else:
        x = _conv_bn(inputs, L, _scale(64, width_multiplier), 3)
    for stage, (filters, num_blocks) in enumerate(zip((64, 128, 256, 512), blocks_per_stage)):
        for i in range(num_blocks):
            strides = 2 if stage > 0 and i == 0 else 1
            x = block(x, L, _scale(filters, width_multiplier), strides)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = L.dense(num_classes)(x)
    return keras.Model(inputs, outputs, name=name)


_IMAGENET_RESNET_DOC = """ImageNet ResNet-{depth} (He et al. 2016): {blocks} {kind} blocks in 4 stages.

    Stem: 7x7 stride-2 conv(64) + BN + ReLU + 3x3 stride-2 max-pool (`stem='imagenet'`),
    or a 3x3 stride-1 conv(64) + BN + ReLU without pooling (`stem='cifar'`). The default
    `stem='auto'` picks 'cifar' when the input height is below 64 (CIFAR, MNIST) and
    'imagenet' otherwise (ImageNet, 64x64 Tiny-ImageNet). Stages of 64/128/256/512
    channels{expansion}, stride 2 at the start of stages 2-4 (on the 3x3 conv), projection
    1x1 conv + BN shortcuts where the shape changes, convolutions without bias, global
    average pooling, Dense(num_classes). {params}

    Args:
      input_shape: (height, width, channels).
      num_classes: number of output logits.
      stem: 'auto', 'imagenet' or 'cifar'.
      activation: hidden activation.
      weight_decay: L2 coefficient on kernels (0 disables).
      width_multiplier: scales every channel count.
      kernel_initializer: kernel initializer.

    Returns:
      A functional model outputting logits.

    Raises:
      ValueError: on an unknown `stem`.
    """


@register_model("resnet18")
def resnet18(
    input_shape,
    num_classes,
    stem="auto",
    activation="relu",
    weight_decay=0.0,
    width_multiplier=1.0,
    kernel_initializer="he_normal",
):
    return _imagenet_resnet("resnet18", input_shape, num_classes, _basic_block, (2, 2, 2, 2),
                            stem, activation, weight_decay, width_multiplier,
                            kernel_initializer)  # fmt: skip


@register_model("resnet50")
def resnet50(
    input_shape,
    num_classes,
    stem="auto",
    activation="relu",
    weight_decay=0.0,
    width_multiplier=1.0,
    kernel_initializer="he_normal",
):
    return _imagenet_resnet("resnet50", input_shape, num_classes, _bottleneck_block,
                            (3, 4, 6, 3), stem, activation, weight_decay, width_multiplier,
                            kernel_initializer)  # fmt: skip


resnet18.__doc__ = _IMAGENET_RESNET_DOC.format(
    depth=18, blocks="[2, 2, 2, 2]", kind="basic", expansion="",
    params="At 224x224 with 1000 classes: 11,689,512 trainable parameters.",
)  # fmt: skip
resnet50.__doc__ = _IMAGENET_RESNET_DOC.format(
    depth=50, blocks="[3, 4, 6, 3]", kind="bottleneck",
    expansion=" (outputs x4 in bottleneck blocks)",
    params=(
        "At 224x224 with 1000 classes: 25,557,032 trainable parameters (plus 53,120 "
        "BatchNorm moving statistics), the count of the standard torchvision definition; "
        "`keras.applications.ResNet50` is larger only because its convs have biases."
    ),
)  # fmt: skip


# --------------------------------------------------------------------------- MobileNet

# (pointwise filters, depthwise stride) of the 13 depthwise-separable blocks.
_MOBILENET_V1_BLOCKS = [
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
]  # fmt: skip


@register_model("mobilenet_v1")
def mobilenet_v1(
    input_shape,
    num_classes,
    dropout_rate=0.0,
    activation="relu",
    weight_decay=0.0,
    width_multiplier=1.0,
    kernel_initializer="he_normal",
):
    """MobileNet v1 (Howard et al. 2017) with width multiplier alpha = `width_multiplier`.

    3x3 stride-2 conv(32) + BN + activation, then 13 blocks of 3x3 DepthwiseConv2D + BN +
    activation + 1x1 Conv2D + BN + activation, global average pooling, optional dropout,
    Dense(num_classes). Convolutions use 'same' padding and no bias. At 224x224 with 1000
    classes and alpha 1: 4,253,864 parameters (as `keras.applications.MobileNet`, which
    uses ReLU6; the paper and the default here use ReLU).

    Args:
      input_shape: (height, width, channels).
      num_classes: number of output logits.
      dropout_rate: dropout before the classifier.
      activation: hidden activation.
      weight_decay: L2 coefficient on conv, depthwise and dense kernels (0 disables).
      width_multiplier: alpha, scales every channel count.
      kernel_initializer: kernel initializer (also for depthwise kernels).

    Returns:
      A functional model outputting logits.
    """
    _require_image_shape("mobilenet_v1", input_shape)
    L = _Layers(activation, weight_decay, kernel_initializer)
    inputs = keras.Input(input_shape)
    x = _conv_bn(inputs, L, _scale(32, width_multiplier), 3, strides=2)
    for filters, strides in _MOBILENET_V1_BLOCKS:
        x = keras.layers.DepthwiseConv2D(
            3,
            strides=strides,
            padding="same",
            use_bias=False,
            depthwise_initializer=kernel_initializer,
            depthwise_regularizer=_regularizer(weight_decay),
        )(x)
        x = keras.layers.BatchNormalization()(x)
        x = L.act()(x)
        x = _conv_bn(x, L, _scale(filters, width_multiplier), 1)
    x = keras.layers.GlobalAveragePooling2D()(x)
    if dropout_rate > 0:
        x = keras.layers.Dropout(dropout_rate)(x)
    outputs = L.dense(num_classes)(x)
    return keras.Model(inputs, outputs, name="mobilenet_v1")
