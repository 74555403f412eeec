"""Package hygiene: no import cycles, documented module paths import, console scripts
resolve, the README's tables render."""

import ast
import configparser
import importlib
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "rigl_tf")


def _modules():
    out = {}
    for directory, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(directory, f)
                name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                out[name[:-len(".__init__")] if name.endswith(".__init__") else name] = path
    return out


def import_graph(modules):
    """Module -> set of package modules it imports (at module level or inside functions).

    ``from a.b import c`` is an edge to ``a.b.c`` when that is a module, else to ``a.b``;
    the implicit import of parent packages is not an edge (it is not a cycle risk).
    """
    graph = {}
    for name, path in modules.items():
        is_pkg = path.endswith("__init__.py")
        edges = set()
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, ast.Import):
                edges.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[:len(base) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                for a in node.names:
                    sub = f"{module}.{a.name}"
                    edges.add(sub if sub in modules else module)
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def find_cycle(graph):
    """One import cycle as a list ``[a, b, ..., a]``, or None (iterative DFS)."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(graph, WHITE)
    for root in sorted(graph):
        if color[root] != WHITE:
            continue
        stack = [(root, iter(sorted(graph[root])))]
        color[root] = GREY
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                color[node] = BLACK
                stack.pop()
            elif color[nxt] == GREY:
                path = [n for n, _ in stack]
                return path[path.index(nxt):] + [nxt]
            elif color[nxt] == WHITE:
                color[nxt] = GREY
                stack.append((nxt, iter(sorted(graph[nxt]))))
    return None


def test_cycle_finder_on_hand_made_graphs():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": set(), "b": {"c"}, "c": {"b"}}) == ["b", "c", "b"]


def test_import_graph_reads_lazy_and_relative_imports(tmp_path):
    pkg = tmp_path / "rigl_tf"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from rigl_tf.sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def f():\n    from . import c\n")
    (pkg / "sub" / "c.py").write_text("import os\nimport rigl_tf.sub.b\n")
    modules = {"rigl_tf": str(pkg / "__init__.py"),
               "rigl_tf.sub": str(pkg / "sub" / "__init__.py"),
               "rigl_tf.sub.b": str(pkg / "sub" / "b.py"),
               "rigl_tf.sub.c": str(pkg / "sub" / "c.py")}
    graph = import_graph(modules)
    assert graph == {"rigl_tf": {"rigl_tf.sub.b"}, "rigl_tf.sub": set(),
                     "rigl_tf.sub.b": {"rigl_tf.sub.c"}, "rigl_tf.sub.c": {"rigl_tf.sub.b"}}
    assert find_cycle(graph) == ["rigl_tf.sub.b", "rigl_tf.sub.c", "rigl_tf.sub.b"]


def test_no_import_cycles_in_the_package():
    """No module imports one that imports it back (directly or through others), lazily or not."""
    cycle = find_cycle(import_graph(_modules()))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _readme():
    return open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()


def test_every_documented_module_path_imports():
    """Each dotted ``rigl_tf.x.y`` in the README resolves; each module among them imports."""
    import rigl_tf

    paths = sorted(set(re.findall(r"(?<![\w./])rigl_tf(?:\.[A-Za-z_]\w*)+", _readme())))
    assert "rigl_tf.updaters" in paths
    problems = []
    for path in paths:
        obj, parts = rigl_tf, path.split(".")[1:]
        for i, part in enumerate(parts):
            if not hasattr(obj, part):
                try:  # a submodule not imported by its package
                    importlib.import_module(".".join(["rigl_tf"] + parts[:i + 1]))
                except ImportError:
                    pass
            if not hasattr(obj, part):
                problems.append(f"{path}: no attribute {part!r}")
                break
            obj = getattr(obj, part)
            if type(obj).__name__ == "module":
                name = ".".join(["rigl_tf"] + parts[:i + 1])
                try:
                    importlib.import_module(name)
                except ImportError as e:
                    problems.append(f"import {name}: {e}")
    files = set(re.findall(r"\b(rigl_tf/[\w/]+\.py|tools/\w+\.py|configs/[\w/]+\.gin)",
                           _readme()))
    problems += [f"{f}: no such file" for f in sorted(files)
                 if not os.path.exists(os.path.join(ROOT, f))]
    assert not problems, problems


def test_import_rigl_tf_updaters_in_a_fresh_process():
    code = "import rigl_tf.updaters as u, rigl_tf; assert u is rigl_tf.updaters; u.RigL"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _console_scripts():
    tree = ast.parse(open(os.path.join(ROOT, "setup.py"), encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == "console_scripts":
                    return [ast.literal_eval(v) for v in value.elts]
    raise AssertionError("setup.py has no console_scripts")


def test_console_scripts_resolve_to_callables():
    scripts = dict(s.split("=", 1) for s in _console_scripts())
    analysis = {"rigl-gradient-flow", "rigl-hessian", "rigl-interpolate", "rigl-similarity",
                "rigl-distances", "rigl-ticket-stats", "rigl-plot-runs"}
    assert {"rigl-train", "rigl-lottery"} | analysis <= set(scripts)
    for name, target in scripts.items():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), name
    for name in analysis:  # the README's analysis section uses the installed names
        assert re.search(rf"^{name} ", _readme(), re.M), name
    assert not [f for f in os.listdir(os.path.join(ROOT, "tools"))
                if f.endswith(".py") and not f.startswith(("bench_", "errors_table",
                                                           "mutation_check"))]


def markdown_table_problems(text):
    """Lines that break a Markdown table: a non-'|' line inside one, or a wrong cell count."""
    problems, in_fence, header = [], False, None
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if line.startswith("```"):
            in_fence = not in_fence
        if in_fence:
            continue
        cells = len(re.findall(r"(?<!\\)\|", line.strip())) - 1
        if line.startswith("|"):
            if header is None:
                header = cells
            elif cells != header:
                problems.append(f"line {i + 1}: {cells} cells, header has {header}")
        elif header is not None:
            if line.strip() and not line.startswith("|"):
                prev = lines[i - 1]
                if prev.startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|"):
                    problems.append(f"line {i + 1}: stray text inside a table: {line[:60]!r}")
            if not line.strip() or not line.startswith("|"):
                header = None
    return problems


def test_table_checker_on_hand_made_text():
    good = "| a | b |\n| --- | --- |\n| 1 | x \\| y |\n\ntext"
    assert markdown_table_problems(good) == []
    bad = "| a | b |\n| --- | --- |\n| 1 | 2 |\nstray output\n| 3 | 4 |\n"
    assert len(markdown_table_problems(bad)) == 1
    assert markdown_table_problems("| a | b |\n| --- | --- |\n| 1 | 2 | 3 |\n")


def test_readme_tables_render():
    assert markdown_table_problems(_readme()) == []


def test_gitignore_covers_the_readme_venv():
    ignored = open(os.path.join(ROOT, ".gitignore"), encoding="utf-8").read().split()
    assert ".venv/" in ignored
