"""``prunesearch finetune`` on a quickstart run: better networks, resumable, shipped by export."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from cli_helpers import copy_run
from cli_helpers import run_cli as _cli



@pytest.fixture(scope="module")
def quick_run(quickstart_template, tmp_path_factory) -> Path:
    return copy_run(quickstart_template[0], tmp_path_factory.mktemp("ft") / "run")


def _front(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "pareto.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_bad_input_exits_2_with_one_line_before_anything_is_written(quick_run):
    for args, expected in ((["--pick", "99999"], "not on the front"),
                           (["--pick", "slowest"], "use one of"),
                           (["--epochs", "0"], "at least 1"),
                           (["--pick", "front", "--max-latency-ms", "1e-6"],
                            "no front member meets latency <= 1e-06 ms (the fastest is")):
        proc = _cli("finetune", str(quick_run), *args)
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and expected in proc.stderr
    proc = _cli("finetune", str(quick_run.parent / "missing"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    assert not (quick_run / "finetuned").exists()
    assert not (quick_run / "finetuned.csv").exists()


def test_interrupted_finetune_resumes_raises_accuracy_and_export_ships_it(quick_run, tmp_path):
    import yaml

    from prunesearch.cluster.config import load_config
    from prunesearch.cluster.export import pick_member, read_front
    from prunesearch.cluster.finetune import finetune_member, member_seed

    cid = pick_member(read_front(quick_run), "fastest")["id"]
    search_error = {int(r["id"]): float(r["error"]) for r in _front(quick_run)}[cid]
    proc = _cli("export", str(quick_run), "--pick", str(cid), "--out", str(tmp_path / "a.pt"))
    assert proc.returncode == 0 and "weights: search" in proc.stdout, proc.stderr

    config = load_config(yaml.safe_load((quick_run / "config.yaml").read_text()))
    settings = dataclasses.replace(config.finetune, epochs=4)
    torch.set_num_threads(1)
    # The reference: an uninterrupted fine-tune in a copy of the run directory.
    reference_dir = tmp_path / "reference"
    shutil.copytree(quick_run, reference_dir)
    reference = finetune_member(config, str(reference_dir), cid, settings,
                                seed=member_seed(config.seed, cid), device="cpu", threads=1)

    # Interrupt the real one after two epochs (as a killed worker would leave it).
    def stop(epoch, record):
        if epoch == 2:
            raise KeyboardInterrupt("test")

    with pytest.raises(KeyboardInterrupt):
        finetune_member(config, str(quick_run), cid, settings, seed=member_seed(config.seed, cid),
                        device="cpu", threads=1, on_epoch=stop)
    assert (quick_run / "finetuned" / f"{cid}.ckpt.pt").exists()

    proc = _cli("finetune", str(quick_run), "--pick", "fastest", "--epochs", "4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from epoch 2" in proc.stdout, proc.stdout
    assert not (quick_run / "finetuned" / f"{cid}.ckpt.pt").exists(), "checkpoint left behind"

    with (quick_run / "finetuned.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["id"]) for r in rows] == [cid]
    row = rows[0]
    assert float(row["search_val_acc"]) == pytest.approx(1.0 - search_error)
    # Measurably better than the search's weights on the same validation images.
    assert float(row["val_acc"]) >= float(row["search_val_acc"]) + 0.02, row
    assert 0.0 < float(row["test_acc"]) <= 1.0
    assert int(row["epochs"]) == 4 and row["distill"] == "none"
    assert row["genome"] == pick_member(read_front(quick_run), "fastest")["genome"]

    tuned = torch.load(quick_run / "finetuned" / f"{cid}.pt", weights_only=True)
    search = torch.load(quick_run / "models" / f"{cid}.pt", weights_only=True)
    assert tuned.keys() == search.keys()
    assert any(not torch.equal(tuned[k], search[k]) for k in tuned), "weights unchanged"
    # Resumed == uninterrupted, to the bit (one thread, per-epoch seeded data order).
    for k, v in reference["weights"].items():
        assert torch.equal(tuned[k], torch.from_numpy(v)), k

    proc = _cli("export", str(quick_run), "--pick", str(cid), "--out", str(tmp_path / "b.pt"))
    assert proc.returncode == 0 and "weights: fine-tuned" in proc.stdout, proc.stderr
    module = torch.load(tmp_path / "b.pt", weights_only=False)
    state = module.state_dict()
    assert all(torch.equal(state[k], tuned[k]) for k in tuned)
    meta = json.loads((tmp_path / "b.pt.recipe.json").read_text())
    assert meta["weights"] == "fine-tuned"
