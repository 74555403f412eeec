"""rigl_tf.files on a local path and on TensorFlow's in-memory file system (ram://, the
stand-in for gs://): atomic replace, nothing left on failure, directories, JSON."""

import json
import os
import uuid

import pytest
import tensorflow as tf

from rigl_tf import files


@pytest.fixture(params=["local", "ram"])
def base(request, tmp_path):
    if request.param == "local":
        return str(tmp_path)
    return f"ram://cli14-{uuid.uuid4().hex}"


def _read(path):  # TensorFlow's own reader, not the code under test
    with tf.io.gfile.GFile(path, "rb") as f:
        return f.read().decode()


def _listing(base):
    out = []
    for root, _, names in tf.io.gfile.walk(base):
        out += [f"{root}/{n}"[len(base) + 1:] for n in names]
    return sorted(out)


def test_is_remote():
    assert files.is_remote("gs://b/run") and files.is_remote("ram://x")
    assert not files.is_remote("/tmp/x") and not files.is_remote("runs/x")


def test_write_text_and_replace(base):
    path = f"{base}/sub/results.txt"
    assert files.write_text(path, "one\n") == path
    assert _read(path) == "one\n"
    files.write_text(path, "two\n")
    assert _read(path) == "two\n" and files.read_text(path) == "two\n"
    assert _listing(base) == ["sub/results.txt"]  # no temporary names left


def test_failure_keeps_the_old_file_and_leaves_nothing(base):
    path = f"{base}/results.json"
    files.write_json(path, {"a": 1})
    with pytest.raises(RuntimeError, match="boom"):
        with files.atomic_output(path) as tmp:
            with open(tmp, "w") as f:
                f.write('{"a": 2, "trunc')
            raise RuntimeError("boom")
    assert json.loads(_read(path)) == {"a": 1}
    assert _listing(base) == ["results.json"]


def test_directory_output(base):
    path = f"{base}/export"
    with files.atomic_output(path) as tmp:
        os.makedirs(os.path.join(tmp, "variables"))
        with open(os.path.join(tmp, "saved_model.pb"), "w") as f:
            f.write("pb")
        with open(os.path.join(tmp, "variables", "v.index"), "w") as f:
            f.write("idx")
    assert _listing(base) == ["export/saved_model.pb", "export/variables/v.index"]
    assert _read(f"{path}/variables/v.index") == "idx"


def test_train_atomic_write_uses_the_layer(base):
    from rigl_tf.experiments import train

    path = f"{base}/operative_config.gin"
    train._atomic_write(path, "x = 1\n")
    assert _read(path) == "x = 1\n" and _listing(base) == ["operative_config.gin"]


def test_write_json_never_writes_nan(tmp_path):
    """NaN / inf (Python and numpy) become null, listed under "nonfinite_values"; the file
    parses with a strict parser (one that rejects NaN/Infinity)."""
    import numpy as np

    path = str(tmp_path / "out.json")
    files.write_json(path, {"a": float("nan"), "b": [1.0, np.float32("inf")],
                            "c": np.array([-np.inf, 2.0]), "d": {"e": 3}})

    def reject(token):
        raise ValueError(f"non-standard JSON constant {token}")

    with open(path) as f:
        data = json.loads(f.read(), parse_constant=reject)
    assert data == {"a": None, "b": [1.0, None], "c": [None, 2.0], "d": {"e": 3},
                    "nonfinite_values": ["a", "b/1", "c/0"]}
