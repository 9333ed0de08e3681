"""The real pruning task and candidate evaluator (digits CNN; BN recalibration on CIFAR-10)."""

from __future__ import annotations

import dataclasses
import pickle
import types

import numpy as np
import pytest
import torch

from prunesearch.methods.evaluator import (
    CandidateEvaluator,
    PruningTask,
    build_pruned_module,
    evaluate_error,
    recalibrate_bn,
)
from prunesearch.methods.settings import (
    DataSettings,
    EvaluatorSettings,
    HardwareSettings,
    ModelSettings,
)
from prunesearch.methods.task import Evaluator


def _digits_config(**evaluator_changes):
    # Granularity 16 and few timing repeats keep the latency table to a few dozen quick entries.
    return types.SimpleNamespace(
        seed=0,
        data=DataSettings(name="digits", val_size=300),
        model=ModelSettings(name="digits-cnn", pretrain_epochs=20),
        hardware=HardwareSettings(batch_size=8, threads=1, granularity=16, warmup=1, repeats=6,
                                  calibration_genomes=2, table_warmup=1, table_repeats=5),
        evaluator=EvaluatorSettings(finetune_steps=15, lr=0.01, batch_size=32,
                                    augmentation=False, bn_recalibration_batches=3,
                                    **evaluator_changes),
    )


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("run")
    return PruningTask(_digits_config(), run_dir=run_dir)


@pytest.fixture(scope="module")
def evaluator(task):
    # Through pickle, as the cluster layer ships it.
    return CandidateEvaluator(pickle.loads(pickle.dumps(task.payload())))


def test_task_protocol_and_cheap_objectives(task):
    assert task.group_names == ["conv1", "conv2", "conv3"]
    assert list(task.lower) == [1, 1, 1] and list(task.upper) == [2, 4, 8]
    assert task.cheap_objectives == (1, 2)
    assert task.channels([1, 2, 8]) == [16, 32, 128]
    cheap = task.evaluate_cheap(np.array([task.upper, task.lower]))
    assert cheap.shape == (2, 2) and np.all(cheap > 0)
    assert cheap[0, 1] > cheap[1, 1]  # the dense net needs more memory
    metrics = task.cheap_metrics(task.lower)
    assert 0 < metrics["macs"] < task.cheap_metrics(task.upper)["macs"]
    assert (task.run_dir / "latency_table.json").is_file()


def test_saved_table_is_reused_on_resume(task):
    again = PruningTask(_digits_config(), run_dir=task.run_dir)
    genomes = np.array([task.upper, task.lower, [1, 3, 5]])
    # Re-timing would give different figures; a resumed run must predict exactly the same.
    assert np.array_equal(again.evaluate_cheap(genomes), task.evaluate_cheap(genomes))


def test_payload_is_light_and_evaluator_follows_protocol(task, evaluator):
    assert isinstance(evaluator, Evaluator)
    payload = task.payload()
    assert all(isinstance(v, np.ndarray) for v in payload["base_weights"].values())
    assert len(pickle.dumps(payload)) < 5 * 2**20


def test_evaluation_is_sensible_and_deterministic(task, evaluator):
    genome = [1, 2, 4]
    first = evaluator.evaluate(genome, candidate_id=7, seed=3)
    assert first["status"] == "ok", first["reason"]
    objectives = first["objectives"]
    assert 0.0 <= objectives["error"] < 0.3  # 10 digits: chance is 0.9
    cheap = task.evaluate_cheap(np.array([genome]))[0]
    assert objectives["latency_ms"] == cheap[0] and objectives["memory_mb"] == cheap[1]
    assert first["metrics"]["macs"] == task.cheap_metrics(genome)["macs"]
    assert first["metrics"]["val_acc"] == pytest.approx(1 - objectives["error"])
    second = evaluator.evaluate(genome, candidate_id=7, seed=3)
    assert second["objectives"] == objectives
    assert all(np.array_equal(first["weights"][k], second["weights"][k]) for k in first["weights"])
    # The saved weights and recipe rebuild the very network that was scored.
    module = build_pruned_module(first["recipe"], first["weights"])
    assert evaluate_error(module, evaluator.bundle.val) == pytest.approx(objectives["error"])
    assert first["recipe"]["genome"] == genome


def test_divergence_is_a_failed_result_not_an_exception(task):
    payload = task.payload()
    payload["evaluator"] = dataclasses.replace(payload["evaluator"], lr=1e6)
    result = CandidateEvaluator(payload).evaluate([2, 4, 8], candidate_id=0, seed=0)
    assert result["status"] == "failed" and result["objectives"] is None
    assert "loss" in result["reason"] or "finite" in result["reason"]


def test_out_of_bounds_genome_fails_cleanly(evaluator):
    result = evaluator.evaluate([0, 4, 8], candidate_id=1, seed=0)
    assert result["status"] == "failed" and "outside" in result["reason"]


def test_dense_objectives_are_cached(task):
    dense = task.dense_objectives()
    assert dense["latency_ms"] == task.evaluate_cheap(np.array([task.upper]))[0, 0]
    assert 0.0 <= dense["error"] < 0.2
    assert task.dense_objectives() == dense
    assert (task.run_dir / "dense_objectives.json").is_file()


def test_measure_times_the_pruned_network(task):
    timing = task.measure(task.lower, None)
    assert 0 < timing["latency_ms_measured"] <= timing["latency_ms_p90"]


@pytest.mark.data
def test_bn_recalibration_recovers_a_mild_prune_on_cifar10(data_root):
    from prunesearch.methods.data import load_dataset
    from prunesearch.methods.models import load_base_model
    from prunesearch.methods.pruning import apply_genome, genome_space

    torch.set_num_threads(2)
    data = DataSettings(name="cifar10", root=str(data_root), val_size=100, train_subset=640,
                        test_subset=2000)
    bundle = load_dataset(data, seed=0)
    base = load_base_model(ModelSettings(name="resnet20"), data, seed=0)
    space = genome_space(base, "resnet20", 4)
    dense_error = evaluate_error(base, bundle.test)
    # Mild: every block's inner width cut to 75% (L1), residual (stage) widths kept.
    mild = space.uniform_genome(0.75)[:-3] + space.upper()[-3:]
    pruned = apply_genome(base, space, mild, importance="l1").module
    pruned_error = evaluate_error(pruned, bundle.test)
    generator = torch.Generator().manual_seed(0)
    batches = [x for x, _ in bundle.train.batches(64, shuffle=True, generator=generator)][:10]
    assert recalibrate_bn(pruned, batches) == 10
    recal_error = evaluate_error(pruned, bundle.test)
    assert pruned_error > dense_error + 0.05  # the prune hurts
    assert pruned_error - recal_error >= 0.5 * (pruned_error - dense_error)
