"""Helpers shared by the cluster tests: the CLI called in-process, and a run directory copy."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> types.SimpleNamespace:
    """``prunesearch ARGS`` in this process, from the repository root (saves a fresh
    interpreter and its imports per call; tests that need the real entry point run
    ``python -m prunesearch`` themselves). Returns ``returncode``, ``stdout``, ``stderr``."""
    from prunesearch.cluster.cli import main

    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse: --help, unknown commands, bad options
                code = exc.code
    finally:
        os.chdir(cwd)
    return types.SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def copy_run(run_dir: Path, target: Path) -> Path:
    """A copy of a finished run directory at ``target`` (its lock file left out), e.g. a
    module's own copy of the shared quickstart run (conftest ``quickstart_template``)."""
    shutil.copytree(run_dir, target, ignore=shutil.ignore_patterns(".lock"))
    return target
