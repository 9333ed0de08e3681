"""Structural channel pruning: genome spaces, importance criteria, physical pruning, recipes.

Typical use::

    space = genome_space(model, "resnet56", granularity=4)
    pruned = apply_genome(model, space, space.uniform_genome(0.5), importance="l1")
    specs = layer_specs(space, space.channels(genome), batch=1)
    same = rebuild(model, pruned.recipe)            # bit-for-bit identical outputs
    tuned = load_pruned(pruned.recipe, state_dict)  # fine-tuned weights of the pruned module
"""

from prunesearch.methods.pruning.apply import (
    PrunedNetwork,
    apply_genome,
    channel_producers,
    load_pruned,
    load_recipe,
    make_recipe,
    prune_to_kept,
    rank_channels,
    rebuild,
    save_recipe,
    state_dict_sha256,
)
from prunesearch.methods.pruning.importance import IMPORTANCES, batch_gradients
from prunesearch.methods.pruning.space import GenomeSpace, Group, genome_space
from prunesearch.methods.pruning.specs import layer_specs

__all__ = [
    "IMPORTANCES",
    "GenomeSpace",
    "Group",
    "PrunedNetwork",
    "apply_genome",
    "batch_gradients",
    "channel_producers",
    "genome_space",
    "layer_specs",
    "load_pruned",
    "load_recipe",
    "make_recipe",
    "prune_to_kept",
    "rank_channels",
    "rebuild",
    "save_recipe",
    "state_dict_sha256",
]
