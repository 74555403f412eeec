"""One test per row of the bad-input catalogue (tests/errors_catalogue.py, README "Errors")."""

import os
import re
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from errors_catalogue import CATALOGUE  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("area, what, call, exc, pattern", CATALOGUE,
                         ids=[f"{a}: {w}" for a, w, *_ in CATALOGUE])
def test_error_row(area, what, call, exc, pattern):
    if "tf_keras" in what or "Keras 2" in what:
        pytest.importorskip("tf_keras")
    with pytest.raises(exc) as info:
        call()
    assert re.search(pattern, str(info.value), re.S), str(info.value)


def test_catalogue_size_and_readme_in_sync():
    assert len(CATALOGUE) >= 30
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    missing = [what for _, what, *_ in CATALOGUE if f"| {what} |" not in readme]
    assert not missing, f"README 'Errors' table is missing rows (run tools/errors_table.py): {missing}"
