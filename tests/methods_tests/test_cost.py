"""Cost models: MACs/params (specs vs hooks), memory, latency measurement and the table."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from prunesearch.methods.cost import (
    CostModel,
    LatencyTable,
    LayerSpec,
    MissingLatencyEntry,
    TableKey,
    count_module,
    count_specs,
    measure_latency,
    memory_mb,
)
from prunesearch.methods.cost.counts import activation_terms, spec_macs
from prunesearch.methods.evaluator import GenomeSpecs
from prunesearch.methods.models import CifarResNet
from prunesearch.methods.pruning import apply_genome, genome_space
from prunesearch.methods.pruning.specs import layer_specs


@pytest.fixture(scope="module")
def resnet56():
    torch.manual_seed(0)
    model = CifarResNet(56).eval()
    return model, genome_space(model, "resnet56", 4)


def _key(**changes) -> TableKey:
    base = {"device": "test-cpu", "runtime": "eager", "dtype": "float32", "batch_size": 1,
            "threads": 1, "torch_version": "x"}
    base.update(changes)
    return TableKey(**base)


def test_dense_resnet56_matches_published_counts(resnet56):
    model, space = resnet56
    from_specs = count_specs(layer_specs(space, space.full_widths))
    from_hooks = count_module(model, (3, 32, 32))
    assert from_specs == from_hooks
    # Published CIFAR ResNet-56 figures: ~125 M MACs, 0.85 M parameters.
    assert 124e6 < from_specs.macs < 127e6
    assert 0.84e6 < from_specs.params < 0.86e6


def test_uniform_half_pruned_counts_match_real_module(resnet56):
    model, space = resnet56
    genome = space.uniform_genome(0.5)
    specs = layer_specs(space, space.channels(genome))
    pruned = apply_genome(model, space, genome, importance="l1").module
    assert count_specs(specs) == count_module(pruned, (3, 32, 32))
    dense = count_specs(layer_specs(space, space.full_widths))
    # Halving every width quarters the MACs of every conv except the stem's (3 input channels).
    assert 0.24 < count_specs(specs).macs / dense.macs < 0.27
    assert pruned(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_cost_model_equals_per_genome_counts(resnet56):
    _, space = resnet56
    spec_fn = GenomeSpecs(space, batch_size=2)
    cost = CostModel(spec_fn=spec_fn, lower=space.lower(), upper=space.upper())
    # A synthetic table (entry = f(MACs)) so the latency sum can be checked without timing.
    table = LatencyTable(key=_key(batch_size=2), entries={
        s.key(): 1e-3 + spec_macs(s) * 1e-8 for s in cost.specs}, scale=1.5, offset_ms=0.25)
    cost.bind(table)
    rng = np.random.default_rng(0)
    genomes = np.array([space.random_genome(rng) for _ in range(20)] + [space.upper()])
    out = cost.evaluate(genomes)
    for i, genome in enumerate(genomes):
        specs = spec_fn(genome)
        counts = count_specs(specs)
        assert out["macs"][i] == counts.macs
        assert out["params"][i] == counts.params
        assert out["memory_mb"][i] == pytest.approx(memory_mb(specs), rel=1e-12)
        assert out["latency_ms"][i] == pytest.approx(table.predict(specs), rel=1e-9)


def test_memory_decreases_with_width(resnet56):
    _, space = resnet56
    widths = [memory_mb(layer_specs(space, space.channels(space.uniform_genome(r)), batch=8))
              for r in (1.0, 0.75, 0.5, 0.25)]
    assert all(a > b for a, b in itertools.pairwise(widths))
    # Dense ResNet-56 weights alone are 0.85 M floats = 3.25 MB.
    assert widths[0] > 0.853e6 * 4 / 2**20


def test_activation_terms_hold_the_skip_tensor():
    conv = LayerSpec("conv", 1, 4, 4, (2, 2), (2, 2), 3, 1, 1)
    add = LayerSpec("add", 1, 4, 4, (2, 2), (2, 2))
    head = LayerSpec("linear", 1, 4, 10, (1, 1), (1, 1), bias=True)
    # conv inside a block: in 16 + out 16 + held skip 16; add: 2 x 16 in + 16 out; linear: 14.
    assert activation_terms([conv, add, head]) == [48, 48, 14]


def test_measure_latency_records_its_conditions():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU())
    result = measure_latency(model, (3, 16, 16), batch_size=2, threads=1, warmup=2, repeats=9)
    assert 0 < result.min_ms <= result.median_ms <= result.p90_ms
    assert result.runtime == "eager" and result.batch_size == 2 and result.threads == 1
    assert result.torch_version == torch.__version__ and result.device
    assert result.peak_memory_mb is None  # CPU reports no peak memory
    with pytest.raises(ValueError, match="cuda-graph"):
        measure_latency(model, (3, 16, 16), runtime="cuda-graph")


def test_table_prediction_is_positive_and_grows_with_width():
    torch.manual_seed(0)
    model = CifarResNet(20).eval()
    space = genome_space(model, "resnet20", 16)
    spec_fn = GenomeSpecs(space, batch_size=1)
    cost = CostModel(spec_fn=spec_fn, lower=space.lower(), upper=space.upper())
    table = LatencyTable(key=TableKey.current(device="cpu", runtime="eager", dtype="float32",
                                              batch_size=1, threads=1),
                         device="cpu", warmup=2, repeats=15)
    assert table.measure_missing(cost.specs) == len(cost.specs)
    cost.bind(table)
    genomes = [space.uniform_genome(r) for r in (1.0, 0.5, 0.25)]
    latency = cost.evaluate(np.array(genomes))["latency_ms"]
    assert np.all(latency > 0)
    # Dense has 16x the MACs of the quarter-width net: an inverted order means the table is wrong.
    assert latency[0] > latency[2]
    assert latency[0] >= 0.8 * latency[1] and latency[1] >= 0.8 * latency[2]


def test_table_calibration_fit_and_fallback():
    table = LatencyTable(key=_key())
    table.calibrate([1.0, 2.0, 4.0], [2.5, 4.5, 8.5])  # measured = 2 * raw + 0.5 exactly
    assert table.scale == pytest.approx(2.0) and table.offset_ms == pytest.approx(0.5)
    noisy = LatencyTable(key=_key())
    noisy.calibrate([1.0, 2.0], [3.0, 2.0])  # negative slope: noise, fall back to the ratio
    assert noisy.offset_ms == 0.0 and noisy.scale == pytest.approx(2.0)  # median of 3 and 1
    scale_only = LatencyTable(key=_key(), calibration="scale")
    scale_only.calibrate([1.0, 2.0, 4.0], [2.5, 4.5, 8.5])
    assert scale_only.offset_ms == 0.0 and scale_only.scale == pytest.approx(2.25)
    with pytest.raises(ValueError, match="calibration"):
        LatencyTable(key=_key(), calibration="cubic")


def test_table_roundtrip_cache_and_missing_entries(tmp_path):
    spec = LayerSpec("relu", 1, 8, 8, (4, 4), (4, 4))
    other = LayerSpec("relu", 1, 16, 16, (4, 4), (4, 4))
    table = LatencyTable(key=_key(), entries={spec.key(): 0.01}, scale=2.0, offset_ms=0.1)
    table.save(tmp_path / "latency_table.json")
    loaded = LatencyTable.load(tmp_path / "latency_table.json")
    assert loaded.predict([spec]) == pytest.approx(0.12)
    assert json.loads((tmp_path / "latency_table.json").read_text())["key"]["runtime"] == "eager"
    with pytest.raises(MissingLatencyEntry, match="no latency entry"):
        loaded.measure_missing([other])  # no timing device: refuse rather than guess
    table.write_cache(tmp_path / "cache")
    fresh = LatencyTable(key=_key())
    assert fresh.merge_cache(tmp_path / "cache") == 1 and spec.key() in fresh
    elsewhere = LatencyTable(key=_key(device="another-cpu"))
    assert elsewhere.merge_cache(tmp_path / "cache") == 0  # never mix devices


@pytest.mark.parametrize("how", ["median", "min"])
def test_table_build_with_min_rounds_times_every_entry_each_round_and_keeps_its_fastest(
        how, tmp_path, monkeypatch):
    from prunesearch.methods.cost.calibration import build_latency_table
    from prunesearch.methods.settings import HardwareSettings

    torch.manual_seed(0)
    model = CifarResNet(20).eval()
    space = genome_space(model, "resnet20", 16)
    cost = CostModel(spec_fn=GenomeSpecs(space, batch_size=1), lower=space.lower(),
                     upper=space.upper())
    calls: list[list[str]] = []

    def fake_time_specs(self, specs):
        keys = [s.key() for s in specs]
        calls.append(keys)
        slow = 2.0 if len(calls) == 1 else 1.0  # the first share is timed in a slow spell
        return {k: slow * (1.0 + i) for i, k in enumerate(sorted(keys))}

    monkeypatch.setattr(LatencyTable, "time_specs", fake_time_specs)
    hardware = HardwareSettings(device="cpu", warmup=1, repeats=6, calibration_genomes=2,
                                calibration_rounds=3, table_warmup=1, table_repeats=3,
                                rounds_statistic=how, keep_freed_memory=False)
    table = build_latency_table(base_model=model, space=space, cost=cost, hardware=hardware,
                                seed=0, cache_dir=tmp_path)
    every = sorted(s.key() for s in cost.specs)
    assert table.timing["rounds_statistic"] == how and sorted(table.entries) == every
    if how == "min":  # both shares time every entry; the fast one is kept
        assert len(calls) == 2 and all(sorted(c) == every for c in calls)
        assert all(table.entries[k] == pytest.approx(1.0 + i) for i, k in enumerate(every))
    else:  # each entry once, in one of two shares
        assert len(calls) == 2 and sorted(calls[0] + calls[1]) == every
    with pytest.raises(ValueError, match="rounds statistic"):
        from prunesearch.methods.rounds import combine_rounds
        combine_rounds([1.0], "max")
