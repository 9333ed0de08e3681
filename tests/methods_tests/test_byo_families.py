"""One network per torchvision family of bench/torchvision_sweep.py through the public
hand-pruning calls: genome_space -> uniform_genome(0.5) -> apply_genome(...).module runs, has the
classes' outputs and fewer parameters and MACs; plus the refusals a user can act on.

The networks are the families' own torchvision classes at reduced widths/depths where the class
allows it (the same modules and code paths, seconds instead of minutes on 2 cores)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch_pruning as tp
import torchvision.models as tvm
from torch import nn

from prunesearch.methods.errors import ModelTraceError, PrunesearchError
from prunesearch.methods.pruning import apply_genome, genome_space, layer_specs, rebuild


def _small(name: str) -> nn.Module:
    from functools import partial

    from torchvision.models import convnext, efficientnet, mobilenetv3, regnet
    from torchvision.models.resnet import BasicBlock, Bottleneck

    builders = {
        "alexnet": lambda: tvm.alexnet(num_classes=10),
        "convnext": lambda: tvm.ConvNeXt([convnext.CNBlockConfig(16, 32, 1),
                                          convnext.CNBlockConfig(32, None, 1)], num_classes=10),
        "densenet": lambda: tvm.DenseNet(growth_rate=8, block_config=(2, 2),
                                         num_init_features=16, num_classes=10),
        "efficientnet": lambda: tvm.EfficientNet(
            efficientnet._efficientnet_conf("efficientnet_b0", width_mult=0.25,
                                            depth_mult=0.25)[0], 0.2, num_classes=10),
        "efficientnet_v2": lambda: tvm.EfficientNet(
            [efficientnet.FusedMBConvConfig(1, 3, 1, 8, 8, 1),
             efficientnet.MBConvConfig(4, 3, 2, 8, 16, 1)], 0.2, num_classes=10,
            last_channel=64),
        "googlenet": lambda: tvm.googlenet(num_classes=10, aux_logits=False, init_weights=True),
        "mnasnet": lambda: tvm.mnasnet0_5(num_classes=10),
        "mobilenet_v2": lambda: tvm.mobilenet_v2(num_classes=10, width_mult=0.25),
        "mobilenet_v3": lambda: tvm.MobileNetV3(
            *mobilenetv3._mobilenet_v3_conf("mobilenet_v3_small", width_mult=0.25),
            num_classes=10),
        "regnet": lambda: tvm.RegNet(regnet.BlockParams.from_init_params(
            depth=3, w_0=16, w_a=8.0, w_m=2.0, group_width=8, se_ratio=0.25), num_classes=10,
            norm_layer=partial(nn.BatchNorm2d, eps=1e-5, momentum=0.1)),
        "resnet": lambda: tvm.ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10),
        "resnext": lambda: tvm.ResNet(Bottleneck, [1, 1, 1, 1], groups=8, width_per_group=4,
                                      num_classes=10),
        "shufflenet": lambda: tvm.ShuffleNetV2([2, 2, 2], [12, 24, 48, 96, 256],
                                               num_classes=10),
        "squeezenet": lambda: tvm.squeezenet1_1(num_classes=10),
        "wide_resnet": lambda: tvm.ResNet(Bottleneck, [1, 1, 1, 1], width_per_group=128,
                                          num_classes=10),
    }
    return builders[name]().eval()


SIZES = {"alexnet": 64, "inception": 75}
FAMILIES = ["alexnet", "convnext", "densenet", "efficientnet", "efficientnet_v2", "googlenet",
            "mnasnet", "mobilenet_v2", "mobilenet_v3", "regnet", "resnet", "resnext",
            "shufflenet", "squeezenet", "wide_resnet"]  # every VGG has > 100 M parameters


@pytest.mark.parametrize("family", FAMILIES)
def test_every_sweep_family_prunes_to_a_smaller_network_that_runs(family):
    torch.manual_seed(0)
    model = _small(family)
    size = SIZES.get(family, 32)
    shape = (3, size, size + 8)  # non-square: traces follow the data's shape
    space = genome_space(model, input_shape=shape, granularity=4)
    assert space.num_classes == 10 and len(space) >= 1
    pruned = apply_genome(model, space, space.uniform_genome(0.5))
    x = torch.randn(2, *shape)
    with torch.no_grad():
        out = pruned.module.eval()(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    macs, params = tp.utils.count_ops_and_params(model, x[:1])
    macs_p, params_p = tp.utils.count_ops_and_params(pruned.module, x[:1])
    assert macs_p < macs and params_p < params
    pruned.module.train()(x).sum().backward()  # fine-tuning runs on the pruned network


@pytest.mark.parametrize("family", ["resnext", "densenet"])
def test_recipe_replays_and_traced_specs_follow_the_pruned_network(family):
    model = _small(family)
    space = genome_space(model, input_shape=(3, 32, 40), granularity=4)
    pruned = apply_genome(model, space, space.uniform_genome(0.5))
    x = torch.randn(2, 3, 32, 40)
    with torch.no_grad():
        assert torch.allclose(rebuild(model, pruned.recipe).eval()(x), pruned.module.eval()(x),
                              atol=1e-5)
    specs = layer_specs(space, space.channels(space.uniform_genome(0.5)))
    convs = [s for s in specs if s.op == "conv"]
    pruned_convs = [m for m in pruned.module.modules() if isinstance(m, nn.Conv2d)]
    assert [(s.in_channels, s.out_channels, s.groups) for s in convs] == \
        [(m.in_channels, m.out_channels, m.groups) for m in pruned_convs]


@pytest.mark.parametrize(("family", "affine"), [
    ("mobilenet_v2", True),   # depthwise convs: a group count that follows the width
    ("densenet", True),       # concatenations: a channel count that is a sum of widths
    ("resnext", True),        # grouped convs: widths in multiples of the group count
    ("convnext", False),      # channels-last ops: traced for every width vector
])
def test_specs_of_any_width_vector_equal_its_trace(family, affine):
    # layer_specs of a torchvision network comes from a model fitted on a few traces; it must
    # give exactly what tracing the pruned network gives, or not be used at all.
    from prunesearch.methods.pruning.specs import _affine_model, traced_specs

    model = _small(family)
    space = genome_space(model, input_shape=(3, 32, 40), granularity=4)
    assert (_affine_model(space, 1, (32, 40)) is not None) == affine
    rng = np.random.default_rng(7)
    for _ in range(4):
        genome = [int(rng.integers(1, u + 1)) for u in space.upper()]
        channels = space.channels(genome)
        assert tuple(layer_specs(space, channels)) == traced_specs(space, tuple(channels), 1,
                                                                   (32, 40))
    full = tuple(space.full_widths)
    assert tuple(layer_specs(space, full)) == traced_specs(space, full, 1, (32, 40))


def test_the_spec_model_is_fitted_only_once_tracing_would_cost_as_much():
    from prunesearch.methods.pruning import specs

    space = genome_space(_small("resnet"), input_shape=(3, 32, 32), granularity=4)
    key = (space, 1, (32, 32))
    rng = np.random.default_rng(3)
    for _ in range(len(space.groups) + 1):   # what an actor timing a few candidates asks for
        channels = tuple(space.channels([int(rng.integers(1, u + 1)) for u in space.upper()]))
        assert specs.affine_specs(space, channels, 1, (32, 32)) == \
            specs.traced_specs(space, channels, 1, (32, 32))
    assert key not in specs._MODELS
    channels = tuple(space.channels([1] * len(space.groups)))
    assert specs.affine_specs(space, channels, 1, (32, 32)) == \
        specs.traced_specs(space, channels, 1, (32, 32))
    assert specs._MODELS[key] is not None


def test_grouped_conv_groups_keep_multiples_of_the_group_count():
    model = _small("resnext")
    space = genome_space(model, input_shape=(3, 32, 32), granularity=4)
    grouped = [g for g in space.groups if g.multiple > 1]
    assert grouped, "ResNeXt's grouped convs were not recognised"
    for genome in (space.uniform_genome(0.5), space.lower()):
        for width, group in zip(space.channels(genome), space.groups):
            assert width % group.multiple == 0 and width >= group.multiple


def test_shufflenet_keeps_shuffled_channels_and_prunes_the_branches():
    model = _small("shufflenet")
    space = genome_space(model, input_shape=(3, 32, 32), granularity=4)
    # Stage widths pass a channel shuffle: only the stem, the branches' inner widths and the
    # last conv are genes.
    assert any(".branch2." in n for n in space.names)
    assert all(".branch" in n or n in ("conv1.0", "conv5.0") for n in space.names), space.names
    assert not any(n.endswith("branch2.5") for n in space.names)  # writes shuffled channels


def test_ignored_layers_and_a_named_classifier_stay_out_of_the_genome():
    from prunesearch.methods.families.graph import tag_model

    model = tag_model(_small("resnet"), "mine", ignore=["layer4"])
    names = genome_space(model, input_shape=(3, 32, 32)).names
    assert not any(n.startswith("layer4") for n in names)
    model = tag_model(_small("squeezenet"), "sq", classifier="classifier.1")
    space = genome_space(model, input_shape=(3, 32, 32))
    assert "classifier.1" not in space.names and space.num_classes == 10


def test_untraceable_network_is_one_line_error_naming_it():
    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)
            self.fc = nn.Linear(8, 10)

        def forward(self, x):
            return self.fc(self.conv(x))  # shapes do not fit: fails on any input

    with pytest.raises(ModelTraceError, match="Broken does not run on input") as info:
        genome_space(Broken(), input_shape=(3, 16, 16))
    assert isinstance(info.value, PrunesearchError) and "\n" not in str(info.value)
    from prunesearch.methods.families.graph import tag_model

    with pytest.raises(ModelTraceError, match="no module named 'nope'"):
        tag_model(_small("resnet"), "r", classifier="nope")


def test_groups_are_found_on_frozen_weights_and_the_flags_come_back():
    # A teacher or a criterion learned with fixed weights has no parameter requiring
    # gradients; Torch-Pruning traces through autograd, and must still find every group.
    model = _small("resnet")
    space = genome_space(model, input_shape=(3, 32, 32), granularity=4)
    frozen = _small("resnet")
    for p in frozen.parameters():
        p.requires_grad_(False)
    next(frozen.parameters()).requires_grad_(True)   # one flag that must stay as it was
    assert genome_space(frozen, input_shape=(3, 32, 32), granularity=4).names == space.names
    pruned = apply_genome(frozen, space, space.uniform_genome(0.5)).module
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    assert [p.requires_grad for p in frozen.parameters()] == \
        [True] + [False] * (len(list(frozen.parameters())) - 1)


def test_non_square_kernels_and_pools_are_costed_as_they_run():
    """Inception-style 1x7 / 7x1 convs with non-square strides and paddings, and a 2x2 average
    pool: the specs' MACs and parameters equal the real pruned network's, and the table entry
    of a 1x7 conv is timed as a 1x7 conv (it used to be costed and timed as 1x1, and a 7x1 as
    7x7: Inception-v3's MACs were 1.63x their count)."""
    from prunesearch.methods.cost.counts import count_module, count_specs
    from prunesearch.methods.cost.latency import spec_module

    net = nn.Sequential(nn.Conv2d(3, 16, (1, 7), padding=(0, 3)), nn.BatchNorm2d(16), nn.ReLU(),
                        nn.Conv2d(16, 16, (7, 1), stride=(2, 1), padding=(3, 0)),
                        nn.BatchNorm2d(16), nn.ReLU(), nn.AvgPool2d(2),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4)).eval()
    space = genome_space(net, input_shape=(3, 20, 24), granularity=4)
    for keep in (1.0, 0.5, 0.25):
        genome = space.uniform_genome(keep)
        specs = layer_specs(space, space.channels(genome))
        assert count_specs(specs) == count_module(apply_genome(net, space, genome).module,
                                                  (3, 20, 24))
    convs = [s for s in specs if s.op == "conv"]
    assert convs[0].kernel == (1, 7) and convs[0].padding == (0, 3)
    assert "_k1x7_s1_p0x3_" in convs[0].key() and "_k7x1_s2x1_p3x0_" in convs[1].key()
    for spec in convs + [s for s in specs if s.op == "avgpool"]:
        module, shapes = spec_module(spec)
        out = module(torch.zeros(shapes[0]))
        assert tuple(out.shape[2:]) == spec.out_hw, spec


