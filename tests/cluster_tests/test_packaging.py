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


def test_a_config_loads_without_listing_torchvisions_model_zoo():
    # Listing torchvision's classifiers imports its model zoo (and torch._dynamo): 1.3 s of
    # every CLI command and evaluator process. Membership is answered without it, unless the
    # config names a torchvision model; a refused name still lists every valid one.
    code = (
        "import sys\n"
        "from prunesearch.cluster.config import load_config\n"
        "from prunesearch.methods.families import model_family\n"
        "load_config({'model': {'name': 'resnet20'}})\n"
        "model_family('digits-cnn')\n"
        "print('torchvision.models' in sys.modules)\n"
        "load_config({'model': {'name': 'torchvision:resnet18'}})\n"
        "print('torchvision.models' in sys.modules)\n"
        "try:\n"
        "    load_config({'model': {'name': 'torchvision:no_such_net'}})\n"
        "except Exception as exc:\n"
        "    print('torchvision:densenet121' in str(exc) and 'no_such_net' in str(exc))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.split() == ["False", "True", "True"], proc.stdout


def test_a_second_family_claiming_a_name_is_refused():
    from prunesearch.methods.families import FAMILIES, register_family
    from prunesearch.methods.families.digits_cnn import DigitsCNNFamily

    class Twin(DigitsCNNFamily):
        name = "digits-twin"

    with pytest.raises(ValueError, match="already belong to another family"):
        register_family(Twin())
    assert "digits-twin" not in FAMILIES
