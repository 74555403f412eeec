"""The mutation check (tools/mutation_check.py): its mechanism, and every mutant caught."""

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
TOOLS = os.path.join(ROOT, "tools")
sys.path.insert(0, TOOLS)
import mutation_check as mc  # noqa: E402

sys.path.remove(TOOLS)


def _sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _by_name(name):
    return next(m for m in mc.MUTANTS if m.name == name)


def test_mutant_is_applied_in_memory_only():
    """A mutant changes behaviour in a fresh process, including inside a tf.function
    (autograph re-reads source), while the file on disk stays byte-identical."""
    topk = _by_name("top-k off by one")
    disagree = _by_name("disagreement on probabilities instead of argmax")
    before = {m.path(): _sha(m.path()) for m in (topk, disagree)}
    script = textwrap.dedent("""
        import mutation_check  # installs the mutant named in the environment
        import numpy as np
        import rigl_tf.sparsity.masks as M
        import rigl_tf.analysis.similarity as S
        print(int(M.topk_mask(np.ones(4, np.float32), 2).numpy().sum()))  # all tied
        p = np.array([[0.6, 0.4]]); q = np.array([[0.7, 0.3]])
        print(S.disagreement(p, q))
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, TOOLS]),
               TF_CPP_MIN_LOG_LEVEL="3")

    def run(mutant):
        if mutant is not None:
            env[mc.ENV_VAR] = json.dumps(dataclasses.asdict(mutant))
        else:
            env.pop(mc.ENV_VAR, None)
        out = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout.split()[-2:]

    assert run(None) == ["2", "0.0"]  # the package as written
    assert run(topk) == ["3", "0.0"]  # k + 1 ones, from inside a tf.function
    assert run(disagree) == ["2", "1.0"]
    assert {m.path(): _sha(m.path()) for m in (topk, disagree)} == before


def test_snippet_not_found_is_not_applicable_and_fails(monkeypatch, capsys):
    stale = mc.Mutant("stale", "rigl_tf.sparsity.masks", "this text is not in the file",
                      "x", ("tests/test_sparsity.py",))
    result = mc.run_mutant(stale)
    assert result["status"] == "NOT APPLICABLE" and "found 0 times" in result["detail"]
    monkeypatch.setattr(mc, "MUTANTS", [stale])
    assert mc.main(["-j", "1"]) == 1
    assert "0/1 caught" in capsys.readouterr().out


def test_every_mutant_applies_to_the_current_code():
    assert len(mc.MUTANTS) >= 20
    assert len({m.name for m in mc.MUTANTS}) == len(mc.MUTANTS)
    modules = {m.module.split(".")[1] for m in mc.MUTANTS}
    assert {"sparsity", "keras", "lottery", "analysis"} <= modules
    assert [m.name for m in mc.MUTANTS if mc.check_applicable(m)] == []


@pytest.mark.slow
def test_every_mutant_is_caught(tmp_path):
    report = tmp_path / "mutation.json"
    out = subprocess.run([sys.executable, os.path.join(TOOLS, "mutation_check.py"),
                          "--json", str(report)], cwd=ROOT, capture_output=True, text=True,
                         timeout=3600)
    data = json.loads(report.read_text())
    missed = [(r["name"], r["status"], r["detail"]) for r in data["mutants"]
              if r["status"] != "caught"]
    assert missed == [], out.stdout[-3000:]
    assert out.returncode == 0
