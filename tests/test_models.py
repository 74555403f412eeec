"""Tests for the model registry (rigl_tf.experiments.models)."""

import math

import keras
import numpy as np
import pytest

from rigl_tf.experiments import models


def _trainable(model):
    return sum(math.prod(w.shape) for w in model.trainable_weights)


@pytest.mark.parametrize("name", models.list_models())
def test_every_model_builds_and_outputs_logits(name):
    model = models.get_model(name, (32, 32, 3), 10)
    assert model.__class__.__name__ in ("Functional", "Sequential")  # never subclassed
    assert model.input_shape == (None, 32, 32, 3)
    logits = model(np.random.rand(2, 32, 32, 3).astype("float32"), training=False)
    assert tuple(logits.shape) == (2, 10)
    # Logits: the output layer is linear (no softmax).
    assert model.layers[-1].activation is keras.activations.linear


@pytest.mark.parametrize("name", ["lenet5", "lenet5_caffe", "mlp", "conv4"])
def test_grayscale_mnist_shape_builds(name):
    model = models.get_model(name, (28, 28, 1), 10)
    assert tuple(model(np.zeros((1, 28, 28, 1), "float32")).shape) == (1, 10)


def test_list_models_names_all_families():
    expected = {
        "lenet5", "lenet5_caffe", "mlp", "conv4", "conv6", "vgg16", "resnet20", "resnet32", "resnet56",
        "resnet18", "resnet50", "mobilenet_v1",
    }  # fmt: skip
    assert expected <= set(models.list_models())
    assert models.list_models() == sorted(models.list_models())


def test_lenet5_is_the_papers_network_with_exact_param_count():
    model = models.get_model("lenet5", (28, 28, 1), 10)
    # 28 -conv5 valid-> 24 -pool-> 12 -conv5 valid-> 8 -pool-> 4; flatten 4*4*16 = 256.
    conv1 = 5 * 5 * 1 * 6 + 6  # 156
    conv2 = 5 * 5 * 6 * 16 + 16  # 2,416
    dense1 = 256 * 120 + 120  # 30,840
    dense2 = 120 * 84 + 84  # 10,164
    dense3 = 84 * 10 + 10  # 850
    assert model.count_params() == conv1 + conv2 + dense1 + dense2 + dense3 == 44_426
    assert models.count_params(model) == 150 + 2_400 + 30_720 + 10_080 + 840
    kinds = [type(l).__name__ for l in model.layers[1:]]
    assert kinds == ["Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Flatten",
                     "Dense", "Dense", "Dense"]
    assert [l.activation.__name__ for l in model.layers if hasattr(l, "activation")] == [
        "relu", "relu", "relu", "relu", "linear"]


def test_lenet5_batch_norm_follows_pooling_and_hidden_dense_as_in_the_reference():
    model = models.get_model("lenet5", (28, 28, 1), 10, use_batch_norm=True)
    kinds = [type(l).__name__ for l in model.layers[1:]]
    assert kinds == ["Conv2D", "MaxPooling2D", "BatchNormalization", "Conv2D",
                     "MaxPooling2D", "BatchNormalization", "Flatten", "Dense",
                     "BatchNormalization", "Dense", "BatchNormalization", "Dense"]
    # Layers keep their biases; BN adds gamma, beta, mean, variance per channel/unit.
    assert model.count_params() == 44_426 + 4 * (6 + 16 + 120 + 84)


def test_lenet5_caffe_exact_param_count():
    model = models.get_model("lenet5_caffe", (28, 28, 1), 10)
    # conv 5*5*1*20+20, conv 5*5*20*50+50, dense 7*7*50*500+500, dense 500*10+10
    assert model.count_params() == 520 + 25_050 + 1_225_500 + 5_010 == 1_256_080
    assert models.count_params(model) == 500 + 25_000 + 1_225_000 + 5_000


