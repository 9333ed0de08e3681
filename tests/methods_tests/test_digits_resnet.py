"""The quickstart's digits ResNet: a CIFAR ResNet-14 for 1-channel 8x8 images, pruned through
the CIFAR-ResNet path (9 groups)."""

from __future__ import annotations

import torch

from prunesearch.methods.cost.counts import count_module
from prunesearch.methods.models import arch_config, build_from_arch, build_model
from prunesearch.methods.pruning import apply_genome, genome_space


def test_digits_resnet_has_nine_groups_and_prunes_to_a_smaller_network_that_runs():
    torch.manual_seed(0)
    base = build_model("digits-resnet14").eval()
    space = genome_space(base, "digits-resnet14", 4)
    assert len(space.groups) == 9 and space.input_shape == (1, 8, 8)
    assert [g.name for g in space.groups][-3:] == ["stage1", "stage2", "stage3"]
    genome = space.uniform_genome(0.5)
    pruned = apply_genome(base, space, genome).module.eval()
    x = torch.randn(3, 1, 8, 8)
    with torch.inference_mode():
        out = pruned(x)
    assert out.shape == (3, 10) and torch.isfinite(out).all()
    assert count_module(pruned, (1, 8, 8)).params < count_module(base, (1, 8, 8)).params
    # The recipe's architecture rebuilds the same 8x8 network.
    rebuilt = build_from_arch(arch_config(pruned, "digits-resnet14"))
    assert rebuilt.input_size == 8 and rebuilt.in_channels == 1
    assert genome_space(rebuilt, "digits-resnet14", 4).input_shape == (1, 8, 8)
