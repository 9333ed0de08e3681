"""The quickstart as a user runs it: CLI -> local Ray -> real pruning of the digits model ->
pareto.csv -> report -> export of a real, smaller network that still runs."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import copy_run
from cli_helpers import run_cli as _cli_in_process

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str, timeout: int = 400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prunesearch", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def quick_run(quickstart_template, tmp_path_factory) -> Path:
    run_dir, proc = quickstart_template
    assert "gen 1 |" in proc.stdout and "complete:" in proc.stdout
    return copy_run(run_dir, tmp_path_factory.mktemp("qs") / "run")


def test_run_directory_follows_the_contract(quick_run):
    for name in ("config.yaml", "journal.jsonl", "pareto.csv", "pareto.png", "summary.json",
                 "latency_table.json"):
        assert (quick_run / name).exists(), name
    summary = json.loads((quick_run / "summary.json").read_text())
    assert summary["status"] == "complete"
    assert summary["evaluations"] == 24
    journal = [json.loads(line) for line in (quick_run / "journal.jsonl").read_text().splitlines()]
    assert len(journal) == 24
    assert len({tuple(r["genome"]) for r in journal}) == 24, "no genome evaluated twice"
    ok = [r for r in journal if r["status"] == "ok"]
    assert ok, "every candidate failed"
    for record in ok:
        assert 0.0 <= record["objectives"]["error"] <= 1.0
        assert record["objectives"]["latency_ms"] > 0 and record["objectives"]["memory_mb"] > 0


def test_front_is_non_dominated_and_physically_smaller(quick_run):
    with (quick_run / "pareto.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) >= 2
    F = np.array([[float(r["error"]), float(r["latency_ms"]), float(r["memory_mb"])] for r in rows])
    for i in range(len(F)):
        dominated = np.all(F <= F[i], axis=1) & np.any(F < F[i], axis=1)
        assert not dominated.any(), f"front member {rows[i]['id']} is dominated"
    assert all(float(r["latency_ms_measured"]) > 0 for r in rows)


def test_report_rerenders_the_same_front(quick_run):
    before = (quick_run / "pareto.csv").read_text().splitlines()
    (quick_run / "pareto.csv").unlink()
    proc = _cli_in_process("report", str(quick_run))
    assert proc.returncode == 0, proc.stderr
    after = (quick_run / "pareto.csv").read_text().splitlines()
    # measured latencies are not re-timed by report; ids and table objectives are identical
    strip = lambda lines: [",".join(line.split(",")[:4]) for line in lines]  # noqa: E731
    assert strip(after) == strip(before)


def test_export_gives_a_smaller_network_that_runs(quick_run, tmp_path):
    out = tmp_path / "knee.pt"
    proc = _cli("export", str(quick_run), "--pick", "knee", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    module = torch.load(out, weights_only=False)
    recipe = json.loads((tmp_path / "knee.pt.recipe.json").read_text())
    from prunesearch.methods.models import build_model

    import yaml

    model_name = yaml.safe_load((quick_run / "config.yaml").read_text())["model"]["name"]
    dense = build_model(model_name, num_classes=10)
    n_pruned = sum(p.numel() for p in module.parameters())
    n_dense = sum(p.numel() for p in dense.parameters())
    assert n_pruned < n_dense
    assert n_pruned == int(recipe["candidate"]["params"])
    with torch.inference_mode():
        logits = module(torch.randn(4, 1, 8, 8))
    assert logits.shape == (4, 10) and torch.isfinite(logits).all()


def test_export_refuses_an_id_off_the_front(quick_run, tmp_path):
    proc = _cli_in_process("export", str(quick_run), "--pick", "999999", "--out",
                           str(tmp_path / "x.pt"))
    assert proc.returncode == 2
    assert "not on the front" in proc.stderr


def _interrupted_copy(run_dir: Path, target: Path) -> Path:
    """A copy of the finished quickstart run whose summary says it was interrupted, so that
    ``resume`` goes on into it (its checkpoint says the search is finished)."""
    copy_run(run_dir, target)
    summary = json.loads((target / "summary.json").read_text())
    (target / "summary.json").write_text(json.dumps({**summary, "status": "interrupted"}))
    return target


def test_a_deleted_or_changed_latency_table_is_refused_on_resume_unless_retimed(quick_run,
                                                                                tmp_path):
    import hashlib

    deleted = _interrupted_copy(quick_run, tmp_path / "deleted")
    (deleted / "latency_table.json").unlink()
    changed = _interrupted_copy(quick_run, tmp_path / "changed")
    table = json.loads((changed / "latency_table.json").read_text())
    first = next(iter(table["entries"]))
    table["entries"][first] *= 2.0  # a hand-edited (or tampered) latency
    (changed / "latency_table.json").write_text(json.dumps(table))
    journal = (quick_run / "journal.jsonl").read_text()
    for run_dir, what, reason in ((deleted, "is missing", "missing"),
                                  (changed, "was changed", "changed")):
        refused = _cli_in_process("resume", str(run_dir))
        lines = [line for line in refused.stderr.splitlines() if line.strip()]
        assert refused.returncode == 2, refused.stderr[-2000:]
        assert len(lines) == 1 and what in lines[0] and "--retime-table" in lines[0], lines
        assert refused.stdout == ""
        assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"
        if reason == "changed":
            continue  # the accepted path is the same for both; once keeps pytest short

        accepted = _cli("resume", str(run_dir), "--retime-table")
        assert accepted.returncode == 0, accepted.stderr[-3000:]
        assert "re-timing the latency table" in accepted.stdout
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "complete"
        assert summary["latency_table"]["retimed"][-1]["reason"] == reason
        digest = hashlib.sha256((run_dir / "latency_table.json").read_bytes()).hexdigest()
        assert summary["latency_table"]["sha256"] == digest
        meta = json.loads((run_dir / "state" / "meta.json").read_text())
        assert meta["latency_table_sha256"] == digest
        assert (run_dir / "journal.jsonl").read_text() == journal  # nothing re-evaluated