@pytest.mark.parametrize("name,kwargs,match", [
    ("lenet5", {"hidden_sizes": (6, 16, 120)}, "`hidden_sizes` of lenet5 must be 4 positive"),
    ("lenet5", {"hidden_sizes": (6, 0, 120, 84)}, "`hidden_sizes` of lenet5"),
    ("lenet5", {"hidden_sizes": (6, 16.5, 120, 84)}, "`hidden_sizes` of lenet5"),
    ("lenet5_caffe", {"hidden_sizes": (20, 50)}, "`hidden_sizes` of lenet5_caffe must be 3"),
    ("mlp", {"hidden_sizes": (300, -1)}, "`hidden_sizes` of mlp must be a sequence"),
    ("mlp", {"hidden_sizes": (True,)}, "`hidden_sizes` of mlp"),
    ("mlp", {"hidden_sizes": 300}, "`hidden_sizes` of mlp"),
    ("mlp", {"use_batch_norm": "yes"}, "use_batch_norm` must be True or False, got 'yes'"),
    ("lenet5", {"use_batch_norm": 1}, "use_batch_norm` must be True or False, got 1"),
])
def test_lenet_mlp_reject_bad_kwargs_in_one_sentence(name, kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        models.get_model(name, (28, 28, 1), 10, **kwargs)
    assert str(info.value).count(". ") == 0 and str(info.value).endswith(".")


def test_mlp_exact_param_count():
    model = models.get_model("mlp", (28, 28, 1), 10)
    assert model.count_params() == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10 == 266_610
    assert models.count_params(model) == 784 * 300 + 300 * 100 + 100 * 10
    assert models.count_params(model, kernels_only=False) == 266_610


def test_resnet50_matches_standard_imagenet_count():
    model = models.get_model("resnet50", (224, 224, 3), 1000)
    # torchvision's count; keras.applications.ResNet50 differs only by conv biases.
    assert _trainable(model) == 25_557_032
    reference = keras.applications.ResNet50(weights=None)
    assert models.count_params(model) == models.count_params(reference)
    assert len(model.layers[-1].weights) == 2 and model.output_shape == (None, 1000)


def test_resnet18_and_mobilenet_standard_counts():
    assert _trainable(models.get_model("resnet18", (224, 224, 3), 1000)) == 11_689_512
    assert models.get_model("mobilenet_v1", (224, 224, 3), 1000).count_params() == 4_253_864


def test_resnet20_size_and_depth():
    model = models.get_model("resnet20", (32, 32, 3), 10)
    assert 0.26e6 < _trainable(model) < 0.28e6
    assert _trainable(model) == 272_474
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    # 19 3x3 convs + 2 projection shortcuts; +1 dense = 20 weighted layers on the main path.
    assert sum(l.kernel_size == (3, 3) for l in convs) == 19
    assert sum(l.kernel_size == (1, 1) for l in convs) == 2


@pytest.mark.parametrize("name,n", [("resnet32", 5), ("resnet56", 9)])
def test_cifar_resnet_depths(name, n):
    model = models.get_model(name, (32, 32, 3), 10)
    convs3 = [
        l for l in model.layers
        if isinstance(l, keras.layers.Conv2D) and l.kernel_size == (3, 3)
    ]  # fmt: skip
    assert len(convs3) == 6 * n + 1


def test_conv4_conv6_structure():
    conv4 = models.get_model("conv4", (32, 32, 3), 10)
    conv6 = models.get_model("conv6", (32, 32, 3), 10)
    filters = lambda m: [l.filters for l in m.layers if isinstance(l, keras.layers.Conv2D)]  # noqa: E731
    units = lambda m: [l.units for l in m.layers if isinstance(l, keras.layers.Dense)]  # noqa: E731
    assert filters(conv4) == [64, 64, 128, 128]
    assert filters(conv6) == [64, 64, 128, 128, 256, 256]
    assert units(conv4) == units(conv6) == [256, 256, 10]
    assert conv4.count_params() == 2_425_930


def test_vgg16_variants():
    cifar = models.get_model("vgg16", (32, 32, 3), 10)
    convs = [l for l in cifar.layers if isinstance(l, keras.layers.Conv2D)]
    assert len(convs) == 13
    assert sum(isinstance(l, keras.layers.BatchNormalization) for l in cifar.layers) == 13
    assert [l.units for l in cifar.layers if isinstance(l, keras.layers.Dense)] == [10]
    hidden = models.get_model("vgg16", (32, 32, 3), 10, classifier_sizes=(512,))
    assert [l.units for l in hidden.layers if isinstance(l, keras.layers.Dense)] == [512, 10]
    # width 1/8 keeps the test fast: the default 4096-4096 classifier becomes 512-512.
    imagenet = models.get_model(
        "vgg16", (32, 32, 3), 10, variant="imagenet", width_multiplier=0.125
    )
    assert [l.units for l in imagenet.layers if isinstance(l, keras.layers.Dense)] == [
        512, 512, 10
    ]
    assert sum(isinstance(l, keras.layers.Dropout) for l in imagenet.layers) == 2
    assert not any(isinstance(l, keras.layers.BatchNormalization) for l in imagenet.layers)
    with pytest.raises(ValueError, match="variant.*'resnet'"):
        models.get_model("vgg16", (32, 32, 3), 10, variant="resnet")


def test_imagenet_resnet_stems():
    auto = models.get_model("resnet18", (32, 32, 3), 10)
    assert auto.layers[1].kernel_size == (3, 3)  # small input: CIFAR stem
    big = models.get_model("resnet18", (32, 32, 3), 10, stem="imagenet")
    assert big.layers[1].kernel_size == (7, 7) and big.layers[1].strides == (2, 2)
    assert tuple(big(np.zeros((1, 32, 32, 3), "float32")).shape) == (1, 10)
    with pytest.raises(ValueError, match="stem.*'tiny'"):
        models.get_model("resnet18", (32, 32, 3), 10, stem="tiny")


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="network_name") as info:
        models.get_model("resnet1000", (32, 32, 3), 10)
    message = str(info.value)
    assert "'resnet1000'" in message
    for name in models.list_models():
        assert name in message


