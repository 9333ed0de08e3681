"""Fixtures shared by the cluster tests."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _checkpoint_key(tmp_path_factory):
    """Checkpoints of the tests are sealed with a key of their own (never the user's key file
    in ~/.config); subprocess drivers inherit it through the environment."""
    from prunesearch.cluster.sealed import KEY_ENV, KEY_FILE_ENV

    saved = {k: os.environ.get(k) for k in (KEY_ENV, KEY_FILE_ENV)}
    os.environ.pop(KEY_ENV, None)
    os.environ[KEY_FILE_ENV] = str(tmp_path_factory.mktemp("keys") / "checkpoint.key")
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def local_ray():
    """A private local Ray instance (token auth on, as by default) with 8 evaluator slots."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", resources={"evaluator": 8}, num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def quickstart_template(tmp_path_factory):
    """One small quickstart search through the CLI (local Ray, real pruning of the digits
    model), shared by the modules that test what comes after a search: each takes its own
    copy. Returns the run directory and the finished process."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    run_dir = tmp_path_factory.mktemp("quickstart") / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "prunesearch", "run", "configs/quickstart.yaml",
         "--output", str(run_dir),
         "--set", "search.budget=24", "--set", "search.pop_size=8",
         "--set", "hardware.repeats=10", "--set", "hardware.calibration_genomes=2",
         # Plumbing under test, not latency quality: one calibration round, short entries.
         "--set", "hardware.calibration_rounds=1", "--set", "hardware.table_repeats=5",
         # The plumbing is under test, not the base model: 5 epochs keep the ResNet-14's
         # training (cached afterwards) short.
         "--set", "model.pretrain_epochs=5",
         # Candidates get only 3 fine-tuning steps in the search, so that the final
         # fine-tune (test_finetune) has something to recover.
         "--set", "evaluator.finetune_steps=3",
         "--set", "finetune.batch_size=64", "--set", "finetune.lr=0.02"],
        cwd=repo, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, proc
