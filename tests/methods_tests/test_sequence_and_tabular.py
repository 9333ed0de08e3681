"""Networks that do not take images: a sequence network (Conv1d over ``(C, L)``, as in keyword
spotting or sensor time series) and an MLP over feature vectors ``(F,)``. Both prune along the
dependency graph, and the cost model counts them exactly as the real pruned network is."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunesearch.methods.cost.counts import count_module, count_specs, memory_mb
from prunesearch.methods.cost.latency import measure_spec, spec_module
from prunesearch.methods.cost.specs import LayerSpec
from prunesearch.methods.pruning import apply_genome, genome_space, layer_specs


class KeywordNet(nn.Module):
    """A small keyword-spotting style network: strided Conv1d stem, a residual pair, a
    depthwise-separable pair, global pooling (functional) and a head."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv1d(2, 16, 5, stride=2, padding=2, bias=False),
                                  nn.BatchNorm1d(16), nn.ReLU(), nn.MaxPool1d(2))
        self.res = nn.Sequential(nn.Conv1d(16, 24, 3, padding=1, bias=False),
                                 nn.BatchNorm1d(24), nn.ReLU(),
                                 nn.Conv1d(24, 16, 3, padding=1, bias=False),
                                 nn.BatchNorm1d(16))
        self.dw = nn.Sequential(nn.Conv1d(16, 16, 3, padding=1, groups=16, bias=False),
                                nn.BatchNorm1d(16), nn.ReLU(),
                                nn.Conv1d(16, 32, 1, bias=False), nn.BatchNorm1d(32), nn.ReLU())
        self.head = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.res(x))
        x = self.dw(x)
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool1d(x, 1), 1))


def _mlp(num_classes: int = 4) -> nn.Module:
    return nn.Sequential(nn.Linear(12, 48), nn.BatchNorm1d(48), nn.ReLU(), nn.Dropout(0.1),
                         nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, num_classes))


CASES = {"sequence": (KeywordNet, (2, 40)), "tabular": (_mlp, (12,))}


def _case(case: str):
    build, shape = CASES[case]
    torch.manual_seed(0)
    model = build().eval()
    return model, genome_space(model, input_shape=shape, granularity=4), shape


@pytest.mark.parametrize("case", sorted(CASES))
def test_pruned_network_is_smaller_runs_and_keeps_the_input_layout(case):
    model, space, shape = _case(case)
    assert space.input_shape == shape and len(space.groups) >= 2
    small = apply_genome(model, space, space.uniform_genome(0.5)).module.eval()
    x = torch.randn(3, *shape)
    assert small(x).shape == model(x).shape
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    # Full width is the dense network itself, channel for channel.
    same = apply_genome(model, space, space.upper()).module.eval()
    assert torch.allclose(same(x), model(x), atol=1e-6)


@pytest.mark.parametrize("case", sorted(CASES))
def test_cost_model_counts_the_real_pruned_network(case):
    model, space, shape = _case(case)
    gen = torch.Generator().manual_seed(1)
    genomes = [space.upper(), space.lower(), space.uniform_genome(0.5)]
    genomes += [tuple(int(torch.randint(1, u + 1, (1,), generator=gen)) for u in space.upper())
                for _ in range(3)]
    dense_specs = layer_specs(space, space.channels(space.upper()))
    for genome in genomes:
        specs = layer_specs(space, space.channels(genome))
        small = apply_genome(model, space, genome).module
        assert count_specs(specs) == count_module(small, shape), genome
        assert memory_mb(specs) <= memory_mb(dense_specs) + 1e-12
    if case == "sequence":
        convs = [s for s in dense_specs if s.op == "conv"]
        assert convs and all(s.dims == 1 and s.in_hw[1] == 1 for s in convs)
        # Stride 2 then a 2-pool: the stem's conv sees 40 steps, the next one 10.
        assert convs[0].in_hw == (40, 1) and convs[1].in_hw == (10, 1)
    else:
        assert {s.op for s in dense_specs} <= {"linear", "bn", "relu"}


def test_sequence_table_entries_are_timed_as_conv1d_and_image_keys_are_unchanged():
    spec = LayerSpec("conv", 1, 8, 16, (40, 1), (20, 1), 5, 2, 2, 1, False, dims=1)
    module, shapes = spec_module(spec)
    assert isinstance(module, nn.Conv1d) and shapes == [(1, 8, 40)]
    assert module(torch.zeros(shapes[0])).shape == (1, 16, 20)
    assert measure_spec(spec, repeats=3, warmup=1).median_ms > 0
    pool, shapes = spec_module(LayerSpec("maxpool", 1, 8, 8, (40, 1), (20, 1), 2, 2, dims=1))
    assert isinstance(pool, nn.MaxPool1d) and pool(torch.zeros(shapes[0])).shape == (1, 8, 20)
    # Image specs keep the keys cached latency tables were written under.
    image = LayerSpec("conv", 1, 8, 16, (32, 32), (32, 32), 3, 1, 1)
    assert image.key() == "conv_b1_i8_o16_h32x32_k3_s1_p1_g1_nb"
    assert spec.key().endswith("_d1") and spec.key() != image.key()