def test_bad_arguments_fail_clearly():
    with pytest.raises(ValueError, match="does not accept.*'dropout'"):
        models.get_model("mlp", (784,), 10, dropout=0.5)
    with pytest.raises(ValueError, match="num_classes"):
        models.get_model("mlp", (784,), 0)
    with pytest.raises(ValueError, match="input_shape"):
        models.get_model("mlp", (28, None), 10)
    with pytest.raises(ValueError, match="input_shape"):
        models.get_model("lenet5", (784,), 10)
    with pytest.raises(ValueError, match="width_multiplier.*-1"):
        models.get_model("mlp", (784,), 10, width_multiplier=-1)
    with pytest.raises(ValueError, match="weight_decay"):
        models.get_model("mlp", (784,), 10, weight_decay=-1e-4)


def test_register_model_rejects_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        models.register_model("mlp")(lambda input_shape, num_classes: None)


def test_width_multiplier_scales_hidden_widths():
    half = models.get_model("mlp", (784,), 10, width_multiplier=0.5)
    assert [l.units for l in half.layers if isinstance(l, keras.layers.Dense)] == [150, 50, 10]
    lenet = models.get_model("lenet5", (28, 28, 1), 10, width_multiplier=2.0)
    assert [l.filters for l in lenet.layers if isinstance(l, keras.layers.Conv2D)] == [12, 32]
    assert [l.units for l in lenet.layers if isinstance(l, keras.layers.Dense)] == [240, 168, 10]
    wide = models.get_model("resnet20", (32, 32, 3), 10, width_multiplier=2.0)
    filters = {l.filters for l in wide.layers if isinstance(l, keras.layers.Conv2D)}
    assert filters == {32, 64, 128}
    tiny = models.get_model("mlp", (784,), 10, width_multiplier=1e-6)  # rounds up to 1
    assert [l.units for l in tiny.layers if isinstance(l, keras.layers.Dense)] == [1, 1, 10]
    alpha = models.get_model("mobilenet_v1", (32, 32, 3), 10, width_multiplier=0.25)
    assert alpha.layers[1].filters == 8


def test_weight_decay_regularizes_every_kernel():
    model = models.get_model("lenet5", (28, 28, 1), 10, weight_decay=1e-4)
    assert len(model.losses) == 5  # two conv and three dense kernels
    assert not models.get_model("lenet5", (28, 28, 1), 10).losses


def test_batch_norm_option():
    model = models.get_model("mlp", (784,), 10, use_batch_norm=True)
    assert sum(isinstance(l, keras.layers.BatchNormalization) for l in model.layers) == 2
    lenet = models.get_model("lenet5", (28, 28, 1), 10, use_batch_norm=True)
    assert sum(isinstance(l, keras.layers.BatchNormalization) for l in lenet.layers) == 4
    # Reference placement: Dense (with bias and activation) then BN.
    dense = [l for l in model.layers if isinstance(l, keras.layers.Dense)]
    assert dense[0].use_bias and dense[0].activation is keras.activations.relu
    assert model.count_params() == 266_610 + 4 * (300 + 100)


def test_kernel_initializer_and_activation_are_used():
    model = models.get_model("mlp", (784,), 10, activation="tanh", kernel_initializer="zeros")
    dense = [l for l in model.layers if isinstance(l, keras.layers.Dense)]
    assert dense[0].activation is keras.activations.tanh
    assert not np.any(dense[0].kernel.numpy())


@pytest.mark.parametrize("name,fraction", [("lenet5", 0.1), ("mlp", 0.2), ("conv4", 0.3)])
def test_small_dense_width_multiplier_hits_target(name, fraction):
    shape = (28, 28, 1) if name != "conv4" else (32, 32, 3)
    full = models.count_params(models.get_model(name, shape, 10))
    target = fraction * full
    multiplier = models.small_dense_width_multiplier(name, shape, 10, target)
    assert 0 < multiplier < 1
    small = models.count_params(models.get_model(name, shape, 10, width_multiplier=multiplier))
    assert abs(small - target) / target < 0.03


def test_small_dense_width_multiplier_rejects_bad_arguments():
    with pytest.raises(ValueError, match="target_params"):
        models.small_dense_width_multiplier("mlp", (784,), 10, 0)
    with pytest.raises(ValueError, match="width_multiplier"):
        models.small_dense_width_multiplier("mlp", (784,), 10, 1000, width_multiplier=2.0)
