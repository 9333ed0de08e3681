"""Apply a genome: rank channels, keep the best, build the smaller network, record a recipe.

A *recipe* is a JSON-able dict that replays a pruning exactly::

    {"format": 1, "model": "resnet56", "base_arch": {...}, "base_checkpoint": "/path" | None,
     "base_sha256": "...", "granularity": 4, "importance": "l1",
     "groups": ["layer1.0", ...], "genome": [...], "channels": [...],
     "kept": {"layer1.0": [0, 3, ...], ...}}

``rebuild(base, recipe)`` slices the same channels from the same base weights and gives a module
with bit-for-bit identical outputs; ``load_pruned(recipe, state_dict)`` rebuilds the pruned
architecture without the base weights and loads fine-tuned weights into it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from prunesearch.methods.io import atomic_write_text
from prunesearch.methods.models import arch_config, build_from_arch
from prunesearch.methods.pruning.importance import (
    IMPORTANCES,
    Producer,
    batch_gradients,
    group_scores,
    keep_top_periodic,
)
from prunesearch.methods.pruning.space import GenomeSpace

__all__ = [
    "RECIPE_FORMAT",
    "PrunedNetwork",
    "apply_genome",
    "channel_producers",
    "load_pruned",
    "make_recipe",
    "load_recipe",
    "prune_to_kept",
    "rank_channels",
    "rebuild",
    "save_recipe",
    "state_dict_sha256",
]

RECIPE_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class PrunedNetwork:
    """A physically smaller network and the recipe that rebuilds it."""

    module: nn.Module
    recipe: dict[str, Any]


def _producers(model: nn.Module, space: GenomeSpace) -> dict[str, list[Producer]]:
    from prunesearch.methods.families import family_of

    return family_of(model).producers(model, tuple(space.input_shape))


_DIGESTS: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, str]] = weakref.WeakKeyDictionary()


def state_dict_sha256(model: nn.Module | Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over a state dict's names, dtypes, shapes and bytes (identifies base weights).

    For a module the digest is cached until one of its tensors is replaced or modified in place
    (hashing ResNet-50's 94 MB on every evaluation would cost ~0.3 s).
    """
    if isinstance(model, nn.Module):
        state = model.state_dict()
        fingerprint = tuple((k, v.data_ptr(), v._version) for k, v in state.items())
        cached = _DIGESTS.get(model)
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        digest = _sha256(state)
        _DIGESTS[model] = (fingerprint, digest)
        return digest
    return _sha256(model)