def test_image_only_families_refuse_other_layouts_with_the_layouts_they_take():
    import torchvision

    with pytest.raises(ValueError, match=r"input_shape must be \(C, H, W\), got \(3, 64\)"):
        genome_space(torchvision.models.resnet18(num_classes=3), input_shape=(3, 64))
    with pytest.raises(ValueError, match=r"\(C, H, W\) or \(C, L\) or \(F,\)"):
        genome_space(KeywordNet(), input_shape=(2, 4, 4, 4))


def test_clad_parts_work_on_conv1d_and_refuse_a_network_without_convolutions():
    from prunesearch.methods.clad.criteria import pruned_groups
    from prunesearch.methods.clad.learner import filter_descriptors
    from prunesearch.methods.distill import attention_loss, stage_names
    from prunesearch.methods.pruning.importance import group_scores
    from prunesearch.methods.pruning.tp_groups import tp_producers

    model = KeywordNet().eval()
    space = genome_space(model, input_shape=(2, 40), granularity=4)
    producers = tp_producers(model, input_shape=(2, 40))
    groups = pruned_groups(space, "blocks", producers)
    assert groups
    for name in groups:
        width = space.groups[space.names.index(name)].full_width
        assert filter_descriptors(producers[name], width).abs().sum() > 0
        for criterion in ("l1", "bn_scale"):
            assert group_scores(producers[name], width, criterion).shape == (width,)
    assert stage_names(model)  # BatchNorm1d outputs are the attention taps
    feats = [torch.randn(2, 16, 10)]
    assert float(attention_loss(feats, [f * 2 for f in feats])) == pytest.approx(0.0, abs=1e-7)
    assert float(attention_loss(feats, [torch.randn(2, 8, 10)])) > 0

    mlp = _mlp().eval()
    mlp_space = genome_space(mlp, input_shape=(12,), granularity=4)
    with pytest.raises(ValueError, match="has no prunable convolution"):
        pruned_groups(mlp_space, "all", tp_producers(mlp, input_shape=(12,)))


def test_numpy_float64_rows_are_batched_as_float32():
    """A user's dataset of numpy float64 rows (numpy's default dtype) trains a float32 network:
    inputs are collated to float32, labels stay integer class ids."""
    import numpy as np

    from prunesearch.methods.data_imagefolder import DatasetAdapter

    class Rows:
        def __init__(self) -> None:
            self.x = np.random.default_rng(0).random((10, 12))  # float64
            self.y = np.arange(10) % 4

        def __len__(self) -> int:
            return 10

        def __getitem__(self, i):
            return self.x[i], self.y[i]

    x, y = next(DatasetAdapter(Rows()).batches(4))
    assert x.dtype == torch.float32 and x.shape == (4, 12)
    assert y.dtype == torch.int64
    assert _mlp().eval()(x).shape == (4, 4)


class TextNet(nn.Module):
    """A text classifier: token ids -> embedding -> Conv1d over the sequence -> max pool."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.conv = nn.Sequential(nn.Conv1d(16, 32, 3, padding=1), nn.BatchNorm1d(32), nn.ReLU(),
                                  nn.Conv1d(32, 24, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(24, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.embed(ids).transpose(1, 2))
        return self.head(x.amax(dim=-1))


def test_token_id_inputs_are_traced_costed_timed_and_exported(tmp_path):
    """A network that reads token ids (an Embedding first) gets int64 example inputs in every
    trace, count, timing and export check; its embedding table is costed (parameters, a
    lookup entry in the latency table)."""
    from prunesearch.methods.cost.latency import measure_latency, measure_spec
    from prunesearch.methods.export_formats import export_network
    from prunesearch.methods.pruning.layers import example_inputs, token_vocabulary

    torch.manual_seed(0)
    model = TextNet().eval()
    assert token_vocabulary(model) == 50 and token_vocabulary(KeywordNet()) is None
    ids = example_inputs(model, (4, 20), random=True, generator=torch.Generator().manual_seed(0))
    assert ids.dtype == torch.int64 and int(ids.max()) < 50
    space = genome_space(model, input_shape=(20,), granularity=4)
    assert space.names
    for genome in (space.upper(), space.uniform_genome(0.5), space.lower()):
        specs = layer_specs(space, space.channels(genome))
        small = apply_genome(model, space, genome).module.eval()
        assert small(ids).shape == (4, 3)
        assert count_specs(specs) == count_module(small, (20,))
    embed = next(s for s in specs if s.op == "embed")
    assert embed.kernel == 50 and embed.in_hw == (20, 1)
    assert measure_spec(embed, repeats=3, warmup=1).median_ms > 0
    assert measure_latency(small, (20,), batch_size=2, repeats=3, warmup=1).median_ms > 0
    out = tmp_path / "text.onnx"
    check = export_network(small, out, format="onnx", input_shape=(20,), batch_size=2)
    assert check.max_abs_diff <= 1e-4
    assert out.is_file()
