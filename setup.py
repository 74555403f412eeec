"""Packaging for rigl_tf: sparse training and lottery-ticket science on Keras 3."""

from setuptools import find_packages, setup

setup(
    name="rigl_tf",
    version="0.1.0",
    description=(
        "Sparse neural-network training (RigL, SET, SNFS, pruning, lottery tickets) "
        "and analysis tools for Keras 3 / TensorFlow 2."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["rigl_tf", "rigl_tf.*"]) + ["rigl_tf.configs"],
    # The shipped gin configs install as rigl_tf/configs (found by name from any
    # directory: --gin_config=mnist_lenet5/rigl.gin); the repository keeps them in configs/.
    package_dir={"rigl_tf.configs": "configs"},
    package_data={"rigl_tf.configs": ["*.gin", "*/*.gin"]},
    python_requires=">=3.9",
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3.0",
        "tensorflow-datasets",
        "absl-py",
        "gin-config",
        "numpy",
        "scikit-learn",
        "matplotlib",
    ],
    extras_require={
        # tensorboard: the README's `tensorboard --logdir ...` and the event-file test.
        "test": ["pytest", "hypothesis", "pytest-xdist", "tensorboard"],
        "tensorboard": ["tensorboard"],
        "tfmot": ["tensorflow-model-optimization", "tf_keras"],
    },
    entry_points={
        "console_scripts": [
            "rigl-train=rigl_tf.commands.train:run",
            "rigl-lottery=rigl_tf.commands.lottery:run",
            "rigl-gradient-flow=rigl_tf.commands.gradient_flow:main",
            "rigl-hessian=rigl_tf.commands.hessian:main",
            "rigl-interpolate=rigl_tf.commands.interpolate:main",
            "rigl-similarity=rigl_tf.commands.similarity:main",
            "rigl-distances=rigl_tf.commands.distances:main",
            "rigl-ticket-stats=rigl_tf.commands.ticket_stats:main",
            "rigl-plot-runs=rigl_tf.commands.plot_runs:main",
            "rigl-reproduce=rigl_tf.commands.reproduce:main",
        ],
    },
    include_package_data=True,
)
