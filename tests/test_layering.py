"""The packages import in one direction only: envs <- agents <- analysis <- experiments (docs/architecture.md)."""

from __future__ import annotations

import ast

import pytest

from tests.conftest import ROOT

LAYERS = ("envs", "agents", "analysis", "experiments")


def _imported_packages(path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):  # function-level (lazy) imports count too
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names & set(LAYERS)


@pytest.mark.parametrize("package", LAYERS)
def test_a_package_imports_nothing_from_the_layers_above_it(package):
    above = set(LAYERS[LAYERS.index(package) + 1 :])
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imported_packages(path) & above)
        for path in sorted((ROOT / package).rglob("*.py"))
        if _imported_packages(path) & above
    }
    assert not offenders, f"{package} must not import {sorted(above)}: {offenders}"
