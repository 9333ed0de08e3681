"""A table of bad inputs across ``run``, ``resume``, ``report`` and ``export``: each is exit 2
with exactly one line on stderr, nothing on stdout, no traceback, and no change to a complete
run directory that was there before.

The cases run in-process (``main([...])``), which is what makes 40 of them affordable; the
subprocess tests in ``test_cli_errors.py`` cover the same path end to end.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import yaml

from prunesearch.cluster.cli import main
from prunesearch.cluster.rundir import LOCK_NAME, RunDirLock
from prunesearch.cluster.sealed import KEY_ENV, seal

# The real digits task (no download): refused in the CLI's preflight, before anything exists.
DIGITS = ["--set", "evaluator.kind=finetune", "--set", "data.name=digits", "--set",
          "model.name=digits-cnn"]

SYNTHETIC = {"method": "random", "seed": 0, "evaluator": {"kind": "synthetic"},
             "search": {"budget": 8, "pop_size": 4}, "cluster": {"num_evaluators": 1}}


@pytest.fixture(scope="module")
def prior(local_ray, tmp_path_factory) -> dict[str, Path]:
    """A complete synthetic search run plus config files, shared by every case (one Ray
    instance for the module: the runs inside join it instead of starting their own)."""
    root = tmp_path_factory.mktemp("bad-inputs")
    job = root / "job.yaml"
    job.write_text(yaml.safe_dump(SYNTHETIC))
    run_dir = root / "prior-run"
    assert main(["run", str(job), "--output", str(run_dir)]) == 0
    files = {
        "job": job,
        "run": run_dir,
        "root": root,
        "empty": root / "empty.yaml",
        "list": root / "list.yaml",
        "two_docs": root / "two.yaml",
        "malformed": root / "bad.yaml",
        "binary": root / "binary.yaml",
        "plain_file": root / "plain.txt",
        "no_config_dir": root / "not-a-run",
        "corrupt_run": root / "corrupt-run",
        "no_front_run": root / "no-front-run",
    }
    files["empty"].write_text("")
    files["list"].write_text("- 1\n- 2\n")
    files["two_docs"].write_text("seed: 1\n---\nseed: 2\n")
    files["malformed"].write_text("search: [budget: 3\n")
    files["binary"].write_bytes(b"\xff\xfe\x00bad")
    files["plain_file"].write_text("not a directory\n")
    files["no_config_dir"].mkdir()
    corrupt = files["corrupt_run"]
    corrupt.mkdir()
    (corrupt / "config.yaml").write_text("method: [unclosed\n")
    (corrupt / "journal.jsonl").write_text("")
    no_front = files["no_front_run"]
    no_front.mkdir()
    (no_front / "config.yaml").write_text(yaml.safe_dump(SYNTHETIC))
    (no_front / "journal.jsonl").write_text("")
    files["address"] = ray_address()
    files["garbage_state_run"] = _resumable_copy(run_dir, root / "garbage-state-run")
    (files["garbage_state_run"] / "state" / "driver.pkl").write_bytes(b"\x80\x05garbage")
    files["no_table_run"] = _resumable_copy(run_dir, root / "no-table-run")
    # As if the run had timed a latency table at its start and the file was deleted since.
    meta_path = files["no_table_run"] / "state" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "latency_table_sha256": "0" * 64}))
    return files


def ray_address() -> str:
    import ray

    return ray.get_runtime_context().gcs_address


def _resumable_copy(run_dir: Path, target: Path) -> Path:
    """A copy of a complete run that says it was interrupted (so resume goes on into it)."""
    shutil.copytree(run_dir, target, ignore=shutil.ignore_patterns(LOCK_NAME))
    summary = json.loads((target / "summary.json").read_text())
    (target / "summary.json").write_text(json.dumps({**summary, "status": "interrupted"}))
    return target


def _tree_digest(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file() and p.name != ".lock"}


# (name, argv template, text the one line must contain). {job} {run} ... are paths from the
# `prior` fixture; {new} is a fresh output path that must not be created.
CASES = [
    ("missing config", ["run", "{root}/nope.yaml", "-o", "{new}"], "does not exist"),
    ("config is a directory", ["run", "{root}", "-o", "{new}"], "is a directory"),
    ("malformed yaml", ["run", "{malformed}", "-o", "{new}"], "not valid YAML"),
    ("binary config", ["run", "{binary}", "-o", "{new}"], "not a text file"),
    ("empty config", ["run", "{empty}", "-o", "{new}"], "is empty"),
    ("two documents", ["run", "{two_docs}", "-o", "{new}"], "2 YAML documents"),
    ("top-level list", ["run", "{list}", "-o", "{new}"], "must hold a mapping"),
    ("unknown top key", ["run", "{job}", "-o", "{new}", "--set", "serach.budget=3"],
     "did you mean 'search'"),
    ("unknown nested key", ["run", "{job}", "-o", "{new}", "--set", "search.budgit=3"],
     "search.budgit"),
    ("wrong type", ["run", "{job}", "-o", "{new}", "--set", "search.budget=abc"], "not an int"),
    ("below minimum", ["run", "{job}", "-o", "{new}", "--set", "search.budget=0"],
     "below the minimum"),
    ("unknown method", ["run", "{job}", "-o", "{new}", "--set", "method=hampp"],
     "did you mean 'hamp'"),
    ("unknown dataset", ["run", "{job}", "-o", "{new}", "--set", "evaluator.kind=finetune",
                         "--set", "data.name=imagenet"], "'imagenet' is not allowed"),
    ("unknown model", ["run", "{job}", "-o", "{new}", "--set", "evaluator.kind=finetune",
                       "--set", "model.name=resnet7"], "'resnet7' is not allowed"),
    ("missing checkpoint", ["run", "{job}", "-o", "{new}", "--set", "evaluator.kind=finetune",
                            "--set", "model.checkpoint={root}/none.pt"], "does not exist"),
    ("device not a name", ["run", "{job}", "-o", "{new}", "--set", "hardware.device=tpu7"],
     "not a device name"),
    ("bad dtype", ["run", "{job}", "-o", "{new}", "--set", "hardware.dtype=int3"], "int3"),
    ("set without =", ["run", "{job}", "-o", "{new}", "--set", "search.budget"],
     "expected key.path=value"),
    ("set empty key", ["run", "{job}", "-o", "{new}", "--set", "=3"], "empty key"),
    ("set section as value", ["run", "{job}", "-o", "{new}", "--set", "search=3"],
     "expected a mapping"),
    ("bad tune space key", ["run", "{job}", "-o", "{new}", "--set", "tune.space={{a: [1]}}"],
     "dotted config key"),
    ("bad tune range", ["run", "{job}", "-o", "{new}", "--set",
                        "tune.space={{clad.rate: {{min: 2, max: 1}}}}"], "min <= max"),
    ("metrics without modes", ["run", "{job}", "-o", "{new}", "--set", "tune.metrics=[a]"],
     "one mode"),
    ("existing run dir", ["run", "{job}", "-o", "{run}"], "already exists"),
    ("output is a file", ["run", "{job}", "-o", "{plain_file}"], "not a directory"),
    ("unwritable output", ["run", "{job}", "-o", "/proc/prunesearch-test/run"], "not writable"),
    ("resume missing dir", ["resume", "{root}/nowhere"], "does not exist"),
    ("resume not a run dir", ["resume", "{no_config_dir}"], "no config.yaml"),
    ("resume corrupt config", ["resume", "{corrupt_run}"], "not readable"),
    ("resume changes the search", ["resume", "{run}", "--set", "seed=5"], "seed"),
    ("resume unknown key", ["resume", "{run}", "--set", "cluster.num_evaluatorz=2"],
     "cluster.num_evaluatorz"),
    ("report missing dir", ["report", "{root}/nowhere"], "does not exist"),
    ("report not a run dir", ["report", "{no_config_dir}"], "not a prunesearch run directory"),
    ("report corrupt config", ["report", "{corrupt_run}"], "not readable YAML"),
    ("export missing dir", ["export", "{root}/nowhere", "--out", "{root}/m.pt"],
     "does not exist"),
    ("export out is a directory", ["export", "{run}", "--out", "{root}"], "is a directory"),
    ("export out parent missing", ["export", "{run}", "--out", "{root}/no/such/m.pt"],
     "does not exist"),
    ("export unknown pick", ["export", "{run}", "--pick", "fattest", "--out", "{root}/m.pt"],
     "--pick 'fattest'"),
    ("export pick not on front", ["export", "{run}", "--pick", "99999", "--out",
                                  "{root}/m.pt"], "not on the front"),
    ("export without front", ["export", "{no_front_run}", "--out", "{root}/m.pt"],
     "no pareto.csv"),
    ("export synthetic member", ["export", "{run}", "--out", "{root}/m.pt"],
     "synthetic evaluator"),
    ("unknown command option", ["run", "{job}", "--budget", "3"], "unrecognized arguments"),
    ("granularity leaves nothing to search", ["run", "{job}", "-o", "{new}", *DIGITS, "--set",
                                              "hardware.granularity=1000"],
     "leaves nothing to search"),
    ("val_size beyond the dataset", ["run", "{job}", "-o", "{new}", *DIGITS, "--set",
                                     "data.val_size=100000"], "smaller than the 1438 training"),
    ("budget not representable", ["run", "{job}", "-o", "{new}", "--set",
                                  "search.budget=100000000000000000000"], "above the maximum"),
    ("cuda on a cluster without GPUs", ["run", "{job}", "-o", "{new}", "--address", "{address}",
                                        "--set", "hardware.device=cuda"], "no GPU resources"),
    ("resume garbage state file", ["resume", "{garbage_state_run}"],
     "not a sealed prunesearch checkpoint"),
    ("resume with a deleted latency table", ["resume", "{no_table_run}"],
     "is missing: resuming with other latencies"),
]


@pytest.mark.parametrize(("name", "argv", "needle"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_exit_2_one_line_and_changes_nothing(prior, tmp_path, capsys, name, argv,
                                                          needle) -> None:
    paths = {k: str(v) for k, v in prior.items()}
    new = tmp_path / "new-run"
    args = [a.format(**paths, new=new) for a in argv]
    before = _tree_digest(prior["run"])
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (name, err)
    assert len(lines) == 1 and needle in lines[0], (name, err)
    assert "Traceback" not in err and out == "", (name, out, err)
    assert not new.exists(), f"{name}: a refused run created its directory"
    assert _tree_digest(prior["run"]) == before, f"{name}: the prior run directory changed"
    assert not list(prior["root"].glob("*.tmp")), f"{name}: a temp file was left behind"


class _WritesAFile:
    """Unpickling this writes a file: what a crafted checkpoint would do."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.write_text, (self.target, "pwned"))