def test_dilated_convs_are_timed_with_their_dilation():
    from prunesearch.methods.cost.latency import spec_module

    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=2, dilation=2), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(8, 3)).eval()
    space = genome_space(net, input_shape=(3, 16, 16), granularity=4)
    dilated, plain = [s for s in layer_specs(space, space.channels(space.upper()))
                      if s.op == "conv"]
    assert dilated.dilation == 2 and "_dil2" in dilated.key()
    assert plain.dilation == 1 and "_dil" not in plain.key()
    module, shapes = spec_module(dilated)
    assert module.dilation == (2, 2)
    assert tuple(module(torch.zeros(shapes[0])).shape[2:]) == dilated.out_hw


class _Decoder(nn.Module):
    """A small segmentation network: an encoder, a transposed-conv decoder with a skip
    concatenation, an interpolated side path and a per-pixel head."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.down = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1),
                                  nn.BatchNorm2d(32), nn.ReLU())
        self.up = nn.ConvTranspose2d(32, 16, 3, stride=2, padding=1, output_padding=1)
        self.side = nn.Conv2d(32, 8, 1)
        self.head = nn.Conv2d(40, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.enc(x)
        b = self.down(a)
        side = nn.functional.interpolate(self.side(b), scale_factor=2.0, mode="nearest")
        return self.head(torch.cat([a, self.up(b), side], 1))


def test_transposed_convs_are_pruned_and_costed():
    """A decoder's ConvTranspose2d is a gene (its output channels), is scored by its own
    filters, and is costed and timed as the transposed conv it is (it used to cost nothing)."""
    from prunesearch.methods.cost.counts import count_module, count_specs
    from prunesearch.methods.cost.latency import spec_module
    from prunesearch.methods.pruning.layers import filter_weights

    torch.manual_seed(0)
    net = _Decoder().eval()
    space = genome_space(net, input_shape=(3, 16, 20), granularity=4)
    assert "up" in space.names
    x = torch.randn(2, 3, 16, 20)
    same = apply_genome(net, space, space.upper()).module.eval()
    assert torch.allclose(same(x), net(x), atol=1e-5)
    for keep in (1.0, 0.5, 0.25):
        genome = space.uniform_genome(keep)
        specs = layer_specs(space, space.channels(genome))
        small = apply_genome(net, space, genome).module.eval()
        assert small(x).shape == net(x).shape
        assert count_specs(specs) == count_module(small, (3, 16, 20))
    deconv = next(s for s in specs if s.op == "deconv")
    module, shapes = spec_module(deconv)
    assert isinstance(module, nn.ConvTranspose2d)
    assert tuple(module(torch.zeros(shapes[0])).shape[2:]) == deconv.out_hw
    # Output channel o of a transposed conv owns weight[:, o]: the rows l1 scores.
    rows = filter_weights(net.up)
    assert rows.shape == (16, 32 * 9)
    assert torch.equal(rows[5], net.up.weight.detach()[:, 5].flatten())
    # The kept decoder channels are the ones with the largest filters.
    genome = list(space.upper())
    genome[space.names.index("up")] = 1  # 4 of 16 channels at granularity 4
    small = apply_genome(net, space, tuple(genome)).module
    top = set(rows.abs().sum(1).argsort(descending=True)[:4].tolist())
    kept = {int(c) for c in range(16)
            if any(torch.equal(net.up.weight.detach()[:, c], small.up.weight.detach()[:, j])
                   for j in range(4))}
    assert kept == top
