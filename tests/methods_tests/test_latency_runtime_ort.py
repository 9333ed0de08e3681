"""ONNX Runtime as a latency runtime, and latency tables that record and check how they were
timed (issue 16, items 2 and 3)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from prunesearch.cluster.retime import latency_check
from prunesearch.methods.cost.latency import measure_latency, measure_spec
from prunesearch.methods.cost.specs import LayerSpec
from prunesearch.methods.cost.table import TableKey, leave_one_out

ort = pytest.importorskip("onnxruntime")


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def test_onnxruntime_times_whole_networks_and_single_layers():
    result = measure_latency(_net(), (3, 12, 12), runtime="onnxruntime", batch_size=4,
                             warmup=2, repeats=9)
    assert result.runtime == "onnxruntime" and result.repeats == 9
    assert 0 < result.min_ms <= result.p10_ms <= result.p25_ms <= result.median_ms
    spec = LayerSpec("conv", 4, 8, 16, (12, 12), (12, 12), kernel=3, padding=1)
    layer = measure_spec(spec, runtime="onnxruntime", warmup=1, repeats=5)
    assert layer.runtime == "onnxruntime" and layer.median_ms > 0
    key = TableKey.current(device="cpu", runtime="onnxruntime", dtype="float32", batch_size=4,
                           threads=1)
    assert key.runtime_version == f"onnxruntime {ort.__version__}"
    assert ort.__version__ in key.slug()
    eager = TableKey.current(device="cpu", runtime="eager", dtype="float32", batch_size=4,
                             threads=1)
    assert "runtime_version" not in eager.as_dict()  # torch runtimes' keys read as before
    with pytest.raises(ValueError, match="float32"):
        measure_latency(_net(), (3, 12, 12), runtime="onnxruntime", dtype="bfloat16",
                        repeats=3)


def test_methods_run_without_onnxruntime_installed():
    code = (
        "import sys; sys.modules['onnxruntime'] = None\n"
        "import torch\n"
        "from prunesearch.methods.cost.latency import measure_latency\n"
        "from prunesearch.methods.cost.runtimes import runtime_entry, runtime_names\n"
        "import prunesearch.methods.evaluator\n"
        "assert 'onnxruntime' in runtime_names()\n"
        "measure_latency(torch.nn.ReLU(), (4,), repeats=3)\n"
        "try:\n"
        "    runtime_entry('onnxruntime').check('cpu')\n"
        "except ValueError as exc:\n"
        "    print(exc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "needs the onnxruntime package" in proc.stdout and "pip install" in proc.stdout


def _digits_config(runtime: str = "eager", cache_tolerance: float = 0.5):
    import types

    from prunesearch.methods.settings import (
        DataSettings,
        EvaluatorSettings,
        HardwareSettings,
        ModelSettings,
    )

    return types.SimpleNamespace(
        seed=0, data=DataSettings(name="digits", val_size=300),
        model=ModelSettings(name="digits-cnn", pretrain_epochs=20),
        hardware=HardwareSettings(runtime=runtime, batch_size=8, threads=1, granularity=16,
                                  warmup=1, repeats=6, calibration_genomes=2, table_warmup=1,
                                  table_repeats=5, cache_tolerance=cache_tolerance),
        evaluator=EvaluatorSettings(finetune_steps=0),
    )


def test_a_cached_table_timed_under_other_conditions_is_timed_again(tmp_path):
    from prunesearch.methods.evaluator import PruningTask

    torch.set_num_threads(1)
    cache = tmp_path / "cache"
    first = PruningTask(_digits_config(), cache_dir=cache).table
    assert first.timing["cache"] == "none" and first.timing["entries_timed"] == len(first)
    assert first.timing["statistic"] == "p25" and first.timing["interleaved"]
    assert first.timing["runtime_settings"]["torch_threads"] == 1
    assert len(first.timing["load_average_start"]) == 3
    assert first.calibration_genomes and first.calibration_genomes[0] == tuple(
        int(v) for v in PruningTask(_digits_config(), cache_dir=tmp_path / "c2").upper)
    (path,) = cache.glob("*.json")
    cached = json.loads(path.read_text())
    assert cached["statistic"] == "p25" and cached["timing"]["cache"] == "none"
    # As if the cache had been timed on a machine 10x as slow: entries and their calibration
    # (900% off; the tolerances below leave room for a busy CI machine's own timing noise).
    cached["entries"] = {k: 10 * v for k, v in cached["entries"].items()}
    cached["calibration"]["scale"] *= 10
    cached["calibration"]["offset_ms"] *= 10
    path.write_text(json.dumps(cached))
    second = PruningTask(_digits_config(), cache_dir=cache).table
    assert second.timing["cache"].startswith("rejected")
    assert second.timing["entries_timed"] == len(second)
    bigger = sum(second.entries[k] > 5 * first.entries[k] for k in first.entries)
    assert bigger < len(first) / 4  # the inflated entries were not kept
    # The table just timed agrees with a fresh calibration within the tolerance: reused as is.
    # (3.0: two timings of a millisecond network on a loaded 2-core machine were 62% apart.)
    third = PruningTask(_digits_config(cache_tolerance=3.0), cache_dir=cache).table
    assert third.timing["cache"].startswith("reused") and third.timing["entries_timed"] == 0


def test_latency_check_scores_only_genomes_the_calibration_did_not_see():
    # measured = 2 * raw + 1 exactly; the table itself predicts 10% high.
    members = [((4, 4), 10.0), ((2, 3), 5.0), ((3, 2), 6.0), ((1, 1), 2.0)]
    records = [{"id": i, "genome": list(g), "objectives": {"latency_ms": 1.1 * (2 * raw + 1)},
                "metrics": {"latency_table_raw_ms": raw}} for i, (g, raw) in enumerate(members)]
    measured = {str(i): {"latency_ms_measured": 2 * raw + 1}
                for i, (_, raw) in enumerate(members)}
    table = {"calibration": "linear", "statistic": "p25", "calibration_genomes": [[4, 4]]}
    recal, check = latency_check(records, measured, table)
    assert check["scored"] == 3 and check["excluded_calibration_genomes"] == 1
    assert check["table_error_median"] == pytest.approx(0.1, abs=1e-6)
    assert check["recalibrated_error_max"] == pytest.approx(0.0, abs=1e-9)
    assert recal[1] == pytest.approx(11.0)
    # Out of sample: a point's own timing never enters its prediction.
    assert leave_one_out([1.0, 2.0, 3.0], [2.0, 4.0, 100.0], "linear")[2] == pytest.approx(6.0)


def test_keep_freed_memory_is_applied_once_per_process_and_recorded():
    code = (
        "import types\n"
        "from prunesearch.methods.cost.calibration import apply_allocator\n"
        "print(apply_allocator(types.SimpleNamespace(keep_freed_memory=False)))\n"
        "print(apply_allocator(types.SimpleNamespace(keep_freed_memory=True)))\n"
        "print(apply_allocator(types.SimpleNamespace(keep_freed_memory=False)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    first, second, third = proc.stdout.split("\n")[:3]
    assert first == "default"
    if sys.platform.startswith("linux"):
        assert second.startswith("keep-freed") and third == second  # permanent, process-wide
