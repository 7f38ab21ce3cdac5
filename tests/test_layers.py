"""The library's layers import only downward; the application layer alone parses arguments.

``io -> features -> models -> inspect -> report``: a module may import its own
layer and those to its left, never one to its right, nor the command line
(:mod:`featuremass.cli`) or the demo, and none reads ``argparse`` (so none can
take a Namespace). Imports inside functions count as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "featuremass"
LAYERS = ("io", "features", "models", "inspect", "report")
APPLICATION = ("cli", "demo")


def _imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Name | ast.Attribute):
            name = node.id if isinstance(node, ast.Name) else node.attr
            if name == "Namespace":
                yield node.lineno, "argparse.Namespace"
        elif isinstance(node, ast.FunctionDef) and "args" in {a.arg for a in node.args.args}:
            # A function reading attributes of an `args` parameter takes a Namespace.
            if any(isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
                   and n.value.id == "args" for n in ast.walk(node)):
                yield node.lineno, "argparse.Namespace (a parameter `args` read as one)"


def _violations(layer: str) -> list[str]:
    rank = LAYERS.index(layer)
    above = {f"featuremass.{name}" for name in LAYERS[rank + 1:] + APPLICATION}
    found = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for line, name in _imports(path):
            top = ".".join(name.split(".")[:2])
            if name.split(".")[0] == "argparse" or top in above:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}")
    return found


@pytest.mark.parametrize("layer", LAYERS)
def test_layer_imports_nothing_above_itself(layer):
    assert _violations(layer) == []


def test_the_check_sees_an_upward_import(tmp_path):
    # The rule must be able to fail: a models module importing inspect and reading a Namespace.
    fake = tmp_path / "featuremass"
    (fake / "models").mkdir(parents=True)
    (fake / "models" / "bad.py").write_text(
        "import argparse\n\ndef f(args: argparse.Namespace):\n"
        "    from featuremass.inspect.plots import residuals_vs_true\n"
        "    return residuals_vs_true(args.y, args.p, args.out)\n")
    global PACKAGE
    saved, PACKAGE = PACKAGE, fake
    try:
        assert len(_violations("models")) >= 4
    finally:
        PACKAGE = saved
