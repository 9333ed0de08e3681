"""The one atomic-write helper: what a reader sees, and that no other module renames files."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from prunesearch.methods.io import atomic_path, atomic_write_bytes, atomic_write_json

REPO = Path(__file__).resolve().parents[2]
HELPER = REPO / "methods" / "io.py"


def _renames(path: Path) -> list[str]:
    """Calls of ``os.replace``/``os.rename``/``<x>.replace(a)``/``<x>.rename(a)`` with a path-like
    single argument (``str.replace`` takes two, so it is not counted)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        name = node.func.attr
        owner = node.func.value
        if isinstance(owner, ast.Name) and owner.id in ("os", "shutil") and name in (
                "replace", "rename", "renames", "move"):
            found.append(f"{path.relative_to(REPO)}:{node.lineno} {owner.id}.{name}")
        elif name in ("replace", "rename") and len(node.args) == 1 and not node.keywords:
            found.append(f"{path.relative_to(REPO)}:{node.lineno} .{name}(...)")
    return found


def test_only_the_helper_renames_files() -> None:
    offenders = []
    for folder in ("cluster", "methods", "search"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if path != HELPER:
                offenders += _renames(path)
    assert offenders == [], "write with prunesearch.methods.io instead: " + ", ".join(offenders)
    assert _renames(HELPER), "the walker no longer recognises the helper's own rename"


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "state.json"
    atomic_write_json(target, {"generation": 1})

    def broken(handle) -> None:
        handle.write(b'{"generation": 2')
        raise RuntimeError("disk full")

    from prunesearch.methods.io import atomic_write

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, broken)
    assert json.loads(target.read_text()) == {"generation": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["state.json"]


def test_the_temp_file_is_complete_before_it_replaces_the_target(tmp_path: Path) -> None:
    target = tmp_path / "driver.pkl"
    atomic_write_bytes(target, b"old")
    seen = {}

    def before(tmp: Path) -> None:
        seen["tmp"] = tmp.read_bytes()
        seen["target"] = target.read_bytes()

    atomic_write_bytes(target, b"new-state", before_replace=before)
    assert seen == {"tmp": b"new-state", "target": b"old"}
    assert target.read_bytes() == b"new-state"


def test_unique_temp_names_for_shared_caches(tmp_path: Path) -> None:
    target = tmp_path / "cache.npy"
    with atomic_path(target, unique=True, durable=False) as first, \
            atomic_path(target, unique=True, durable=False) as second:
        assert first != second
        first.write_bytes(b"a")
        second.write_bytes(b"b")
    assert target.read_bytes() in (b"a", b"b")
    assert [p.name for p in tmp_path.iterdir()] == ["cache.npy"]
