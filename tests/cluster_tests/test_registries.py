"""Every registry is the only source of its names: a dummy entry registered at run time is
accepted by the config loader and used by the code path that consumes it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from prunesearch.cluster.config import load_config
from prunesearch.search.errors import ConfigError


def _config(tmp_path, text: str):
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return load_config(path)


def test_unregistered_names_are_refused_with_the_registry_listed(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"hardware.runtime: 'onnx' is not allowed; choose one "
                                          r"of: eager, cuda-graph, compile"):
        _config(tmp_path, "hardware: {runtime: onnx}\n")
    with pytest.raises(ConfigError,
                       match=r"model.name: 'vgg' is not allowed.*digits-cnn.*resnet56"):
        _config(tmp_path, "model: {name: vgg}\n")
    with pytest.raises(ConfigError, match=r"data.name: 'mnist' is not allowed.*digits.*cifar10"):
        _config(tmp_path, "data: {name: mnist}\n")


def test_dummy_selector_surrogate_and_algorithm_are_accepted_and_used(tmp_path, monkeypatch):
    from pymoo.operators.survival.rank_and_crowding import RankAndCrowding
    from pymoo.optimize import minimize

    from prunesearch.search import registry, selection, surrogate
    from prunesearch.search.problems import SyntheticPruningProblem

    calls = {"selector": 0, "surrogate": 0, "algorithm": 0}

    class CountingSelector(RankAndCrowding):
        def _do(self, *args, **kwargs):
            calls["selector"] += 1
            return super()._do(*args, **kwargs)

    class CountingSurrogate(surrogate.RandomForestSurrogate):
        def fit(self, X, Y, *, random_state):
            calls["surrogate"] += 1
            super().fit(X, Y, random_state=random_state)

    def dummy_algorithm(settings, **overrides):
        calls["algorithm"] += 1
        return registry.ALGORITHMS["hamp"](settings, **overrides)

    monkeypatch.setitem(selection.SELECTORS, "dummy-selector", CountingSelector)
    monkeypatch.setitem(surrogate.SURROGATES, "dummy-surrogate", CountingSurrogate)
    monkeypatch.setitem(registry.ALGORITHMS, "dummy-search", dummy_algorithm)
    # A new generational search is one algorithm factory plus one method-registry entry that
    # names the generational driver as its runner.
    from prunesearch.cluster.registry import METHODS, MethodEntry

    monkeypatch.setitem(METHODS, "dummy-search", MethodEntry(
        name="dummy-search", kind="search", help="dummy",
        runner="prunesearch.cluster.driver:run_search",
        reporter="prunesearch.cluster.report:write_report"))
    config = _config(tmp_path, "method: dummy-search\nsearch:\n  pop_size: 8\n"
                               "  portfolio: [dummy-selector]\n  surrogate: dummy-surrogate\n"
                               "  local_search: {parents: 2, samples_per_parent: 10}\n")
    algorithm = registry.make_algorithm(config.method, config.search)
    minimize(SyntheticPruningProblem(), algorithm, ("n_evals", 40), seed=1, verbose=False)
    assert calls["algorithm"] == 1
    assert calls["selector"] > 0 and calls["surrogate"] > 0, calls


class _TinyNet(nn.Module):
    def __init__(self, width: int = 8, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.width, self.num_classes, self.in_channels = width, num_classes, in_channels
        self.conv = nn.Conv2d(in_channels, width, 3, padding=1)
        self.fc = nn.Linear(width, num_classes)

    def arch_config(self):
        return {"width": self.width, "num_classes": self.num_classes,
                "in_channels": self.in_channels}

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def _tiny_family():
    from prunesearch.methods.families import ModelFamily
    from prunesearch.methods.pruning.space import check_kept
    from prunesearch.methods.pruning.specs import SpecBuilder
    from prunesearch.methods.pruning.surgery import copy_conv, copy_linear

    class TinyFamily(ModelFamily):
        name = "tiny"
        models = {"tiny-net": lambda num_classes: _TinyNet(num_classes=num_classes)}

        def owns(self, model):
            return isinstance(model, _TinyNet)

        def groups(self, model, input_shape):
            return [("conv", model.width, "conv")]

        def producers(self, model, input_shape):
            return {"conv": [(model.conv, None)]}

        def prune(self, model, kept, input_shape):
            check_kept(kept, {"conv": model.width})
            new = _TinyNet(len(kept["conv"]), model.num_classes, model.in_channels)
            copy_conv(new.conv, model.conv, kept["conv"], None)
            copy_linear(new.fc, model.fc, kept["conv"])
            return new

        def layer_specs(self, space, channels, batch, hw):
            b = SpecBuilder(batch)
            hw = b.conv(space.input_shape[0], channels[0], hw, 3, 1, 1, bias=True)
            b.same("relu", channels[0], hw)
            b.head(channels[0], hw, space.num_classes)
            return b.ops

        def build_from_arch(self, arch):
            return _TinyNet(arch["width"], arch["num_classes"], arch["in_channels"])

    return TinyFamily()


def test_dummy_dataset_and_model_family_are_accepted_and_used(tmp_path, monkeypatch):
    from prunesearch.methods import data, families
    from prunesearch.methods.evaluator import CandidateEvaluator
    from prunesearch.methods.models import build_model, load_base_model
    from prunesearch.methods.pruning import apply_genome, layer_specs, load_pruned

    loaded = []

    def load_tiny(settings, seed):
        loaded.append(settings.name)
        return data.DATASETS["digits"].loader(settings, seed)

    # 3-channel 12x12 images: nothing in the code path may assume 32x32 (or 8x8).
    monkeypatch.setitem(data.DATASETS, "dummy-images", data.DatasetInfo("dummy-images", 10,
                                                                        (3, 12, 12), load_tiny))
    family = _tiny_family()
    monkeypatch.setitem(families.FAMILIES, family.name, family)
    config = _config(tmp_path, "data: {name: dummy-images}\n"
                               "model: {name: tiny-net, pretrain_epochs: 0}\n")
    base = load_base_model(config.model, config.data)
    assert isinstance(base, _TinyNet) and isinstance(build_model("tiny-net"), _TinyNet)

    evaluator = CandidateEvaluator({"seed": 0, "data": config.data, "model": config.model,
                                    "hardware": config.hardware, "evaluator": config.evaluator,
                                    "base_weights": {k: v.numpy() for k, v in
                                                     base.state_dict().items()},
                                    "cost_model": None})
    space = evaluator.space
    assert space.family == "tiny" and space.input_shape == (3, 12, 12)
    specs = layer_specs(space, [4], batch=2)
    assert specs[0].in_hw == (12, 12) and specs[0].out_channels == 4
    pruned = apply_genome(base, space, space.genome_for_channels([4]))
    assert pruned.module.conv.out_channels == 4
    rebuilt = load_pruned(pruned.recipe, pruned.module.state_dict())
    x = torch.randn(2, 3, 12, 12)
    assert torch.equal(rebuilt(x), pruned.module.eval()(x))
    assert evaluator.bundle is not None and loaded == ["dummy-images"]


def test_dummy_runtime_is_accepted_and_used(tmp_path, monkeypatch):
    from prunesearch.methods.cost import runtimes
    from prunesearch.methods.cost.latency import measure_latency, measure_spec
    from prunesearch.methods.cost.specs import LayerSpec

    prepared = []

    class CountingRuntime(runtimes.LatencyRuntime):
        name = "dummy-runtime"
        layer_runtime = "eager"

        def prepare_module(self, module):
            prepared.append("module")
            return module

        def prepare_step(self, fn, *, device, warmup):
            prepared.append("step")
            return fn, warmup

    monkeypatch.setitem(runtimes.RUNTIMES, "dummy-runtime", CountingRuntime())
    config = _config(tmp_path, "hardware: {runtime: dummy-runtime}\n")
    result = measure_latency(nn.Conv2d(3, 4, 3), (3, 6, 6), runtime=config.hardware.runtime,
                             warmup=1, repeats=3)
    assert result.runtime == "dummy-runtime" and prepared == ["module", "step"]
    entry = measure_spec(LayerSpec("relu", 1, 4, 4, (6, 6), (6, 6)), runtime="dummy-runtime",
                         warmup=1, repeats=3)
    assert entry.runtime == "eager"  # table entries are timed in the runtime's layer runtime


def test_dummy_evaluator_kind_is_accepted_and_used(tmp_path, monkeypatch):
    from prunesearch.methods import task

    monkeypatch.setitem(task.TASKS, "dummy-kind", task.TASKS["synthetic"])
    config = _config(tmp_path, "evaluator: {kind: dummy-kind}\n")
    built = task.build_task(config)
    assert type(built).__name__ == "SyntheticTask"
    assert np.asarray(built.evaluate_cheap(built.upper[None, :])).shape == (1, 2)
