"""One exception root: every exception class of the three packages derives from it."""

from __future__ import annotations

import ast
from pathlib import Path

import prunesearch
from prunesearch.methods import errors as methods_errors
from prunesearch.search.errors import ConfigError, PrunesearchError

REPO = Path(__file__).resolve().parents[2]


def test_config_error_is_under_the_root_and_still_a_value_error() -> None:
    assert issubclass(ConfigError, PrunesearchError) and issubclass(ConfigError, ValueError)
    assert methods_errors.PrunesearchError is PrunesearchError
    assert methods_errors.ConfigError is ConfigError
    assert prunesearch.PrunesearchError is PrunesearchError


def test_every_exception_class_in_the_source_derives_from_the_root() -> None:
    """Read the source (no torch/ray import): a class whose bases name a builtin exception
    must also name PrunesearchError or one of the tree's classes."""
    tree_names = {"PrunesearchError", "ConfigError", "DataNotFoundError", "UnknownNameError",
                  "RunStateError", "UsageError"}
    import builtins

    builtin_errors = {name for name in dir(builtins) if name.endswith(("Error", "Exception"))}
    outside = []
    for folder in ("cluster", "methods", "search"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.ClassDef):
                    continue
                bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "")
                         for b in node.bases}
                if bases & builtin_errors and not bases & tree_names and \
                        node.name not in tree_names:
                    outside.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}")
    assert outside == [], "derive these from PrunesearchError: " + ", ".join(outside)