def test_a_crafted_checkpoint_never_runs_on_resume(prior, tmp_path, capsys, monkeypatch) -> None:
    marker = tmp_path / "marker"
    crafted = pickle.dumps(_WritesAFile(marker))
    run_dir = _resumable_copy(prior["run"], tmp_path / "crafted")
    state = run_dir / "state" / "driver.pkl"
    # Unsealed, as an older prunesearch or an attacker would write it.
    state.write_bytes(crafted)
    assert main(["resume", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a sealed prunesearch checkpoint" in err[0]
    assert not marker.exists()
    # Sealed, but with another user's key.
    with monkeypatch.context() as patch:
        patch.setenv(KEY_ENV, os.urandom(32).hex())
        state.write_bytes(seal(crafted))
    assert main(["resume", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not sealed with this user's checkpoint key" in err[0]
    assert not marker.exists()
    # Left as it was: still resumable once the owner's state is back.
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"


def test_a_live_run_directory_is_refused_naming_its_holder(prior, capsys) -> None:
    before = _tree_digest(prior["run"])
    with RunDirLock(prior["run"]):
        # The holder is this very process (a separate open of the lock file conflicts).
        assert main(["resume", str(prior["run"])]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"in use by process {os.getpid()}" in err[0]
        assert main(["run", str(prior["job"]), "-o", str(prior["run"]), "--overwrite"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "in use by process" in err[0]
    assert _tree_digest(prior["run"]) == before
    # Once released (as when its process dies) the directory is usable again.
    assert main(["report", str(prior["run"])]) == 0


def test_overwrite_with_a_refused_config_keeps_the_old_run(prior, tmp_path, capsys) -> None:
    run_dir = tmp_path / "run"
    assert main(["run", str(prior["job"]), "-o", str(run_dir)]) == 0
    before = _tree_digest(run_dir)
    # Refused at task build (after the old run was moved aside): the old run comes back.
    code = main(["run", str(prior["job"]), "-o", str(run_dir), "--overwrite",
                 "--set", "evaluator.kind=finetune", "--set", "data.root=/nonexistent-data",
                 "--set", "data.name=cifar10", "--set", "model.name=resnet20"])
    assert code == 2
    assert _tree_digest(run_dir) == before
    assert not list(tmp_path.glob(".run.replaced-*"))
    # A good --overwrite replaces it for real.
    capsys.readouterr()
    assert main(["run", str(prior["job"]), "-o", str(run_dir), "--overwrite",
                 "--set", "seed=3"]) == 0
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["seed"] == 3
    assert not list(tmp_path.glob(".run.replaced-*"))
