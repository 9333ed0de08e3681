"""The distribution maps every sub-package folder and refuses bare folder imports."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOP_LEVEL = ("search", "methods", "cluster")


def _packages_on_disk() -> set[str]:
    found = set()
    for top in TOP_LEVEL:
        for init in (REPO / top).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO)
            if any(part.startswith((".", "_")) or part == "__pycache__" for part in rel.parts):
                continue
            found.add("prunesearch." + ".".join(rel.parts))
    return found


def test_every_subpackage_folder_is_listed_in_pyproject():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    missing = _packages_on_disk() - listed
    assert not missing, f"sub-package folders missing from pyproject.toml packages: {sorted(missing)}"
    for pkg in listed:
        assert pkg in config["package-dir"], f"{pkg} has no package-dir mapping"
        assert (REPO / config["package-dir"][pkg] / "__init__.py").exists(), pkg


@pytest.mark.parametrize("name", sorted(_packages_on_disk() | {"prunesearch"}))
def test_every_listed_package_imports(name):
    importlib.import_module(name)


@pytest.mark.parametrize("folder", TOP_LEVEL)
def test_bare_folder_import_is_refused_with_instructions(folder):
    proc = subprocess.run(
        [sys.executable, "-c", f"import {folder}"], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode != 0
    assert f"prunesearch.{folder}" in proc.stderr


def _modules_loaded_after_importing_all(package: str, watched: tuple[str, ...]) -> str:
    code = (f"import sys, pkgutil, importlib, {package} as p\n"
            f"for info in pkgutil.walk_packages(p.__path__, '{package}.'):\n"
            "    importlib.import_module(info.name)\n"
            f"print(','.join(x for x in {watched!r} if x in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def test_search_layer_never_imports_torch_or_ray():
    assert _modules_loaded_after_importing_all("prunesearch.search", ("torch", "ray")) == ""


def test_methods_layer_never_imports_ray_or_pymoo():
    assert _modules_loaded_after_importing_all("prunesearch.methods", ("ray", "pymoo")) == ""


def test_search_settings_and_synthetic_need_no_pymoo():
    # methods imports these on GPU machines that have no pymoo installed
    code = ("import sys, prunesearch.search.settings, prunesearch.search.synthetic\n"
            "print('pymoo' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"
