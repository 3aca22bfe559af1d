"""Packaging: the console script, the config YAML as package data, and the loud clash of our top-level
package names (envs, agents, analysis, experiments, configs) with another distribution's
(configs/_ownership.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from configs._ownership import PACKAGES

ROOT = Path(__file__).resolve().parents[1]


def python(code: str, cwd: Path, pythonpath: list[Path] | None = None) -> subprocess.CompletedProcess:
    """``python -c code`` in ``cwd`` (first on sys.path), with exactly ``pythonpath`` after it."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH", "PYTHONSTARTUP")}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(map(str, pythonpath))
    cmd = [sys.executable, "-c", code]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)


def fake_distribution(site: Path, package: str) -> str:
    """A foreign top-level ``package`` in ``site``, with the metadata of an installed distribution."""
    (site / package).mkdir(parents=True)
    (site / package / "__init__.py").write_text("FOREIGN = True\n")
    dist_info = site / f"fake_{package}-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fake-{package}\nVersion: 1.0\n")
    (dist_info / "top_level.txt").write_text(f"{package}\n")
    return f"fake-{package}"


def test_our_packages_import_from_the_repo_root():
    result = python("import configs, agents, analysis, experiments, envs", cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_our_packages_import_from_elsewhere_when_installed(tmp_path):
    result = python("import configs, agents, analysis, experiments, envs; print(configs.__file__)", cwd=tmp_path)
    if result.returncode and "No module named" in result.stderr and "misgen" not in result.stderr:
        pytest.skip("misgen is not installed in this interpreter (pip install -e .)")
    assert result.returncode == 0, result.stderr


def test_the_check_imports_nothing_outside_the_standard_library():
    code = "import sys; before = set(sys.modules); import configs; print(*sorted(set(sys.modules) - before))"
    result = python(code, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    new = [m for m in result.stdout.split() if m.split(".")[0] not in sys.stdlib_module_names]
    assert new == ["configs", "configs._ownership"]


@pytest.mark.parametrize("foreign", PACKAGES)
def test_a_foreign_package_first_on_sys_path_is_an_import_error_naming_it(tmp_path, foreign):
    site = tmp_path / "site"
    distribution = fake_distribution(site, foreign)
    ours = "agents" if foreign == "configs" else "configs"  # import one of ours; the clash is detected there
    result = python(f"import {ours}", cwd=tmp_path, pythonpath=[site, ROOT])
    assert result.returncode != 0, result.stdout
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("ImportError: misgen:"), result.stderr
    assert f"top-level package {foreign!r} resolves to {site / foreign / '__init__.py'}" in error
    assert f"installed distribution {distribution}" in error
    assert "virtual environment of its own" in error


def test_a_foreign_package_without_metadata_is_named_by_its_place(tmp_path):
    (tmp_path / "site" / "envs").mkdir(parents=True)
    (tmp_path / "site" / "envs" / "__init__.py").write_text("")
    result = python("import analysis", cwd=tmp_path, pythonpath=[tmp_path / "site", ROOT])
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("ImportError: misgen: the top-level package 'envs' resolves to"), result.stderr
    assert "a directory on sys.path or PYTHONPATH" in error


def copy_of_our_packages(root: Path) -> Path:
    """The five packages' ``__init__`` files (and the check) in ``root``, laid out like site-packages."""
    for package in PACKAGES:
        (root / package).mkdir(parents=True)
        shutil.copy(ROOT / package / "__init__.py", root / package / "__init__.py")
    shutil.copy(ROOT / "configs" / "_ownership.py", root / "configs" / "_ownership.py")
    return root


def test_a_package_installed_over_ours_in_place_is_an_import_error(tmp_path):
    # Two distributions installing the same top-level name into one site-packages: the later one's files
    # replace ours there, in the same directory as our other packages.
    root = copy_of_our_packages(tmp_path / "site-packages")
    assert python("import configs, agents, analysis, experiments", cwd=root).returncode == 0
    (root / "agents" / "__init__.py").write_text('"""Someone else\'s agents."""\n')
    result = python("import configs", cwd=root)
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("ImportError: misgen: the top-level package 'agents' resolves to"), result.stderr
    assert f"resolves to {root / 'agents' / '__init__.py'}, not to misgen's {root / 'agents'}" in error


def test_pyproject_installs_the_misgen_command_and_every_config_file():
    setuptools = pytest.importorskip("setuptools")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["misgen"] == "experiments.cli:main"
    find = project["tool"]["setuptools"]["packages"]["find"]
    assert find.get("namespaces", True), "the YAML-only config groups are namespace packages"
    (where,) = find.get("where", ["."])
    packages = setuptools.find_namespace_packages(
        str(ROOT / where), include=find.get("include", ["*"]), exclude=find.get("exclude", [])
    )
    assert set(PACKAGES) <= set(packages)
    assert not [p for p in packages if "__pycache__" in p or p.split(".")[0] not in PACKAGES], packages
    data = project["tool"]["setuptools"]["package-data"]["*"]
    for yaml in (ROOT / "configs").rglob("*.yaml"):
        package = ".".join(yaml.parent.relative_to(ROOT).parts)
        assert package in packages, f"{yaml.relative_to(ROOT)} would not be installed"
        assert any(yaml.match(pattern) for pattern in data), f"{yaml.relative_to(ROOT)} is not package data"
