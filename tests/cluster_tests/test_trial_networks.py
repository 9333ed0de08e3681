"""A Tune-trial pruning method's networks ship like a search's: a CLAD run (two trials on the
digits, through the CLI) keeps its front's networks under ``models/``, ``export`` writes the
network a trial reported (same test error), ``finetune`` trains it further; a run whose trials
hold no networks (ICPG) is refused with one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from cli_helpers import run_cli

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::FutureWarning")]

JOB = {
    "method": "clad", "seed": 1,
    "data": {"name": "digits", "val_size": 100},
    "model": {"name": "digits-cnn", "pretrain_epochs": 2},
    "hardware": {"batch_size": 4, "granularity": 8, "warmup": 0, "repeats": 3,
                 "calibration": "none", "calibration_genomes": 0, "table_warmup": 0,
                 "table_repeats": 3, "threads": 1},
    "clad": {"rate": 0.5, "learner_epochs": 1, "finetune_epochs": 1, "batch_size": 32,
             "batches_per_epoch": 3, "bn_recalibration_batches": 2, "measure_latency": False},
    "finetune": {"epochs": 1, "batch_size": 64},
    "tune": {"search": "grid", "space": {"clad.rate": [0.3, 0.6]},
             "resources_per_trial": {"cpu": 1}},
    "cluster": {"num_evaluators": 1},
}


@pytest.fixture(scope="module")
def clad_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clad")
    job = root / "clad.yaml"
    job.write_text(yaml.safe_dump(JOB))
    run_dir = root / "run"
    proc = run_cli("run", str(job), "--output", str(run_dir))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return run_dir


def _test_error(module: torch.nn.Module) -> float:
    from prunesearch.cluster.config import load_config
    from prunesearch.methods.data import load_dataset
    from prunesearch.methods.evaluator import evaluate_error

    config = load_config(JOB)
    return evaluate_error(module.eval(), load_dataset(config.data, seed=config.seed).test)


def test_export_ships_the_network_the_trial_reported(clad_run, tmp_path) -> None:
    trials = {t["trial_id"]: t for t in json.loads((clad_run / "trials.json").read_text())}
    infos = [json.loads(p.read_text()) for p in sorted((clad_run / "models").glob("*.json"))]
    assert infos and all(info["trial_id"] in trials for info in infos)
    for fmt in ("pt", "onnx"):
        out = tmp_path / f"knee.{fmt}"
        proc = run_cli("export", str(clad_run), "--pick", "knee", "--out", str(out),
                       "--format", fmt)
        assert proc.returncode == 0, proc.stderr
        assert out.exists() and f"checked: {fmt}" in proc.stdout
        assert "weights: trial" in proc.stdout
    recipe = json.loads((tmp_path / "knee.pt.recipe.json").read_text())
    cid = recipe["candidate"]["id"]
    info = next(i for i in infos if i["id"] == cid)
    final = trials[info["trial_id"]]["final"]
    module = torch.load(tmp_path / "knee.pt", weights_only=False)
    # The trial's own pruned, fine-tuned network: same widths, same test error.
    assert [m.out_channels for m in module.modules() if isinstance(m, torch.nn.Conv2d)] \
        == final["channels"]
    assert _test_error(module) == pytest.approx(final["error"], abs=1e-9)
    from prunesearch.methods.models import build_model

    assert sum(p.numel() for p in module.parameters()) < \
        sum(p.numel() for p in build_model("digits-cnn").parameters())


def test_finetune_trains_a_trial_network_and_export_takes_it(clad_run, tmp_path) -> None:
    proc = run_cli("finetune", str(clad_run), "--pick", "knee", "--epochs", "1")
    assert proc.returncode == 0, proc.stderr
    rows = (clad_run / "finetuned.csv").read_text().splitlines()
    assert len(rows) == 2
    proc = run_cli("export", str(clad_run), "--pick", "knee", "--out", str(tmp_path / "ft.pt"))
    assert proc.returncode == 0 and "weights: fine-tuned" in proc.stdout


def test_a_run_without_networks_is_refused_in_one_line(tmp_path) -> None:
    run = tmp_path / "icpg-run"
    run.mkdir()
    (run / "config.yaml").write_text("method: icpg\nseed: 0\n")
    for command in (["export", str(run), "--pick", "knee", "--out", str(tmp_path / "x.pt")],
                    ["finetune", str(run), "--pick", "knee"]):
        proc = run_cli(*command)
        assert proc.returncode == 2
        assert len(proc.stderr.strip().splitlines()) == 1 and "not networks" in proc.stderr
    assert not (tmp_path / "x.pt").exists()
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]
