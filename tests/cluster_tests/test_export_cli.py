"""``prunesearch export --format``: a front member of a run directory (a pruned digits CNN with
its own weights, as the driver saves it) written as TorchScript/ONNX, checked on reload; a file
that does not match exits 2 with one line and leaves no output."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from prunesearch.cluster.cli import main
from prunesearch.methods import export_formats
from prunesearch.methods.models import build_model
from prunesearch.methods.pruning import apply_genome, genome_space, load_pruned

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run directory with one front member saved the way the driver saves it."""
    run = tmp_path_factory.mktemp("exp") / "run"
    (run / "models").mkdir(parents=True)
    torch.manual_seed(0)
    base = build_model("digits-cnn").eval()
    space = genome_space(base, "digits-cnn", granularity=4)
    genome = [max(1, hi // 2) for hi in space.upper()]
    pruned = apply_genome(base, space, genome)
    # Weights that differ from the base's slice, as fine-tuned ones do.
    state = {k: v + 0.01 if v.is_floating_point() else v
             for k, v in pruned.module.state_dict().items()}
    torch.save(state, run / "models" / "7.pt")
    info = {"id": 7, "genome": genome, "channels": pruned.recipe["channels"],
            "hardware": {"device": "cpu", "runtime": "eager", "dtype": "float32",
                         "batch_size": 16},
            "recipe": pruned.recipe, "weights": "7.pt"}
    (run / "models" / "7.json").write_text(json.dumps(info))
    (run / "journal.jsonl").write_text("")
    with (run / "pareto.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "genome", "error", "latency_ms", "latency_ms_measured",
                         "memory_mb", "flops", "params"])
        writer.writerow([7, " ".join(map(str, genome)), 0.02, 3.0, 3.1, 1.0, 1000, 5000])
    return run


def _evaluated(run_dir: Path) -> torch.nn.Module:
    info = json.loads((run_dir / "models" / "7.json").read_text())
    return load_pruned(info["recipe"], torch.load(run_dir / "models" / "7.pt"))


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_writes_a_checked_file_that_reproduces_the_evaluated_network(run_dir, tmp_path,
                                                                            capsys, fmt) -> None:
    out = tmp_path / f"knee.{fmt}"
    assert main(["export", str(run_dir), "--pick", "knee", "--out", str(out),
                 "--format", fmt]) == 0
    printed = capsys.readouterr().out
    assert f"checked: {fmt}" in printed and "atol 0.0001, rtol 0.001" in printed
    assert (tmp_path / f"knee.{fmt}.recipe.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"knee.{fmt}", f"knee.{fmt}.recipe.json"]
    x = np.random.default_rng(0).standard_normal((3, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        want = _evaluated(run_dir)(torch.from_numpy(x)).numpy()
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: x})[0]
    else:
        with torch.no_grad():
            got = torch.jit.load(str(out))(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)


def test_default_format_is_pt(run_dir, tmp_path, capsys) -> None:
    out = tmp_path / "knee.pt"
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    assert "checked: pt reloaded in torch" in capsys.readouterr().out
    assert isinstance(torch.load(out, weights_only=False), torch.nn.Module)


def test_a_mismatch_exits_2_and_writes_nothing(run_dir, tmp_path, capsys, monkeypatch) -> None:
    writer, loader = export_formats._FORMATS["torchscript"]

    def broken(path: Path):
        runtime, run, opset = loader(path)
        return runtime, (lambda x: run(x) * 2.0), opset

    monkeypatch.setitem(export_formats._FORMATS, "torchscript", (writer, broken))
    out = tmp_path / "knee.ts"
    assert main(["export", str(run_dir), "--out", str(out), "--format", "torchscript"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "outputs differ from PyTorch's" in err[0], err
    assert not list(tmp_path.iterdir()), "no output, no recipe, no temp file"


def test_unknown_format_is_refused_by_the_parser(run_dir, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(run_dir), "--out", str(tmp_path / "x"), "--format", "tflite"])
    assert exit_info.value.code == 2
    assert "pt, torchscript, onnx" in capsys.readouterr().err.replace("'", "")


def test_a_device_budget_picks_among_the_members_that_meet_it() -> None:
    from prunesearch.cluster.export import Budget, pick_member
    from prunesearch.methods.errors import UsageError

    nan = float("nan")
    rows = [{"id": 1, "error": 0.05, "latency_ms": 4.0, "latency_ms_measured": 4.4,
             "memory_mb": 3.0},
            {"id": 2, "error": 0.08, "latency_ms": 2.5, "latency_ms_measured": 2.9,
             "memory_mb": 2.0},
            {"id": 3, "error": 0.12, "latency_ms": 1.5, "latency_ms_measured": nan,
             "memory_mb": 1.0}]
    assert pick_member(rows, "best")["id"] == 1
    # The most accurate network within 3 ms end to end (member 2's table says 2.5, its
    # measurement 2.9: the measurement decides where there is one, the table where not).
    assert pick_member(rows, "best", Budget(latency_ms=3.0))["id"] == 2
    assert pick_member(rows, "best", Budget(latency_ms=2.8))["id"] == 3
    assert pick_member(rows, "best", Budget(memory_mb=2.5, error=0.1))["id"] == 2
    assert pick_member(rows, "fastest", Budget(error=0.06))["id"] == 1
    assert pick_member(rows, "3", Budget(latency_ms=2.0))["id"] == 3
    with pytest.raises(UsageError, match=r"candidate 1 does not meet latency <= 2 ms "
                                         r"\(latency 4.400 ms \(measured\)\)"):
        pick_member(rows, "1", Budget(latency_ms=2.0))
    with pytest.raises(UsageError, match=r"no front member meets latency <= 1 ms, memory <= "
                                         r"0.5 MB \(the fastest is candidate 3 at 1.500 ms "
                                         r"\(table\); the smallest is candidate 3 at 1.000 MB\)"):
        pick_member(rows, "knee", Budget(latency_ms=1.0, memory_mb=0.5))
    for bad in ({"latency_ms": 0.0}, {"memory_mb": -1.0}, {"error": 1.5},
                {"latency_ms": float("nan")}):
        with pytest.raises(UsageError, match="--max-"):
            Budget(**bad)


def test_export_with_a_budget_exits_2_when_nothing_fits_and_says_what_fits(run_dir, tmp_path,
                                                                           capsys) -> None:
    out = tmp_path / "fast.pt"
    assert main(["export", str(run_dir), "--pick", "best", "--max-latency-ms", "3.2",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "meets latency <= 3.2 ms: latency 3.100 ms (measured)" in printed and out.exists()
    out.unlink()
    (tmp_path / "fast.pt.recipe.json").unlink()
    for flags, expected in ((["--max-latency-ms", "3.05"],
                             "no front member meets latency <= 3.05 ms (the fastest is "
                             "candidate 7 at 3.100 ms (measured))"),
                            (["--max-memory-mb", "0"], "--max-memory-mb 0.0: must be a positive")):
        assert main(["export", str(run_dir), "--pick", "best", *flags, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert expected in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