def _sha256(state: Mapping[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def rank_channels(model: nn.Module, space: GenomeSpace, *, importance: str = "l1",
                  grads: Mapping[nn.Parameter, torch.Tensor] | None = None,
                  example_inputs: tuple[torch.Tensor, torch.Tensor] | Callable[[nn.Module], torch.Tensor] | None = None,
                  ) -> dict[str, torch.Tensor]:
    """Importance score of every channel of every group (see :mod:`.importance`).

    Args:
        model: The base network.
        space: Its genome space.
        importance: ``l1``, ``bn_scale`` or ``taylor``.
        grads: Parameter -> gradient, for ``taylor``.
        example_inputs: ``(images, labels)`` batch (or ``loss_fn(model)``) from which the
            ``taylor`` gradients are computed when ``grads`` is not given.
    """
    if importance not in IMPORTANCES:
        raise ValueError(f"importance must be one of {IMPORTANCES}, got {importance!r}")
    if importance == "taylor" and grads is None:
        if example_inputs is None:
            raise ValueError("importance 'taylor' needs grads= or example_inputs=(images, labels)")
        grads = batch_gradients(model, example_inputs)
    producers = _producers(model, space)
    if list(producers) != space.names:
        raise ValueError(f"the model's groups {list(producers)} do not match the genome space "
                         f"{space.names} (was the space built for another model?)")
    return {g.name: group_scores(producers[g.name], g.full_width, importance, grads)
            for g in space.groups}


def prune_to_kept(model: nn.Module, kept: Mapping[str, Sequence[int]], *,
                  input_shape: Sequence[int] | None = None) -> nn.Module:
    """A new, smaller network keeping the channels ``kept[group]`` (sorted base indices) of
    every group, by the surgery of the model's family; ``input_shape`` (the dataset's) is
    needed to trace torchvision models."""
    from prunesearch.methods.families import family_of

    family = family_of(model)
    return family.prune(model, kept, family.input_shape(model, input_shape))


def apply_genome(model: nn.Module, space: GenomeSpace, genome: Sequence[int], *,
                 importance: str = "l1",
                 grads: Mapping[nn.Parameter, torch.Tensor] | None = None,
                 example_inputs: tuple[torch.Tensor, torch.Tensor] | Callable[[nn.Module], torch.Tensor] | None = None,
                 base_checkpoint: str | None = None,
                 scores: Mapping[str, torch.Tensor] | None = None) -> PrunedNetwork:
    """Prune ``model`` to the widths ``genome`` encodes.

    Inside every group the channels with the highest ``importance`` are kept (ties: lower index
    first), or the highest ``scores`` when a method ranks the channels itself (CLAD's learned
    criterion). ``model`` itself is not modified.

    Args:
        model: Base network (a model of a registered family).
        space: ``genome_space(model, name, granularity, input_shape=...)``.
        genome: Granules kept per group.
        importance: ``l1`` (default), ``bn_scale`` or ``taylor``.
        grads: Parameter -> gradient for ``taylor``.
        example_inputs: ``(images, labels)`` batch for ``taylor`` when ``grads`` is not given.
        base_checkpoint: Path of the base weights, recorded in the recipe.
        scores: Group name -> one score per channel (higher = keep), for every group of
            ``space``; replaces the ``importance`` ranking, and ``importance`` is then only the
            label recorded in the recipe (e.g. ``"clad-learned"``).

    Returns:
        The pruned module (same train/eval mode as ``model``) and its recipe.
    """
    channels = space.channels(genome)
    if scores is None:
        scores = rank_channels(model, space, importance=importance, grads=grads,
                               example_inputs=example_inputs)
    else:
        scores = _check_scores(scores, space)
    kept = {g.name: keep_top_periodic(scores[g.name], c, g.multiple)
            for g, c in zip(space.groups, channels)}
    module = prune_to_kept(model, kept, input_shape=space.input_shape)
    recipe = make_recipe(model, space, genome, kept, importance=importance,
                         base_checkpoint=base_checkpoint)
    return PrunedNetwork(module=module, recipe=recipe)


def make_recipe(model: nn.Module, space: GenomeSpace, genome: Sequence[int],
                kept: Mapping[str, Sequence[int]], *, importance: str,
                base_checkpoint: str | None = None) -> dict[str, Any]:
    """The replayable recipe of keeping ``kept[group]`` channels of ``model`` (the base).

    ``importance`` only records how the channels were chosen (methods that choose channels
    themselves, such as HALP, name their own criterion).
    """
    return {
        "format": RECIPE_FORMAT,
        "model": space.model_name,
        "base_arch": arch_config(model, space.model_name),
        "base_checkpoint": str(base_checkpoint) if base_checkpoint else None,
        "base_sha256": state_dict_sha256(model),
        "granularity": space.granularity,
        "importance": importance,
        "input_shape": list(space.input_shape),
        "groups": space.names,
        "genome": [int(v) for v in space.validate(genome)],
        "channels": [int(c) for c in space.channels(genome)],
        "kept": {name: [int(i) for i in idx] for name, idx in kept.items()},
    }


def channel_producers(model: nn.Module, space: GenomeSpace) -> dict[str, list[Producer]]:
    """Group name -> the convs and BNs writing that group's channels (genome order)."""
    producers = _producers(model, space)
    if list(producers) != space.names:
        raise ValueError(f"the model's groups {list(producers)} do not match the genome space "
                         f"{space.names} (was the space built for another model?)")
    return producers


def _check_scores(scores: Mapping[str, torch.Tensor], space: GenomeSpace
                  ) -> dict[str, torch.Tensor]:
    missing = [g.name for g in space.groups if g.name not in scores]
    if missing:
        raise ValueError(f"scores must cover every group of the space; missing {missing}")
    out = {}
    for g in space.groups:
        values = torch.as_tensor(scores[g.name]).detach().to("cpu", torch.float64).flatten()
        if values.numel() != g.full_width:
            raise ValueError(f"scores of group '{g.name}' hold {values.numel()} values, "
                             f"expected {g.full_width}")
        if not torch.isfinite(values).all():
            raise ValueError(f"scores of group '{g.name}' are not all finite")
        out[g.name] = values
    return out


def _check_recipe(recipe: Mapping[str, Any]) -> None:
    missing = [k for k in ("format", "model", "base_arch", "groups", "kept") if k not in recipe]
    if missing:
        raise ValueError(f"recipe lacks the keys {missing}")
    if recipe["format"] != RECIPE_FORMAT:
        raise ValueError(f"recipe format {recipe['format']} is not supported (expected "
                         f"{RECIPE_FORMAT})")


def rebuild(base_model: nn.Module, recipe: Mapping[str, Any], *, check_base: bool = True
            ) -> nn.Module:
    """Replay ``recipe`` on ``base_model``: the same module :func:`apply_genome` produced.

    Raises:
        ValueError: ``check_base`` is set and ``base_model``'s weights differ from the recipe's
            base (``base_sha256``), or the recipe is malformed.
    """
    _check_recipe(recipe)
    if check_base and recipe.get("base_sha256"):
        actual = state_dict_sha256(base_model)
        if actual != recipe["base_sha256"]:
            raise ValueError(f"base model weights (sha256 {actual[:12]}) differ from the "
                             f"recipe's base ({recipe['base_sha256'][:12]}); load "
                             f"{recipe.get('base_checkpoint') or 'the same base weights'}")
    kept = {name: [int(i) for i in recipe["kept"][name]] for name in recipe["groups"]}
    # Recipes written before input shapes were recorded were traced at 32x32.
    return prune_to_kept(base_model, kept,
                         input_shape=tuple(recipe.get("input_shape", (3, 32, 32))))


def load_pruned(recipe: Mapping[str, Any], state_dict: Mapping[str, Any]) -> nn.Module:
    """Rebuild a pruned (and possibly fine-tuned) network from its recipe and saved weights.

    The base architecture is rebuilt from ``recipe['base_arch']`` (no base weights needed),
    pruned to the recipe's channels, and ``state_dict`` (torch tensors or numpy arrays) is loaded
    strictly into it. Returns the module in eval mode.
    """
    _check_recipe(recipe)
    base = build_from_arch(recipe["base_arch"])
    module = rebuild(base, recipe, check_base=False)
    tensors = {k: torch.as_tensor(np.asarray(v)) if not isinstance(v, torch.Tensor) else v
               for k, v in state_dict.items()}
    module.load_state_dict(tensors)
    return module.eval()


def save_recipe(recipe: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``recipe`` as JSON atomically (temp file + rename); returns the path."""
    return atomic_write_text(path, json.dumps(recipe, indent=1))


def load_recipe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a recipe written by :func:`save_recipe`."""
    with open(path) as fh:
        recipe = json.load(fh)
    _check_recipe(recipe)
    return recipe
