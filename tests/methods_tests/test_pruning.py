"""Genome spaces, channel importance, physical pruning, recipes and layer specs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from prunesearch.methods.models import build_model, load_base_model
from prunesearch.methods.pruning import (
    GenomeSpace,
    Group,
    apply_genome,
    genome_space,
    layer_specs,
    load_pruned,
    load_recipe,
    prune_to_kept,
    rank_channels,
    rebuild,
    save_recipe,
)
from prunesearch.methods.pruning.importance import keep_top
from prunesearch.methods.pruning.surgery import own_producers
from prunesearch.methods.pruning.tp_groups import tp_producers
from prunesearch.methods.settings import DataSettings, ModelSettings

torch.set_num_threads(2)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def resnet56() -> nn.Module:
    """Pretrained ResNet-56 when the real data is there (realistic importance scores), else a
    seeded random one: the structural checks hold either way."""
    import os

    root = os.environ.get("PRUNESEARCH_DATA")
    if root:
        try:
            return load_base_model(ModelSettings(name="resnet56"),
                                   DataSettings(name="cifar10", root=root))
        except FileNotFoundError:
            pass
    torch.manual_seed(0)
    return build_model("resnet56").eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------------------- genome encoding

def test_granule_encoding_reaches_full_width_not_divisible_by_granularity():
    space = GenomeSpace(model_name="x", granularity=4,
                        groups=(Group("a", 10, "conv"), Group("b", 3, "conv"), Group("c", 8, "conv")))
    assert space.lower() == (1, 1, 1)
    assert space.upper() == (3, 1, 2)
    assert space.channels((3, 1, 2)) == [10, 3, 8]  # min(granules * 4, full)
    assert space.channels((1, 1, 1)) == [4, 3, 4]
    assert space.channels(space.full_genome()) == [10, 3, 8]
    assert space.genome_for_channels([9, 3, 5]) == (3, 1, 2)
    with pytest.raises(ValueError, match="3 integers"):
        space.validate((1, 1))
    with pytest.raises(ValueError, match="group 'a'.*outside \\[1, 3\\]"):
        space.validate((4, 1, 1))
    with pytest.raises(ValueError, match="outside"):
        space.validate((0, 1, 1))
    with pytest.raises(ValueError, match="integers"):
        space.validate((1.5, 1, 1))


def test_resnet56_space_has_block_then_stage_groups(resnet56):
    space = genome_space(resnet56, "resnet56", granularity=4)
    assert len(space) == 30
    assert space.names[:2] == ["layer1.0", "layer1.1"] and space.names[26] == "layer3.8"
    assert space.names[27:] == ["stage1", "stage2", "stage3"]
    assert [g.kind for g in space.groups] == ["block"] * 27 + ["stage"] * 3
    assert space.full_widths == [16] * 9 + [32] * 9 + [64] * 9 + [16, 32, 64]
    assert space.upper() == tuple(w // 4 for w in space.full_widths)


def test_digits_space_has_one_group_per_conv():
    space = genome_space(build_model("digits-cnn"), "digits-cnn", granularity=8)
    assert space.names == ["conv1", "conv2", "conv3"] and space.input_shape == (1, 8, 8)
    assert space.upper() == (4, 8, 16)


# ---------------------------------------------------------------------------- physical pruning

def analytic_resnet_params(channels: list[int], n: int = 9, classes: int = 10) -> int:
    """Parameters of a CIFAR ResNet with the given widths, counted from the architecture."""
    inner, stage = channels[: 3 * n], channels[3 * n :]
    total = 3 * stage[0] * 9 + 2 * stage[0]  # stem conv + BN
    c_in = stage[0]
    for s in range(3):
        for i in range(n):
            mid, out = inner[s * n + i], stage[s]
            total += c_in * mid * 9 + 2 * mid + mid * out * 9 + 2 * out
            c_in = out
    return total + stage[2] * classes + classes


def test_uniform_half_resnet56_is_smaller_and_matches_analytic_count(resnet56, images):
    space = genome_space(resnet56, "resnet56")
    genome = space.uniform_genome(0.5)
    channels = space.channels(genome)
    assert channels == [w // 2 for w in space.full_widths]
    pruned = apply_genome(resnet56, space, genome).module
    assert n_params(pruned) == analytic_resnet_params(channels)
    assert n_params(resnet56) == analytic_resnet_params(space.full_widths)
    assert n_params(pruned) < 0.3 * n_params(resnet56)
    assert [m.out_channels for m in pruned.modules() if isinstance(m, nn.Conv2d)][:3] == [8, 8, 8]
    with torch.no_grad():
        out = pruned(images)
    assert out.shape == (4, 10) and torch.isfinite(out).all()


def test_full_genome_reproduces_the_base_network_exactly(resnet56, images):
    space = genome_space(resnet56, "resnet56")
    with torch.no_grad():
        assert torch.equal(apply_genome(resnet56, space, space.full_genome()).module(images),
                           resnet56(images))


def masked_copy(model: nn.Module, producers: dict, kept: dict) -> nn.Module:
    """The dense network with every pruned channel silenced (its producing BNs zeroed)."""
    import copy

    masked = copy.deepcopy(model)
    modules = {id(m): name for name, m in model.named_modules()}
    masked_modules = dict(masked.named_modules())
    for group, members in producers.items():
        for module, index in members:
            if not isinstance(module, nn.BatchNorm2d):
                continue
            bn = masked_modules[modules[id(module)]]
            width = bn.num_features
            drop = sorted(set(range(width)) - {index[k] if index else k for k in kept[group]})
            with torch.no_grad():
                bn.weight[drop] = 0.0
                bn.bias[drop] = 0.0
    return masked


def test_pruned_resnet_equals_dense_network_with_pruned_channels_silenced(resnet56, images):
    """The surgery, including the option-A shortcut mapped through its zero padding, computes
    exactly what the dense network computes when the removed channels are zero."""
    space = genome_space(resnet56, "resnet56")
    genome = space.random_genome(np.random.default_rng(1))
    result = apply_genome(resnet56, space, genome)
    kept = result.recipe["kept"]
    masked = masked_copy(resnet56, own_producers(resnet56), kept)
    # Zeroed BNs silence a removed residual channel only until the option-A shortcut copies a
    # kept channel of the previous stage into it: zero removed channels at every block output.
    for s, stage in enumerate(masked.stages()):
        mask = torch.zeros(1, resnet56.stage_widths[s], 1, 1)
        mask[:, kept[f"stage{s + 1}"]] = 1.0
        for block in stage:
            block.register_forward_hook(lambda m, i, out, mask=mask: out * mask)
    with torch.no_grad():
        assert torch.allclose(result.module(images), masked(images), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_torchvision_models_prune_to_random_genome(name, images):
    torch.manual_seed(0)
    base = build_model(name).eval()
    space = genome_space(base, name, granularity=8, input_shape=(3, 32, 32))
    assert all(g.kind == "tp-group" for g in space.groups)
    assert len(space) == {"resnet18": 12, "mobilenet_v2": 25}[name]
    genome = space.random_genome(np.random.default_rng(0))
    result = apply_genome(base, space, genome)
    with torch.no_grad():
        out = result.module(images)
    assert out.shape == (4, 10)
    assert n_params(result.module) < n_params(base)
    # Residual adds and depthwise pairs stay consistent: the pruned network computes what the
    # dense one does with the removed channels silenced.
    masked = masked_copy(base, tp_producers(base), result.recipe["kept"])
    with torch.no_grad():
        assert torch.allclose(out, masked(images), atol=1e-4, rtol=1e-4)
    weights = {k: v.numpy().copy() for k, v in result.module.state_dict().items()}
    with torch.no_grad():
        assert torch.equal(rebuild(base, result.recipe)(images), out)
        assert torch.equal(load_pruned(result.recipe, weights)(images), out)


def test_smallest_genome_keeps_one_granule_everywhere(resnet56, images):
    space = genome_space(resnet56, "resnet56")
    pruned = apply_genome(resnet56, space, space.lower()).module
    widths = [m.out_channels for m in pruned.modules() if isinstance(m, nn.Conv2d)]
    assert set(widths) == {4}
    with torch.no_grad():
        assert pruned(images).shape == (4, 10)
    with pytest.raises(ValueError, match="zero channels"):
        kept = {name: [0] for name in space.names}
        kept["stage2"] = []
        prune_to_kept(resnet56, kept)


# ------------------------------------------------------------------------------- importance

def test_keep_top_keeps_highest_scores_sorted_with_stable_ties():
    assert keep_top(torch.tensor([0.1, 5.0, 3.0, 5.0, 0.0]), 3) == [1, 2, 3]
    assert keep_top(torch.tensor([1.0, 1.0, 1.0]), 2) == [0, 1]


def test_l1_keeps_the_filters_with_largest_weights(resnet56):
    space = genome_space(resnet56, "resnet56")
    scores = rank_channels(resnet56, space, importance="l1")
    block = resnet56.layer2[3]
    expected = block.conv1.weight.detach().abs().sum(dim=(1, 2, 3)).double()
    assert torch.allclose(scores["layer2.3"], expected)
    kept = apply_genome(resnet56, space, space.uniform_genome(0.25)).recipe["kept"]["layer2.3"]
    assert kept == sorted(torch.topk(expected, 8).indices.tolist())


def test_importance_criteria_choose_differently_and_taylor_needs_gradients(resnet56):
    space = genome_space(resnet56, "resnet56")
    genome = space.uniform_genome(0.5)
    batch = (torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(2)),
             torch.arange(8) % 10)
    kept = {imp: apply_genome(resnet56, space, genome, importance=imp,
                              example_inputs=batch).recipe["kept"]
            for imp in ("l1", "bn_scale", "taylor")}
    assert kept["l1"] != kept["bn_scale"] != kept["taylor"]
    with pytest.raises(ValueError, match="taylor"):
        apply_genome(resnet56, space, genome, importance="taylor")
    with pytest.raises(ValueError, match="importance"):
        apply_genome(resnet56, space, genome, importance="random")
    # Computing gradients leaves the base model untouched.
    assert all(p.grad is None for p in resnet56.parameters())


# ---------------------------------------------------------------------------------- recipes

def test_recipe_round_trip_reproduces_outputs_exactly(resnet56, images, tmp_path):
    space = genome_space(resnet56, "resnet56")
    result = apply_genome(resnet56, space, space.random_genome(np.random.default_rng(3)),
                          base_checkpoint="/weights/resnet56.th")
    path = save_recipe(result.recipe, tmp_path / "recipe.json")
    recipe = load_recipe(path)
    assert recipe == result.recipe
    with torch.no_grad():
        expected = result.module(images)
        assert torch.equal(rebuild(resnet56, recipe)(images), expected)
        # Fine-tuned weights saved as numpy arrays come back into the same architecture.
        weights = {k: v.numpy().copy() for k, v in result.module.state_dict().items()}
        assert torch.equal(load_pruned(recipe, weights)(images), expected)
    other = build_model("resnet56")
    with pytest.raises(ValueError, match="differ from the recipe's base"):
        rebuild(other, recipe)


def test_digits_cnn_recipe_and_pruning(images):
    torch.manual_seed(0)
    base = build_model("digits-cnn").eval()
    space = genome_space(base, "digits-cnn", granularity=4)
    result = apply_genome(base, space, (2, 5, 7))
    assert [m.out_channels for m in result.module.modules() if isinstance(m, nn.Conv2d)] == [8, 20, 28]
    x = torch.randn(3, 1, 8, 8)
    weights = {k: v.clone() for k, v in result.module.state_dict().items()}
    with torch.no_grad():
        assert torch.equal(load_pruned(result.recipe, weights)(x), result.module(x))


# ------------------------------------------------------------------------------ layer specs

def traced_convs(module: nn.Module, x: torch.Tensor) -> list[tuple]:
    """(in, out, kernel, stride, groups, in_hw, out_hw) of every conv actually run."""
    seen: list[tuple] = []

    def hook(m, inputs, output):
        seen.append((m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.groups,
                     tuple(inputs[0].shape[2:]), tuple(output.shape[2:])))

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        module(x)
    for h in handles:
        h.remove()
    return seen


@pytest.mark.parametrize("name", ["resnet56", "digits-cnn", "mobilenet_v2"])
def test_layer_specs_match_the_pruned_module(name, resnet56):
    torch.manual_seed(0)
    base = resnet56 if name == "resnet56" else build_model(name).eval()
    space = genome_space(base, name, granularity=8 if name == "mobilenet_v2" else 4,
                         input_shape=(1, 8, 8) if name == "digits-cnn" else (3, 32, 32))
    genome = space.random_genome(np.random.default_rng(4))
    pruned = apply_genome(base, space, genome).module.eval()
    specs = layer_specs(space, space.channels(genome), batch=2)
    convs = [(s.in_channels, s.out_channels, s.kernel, s.stride, s.groups, s.in_hw, s.out_hw)
             for s in specs if s.op == "conv"]
    assert convs == traced_convs(pruned, torch.zeros(2, *space.input_shape))
    assert all(s.batch == 2 for s in specs)
    assert specs[-1].op == "linear" and specs[-1].out_channels == 10
    if name == "resnet56":
        ops = [s.op for s in specs]
        assert ops.count("add") == 27 and ops.count("shortcut") == 2
        shortcut = next(s for s in specs if s.op == "shortcut")
        assert shortcut.in_hw == (32, 32) and shortcut.out_hw == (16, 16)


def test_dense_resnet56_specs_give_125m_macs(resnet56):
    space = genome_space(resnet56, "resnet56")
    specs = layer_specs(space, space.full_widths, batch=1)
    macs = sum(s.out_channels * s.out_hw[0] * s.out_hw[1] * s.in_channels // s.groups * s.kernel ** 2
               for s in specs if s.op == "conv")
    macs += sum(s.in_channels * s.out_channels for s in specs if s.op == "linear")
    assert abs(macs / 1e6 - 125.5) < 1.0
    with pytest.raises(ValueError, match="outside"):
        layer_specs(space, [17] + space.full_widths[1:], batch=1)
