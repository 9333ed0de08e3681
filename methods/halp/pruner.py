"""HALP: latency-saliency knapsack pruning while fine-tuning (Shen et al., NeurIPS 2022).

One run prunes the base network to one latency target:

1. Train with SGD. Every iteration, the first-order Taylor importance of every channel of every
   group (``|sum over the group's BNs (gamma dL/dgamma + beta dL/dbeta)|``, the pruning core's
   ``taylor`` criterion) is accumulated from the iteration's own gradients.
2. Every ``interval`` iterations, ``pruning_steps`` times: the step's latency budget comes from
   the schedule (exponential in log-space from the dense latency to the target). Inside every
   group the active channels are sorted by mean importance and bundled into granules of
   ``granularity`` channels. A granule's latency cost is the drop in the calibrated table's
   latency when one more granule of its group is removed in importance order, the other groups
   at their current widths. The knapsack (:func:`prefix_knapsack`) keeps the most valuable
   prefix of every group within the budget; the rest is masked (BN scale and shift zeroed and
   held at zero), never to return.
3. Because the per-group deltas ignore interactions between groups (a block conv's cost depends
   on its stage's width), the chosen genome's exact table latency is checked, and granules with
   the least importance per ms saved are dropped until it meets the step's budget.
4. ``finetune_steps`` more iterations with the final mask, then the masked channels are removed
   physically (:func:`~prunesearch.methods.pruning.prune_to_kept`): the same function, smaller.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from prunesearch.methods.halp.knapsack import prefix_knapsack, quantise_costs
from prunesearch.methods.halp.settings import HALPSettings
from prunesearch.methods.models.training import param_groups
from prunesearch.methods.pruning.layers import BATCH_NORMS

__all__ = ["HALPResult", "prune_to_latency", "step_budgets", "target_latency_ms"]

#: The criterion name recorded in HALP recipes.
HALP_IMPORTANCE = "halp-taylor"


@dataclasses.dataclass
class HALPResult:
    """One HALP network.

    Attributes:
        target_ms: the latency target (table latency, ms).
        genome: granules kept per group.
        kept: kept channel indices (of the base network) per group.
        module: the physically pruned, trained network (eval mode, CPU).
        recipe: its replayable recipe (see :mod:`prunesearch.methods.pruning.apply`).
        latency_ms: its calibrated table latency.
        val_error: its validation error.
        history: one dict per pruning step (step, budget_ms, latency_ms, genome).
        wall_s: seconds the run took.
    """

    target_ms: float
    genome: tuple[int, ...]
    kept: dict[str, list[int]]
    module: nn.Module
    recipe: dict[str, Any]
    latency_ms: float
    val_error: float
    history: list[dict[str, Any]]
    wall_s: float


def target_latency_ms(target: float, unit: str, dense_ms: float) -> float:
    """A configured target in ms: ``fraction`` of the dense table latency, or ``ms`` as is."""
    if unit == "fraction":
        return float(target) * float(dense_ms)
    if unit == "ms":
        return float(target)
    raise ValueError(f"target unit must be 'fraction' or 'ms', got {unit!r}")


def step_budgets(dense_ms: float, target_ms: float, steps: int, schedule: str) -> list[float]:
    """Latency budget of pruning steps 1..``steps``; the last one is ``target_ms``.

    ``exp``: geometric interpolation (evenly spaced in log latency, the official code's
    exponential schedule), so early steps remove more ms than late ones; ``linear``: evenly
    spaced in ms.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not 0 < target_ms <= dense_ms:
        raise ValueError(f"target {target_ms} ms must lie in (0, dense {dense_ms} ms]")
    fractions = [(k + 1) / steps for k in range(steps)]
    if schedule == "exp":
        ratio = target_ms / dense_ms
        out = [dense_ms * ratio ** f for f in fractions]
    elif schedule == "linear":
        out = [dense_ms + (target_ms - dense_ms) * f for f in fractions]
    else:
        raise ValueError(f"schedule must be 'exp' or 'linear', got {schedule!r}")
    out[-1] = float(target_ms)
    return out


class _Masks:
    """Active channels of every group, applied to the group's BN producers."""

    def __init__(self, producers: Mapping[str, Sequence[tuple[nn.Module, Any]]],
                 widths: Mapping[str, int]) -> None:
        self.active = {name: torch.ones(w, dtype=torch.bool) for name, w in widths.items()}
        self.bns: dict[str, list[tuple[nn.Module, torch.Tensor]]] = {}
        for name, members in producers.items():
            bns = []
            for module, index in members:
                if isinstance(module, BATCH_NORMS) and module.affine:
                    idx = (torch.arange(widths[name]) if index is None
                           else torch.as_tensor(list(index), dtype=torch.int64))
                    bns.append((module, idx))
            if not bns:
                raise ValueError(f"HALP masks channels through BatchNorm, but group '{name}' "
                                 "has no affine BN producer")
            self.bns[name] = bns

    @torch.no_grad()
    def apply(self, *, grads: bool = False) -> None:
        """Zero the masked channels' BN scale and shift (or their gradients)."""
        for name, bns in self.bns.items():
            off = ~self.active[name]
            if not off.any():
                continue
            for bn, idx in bns:
                channels = idx[off].to(bn.weight.device)
                for p in (bn.weight, bn.bias):
                    if grads:
                        if p.grad is not None:
                            p.grad[channels] = 0.0
                    else:
                        p[channels] = 0.0


def _batches(dataset: Any, batch_size: int, generator: torch.Generator
             ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    while True:
        produced = False
        for batch in dataset.batches(batch_size, shuffle=True, generator=generator,
                                     drop_last=True):
            produced = True
            yield batch
        if not produced:
            raise ValueError(f"the training set ({len(dataset)} images) is smaller than one "
                             f"batch of {batch_size}")


def prune_to_latency(base_model: nn.Module, space: Any, latency_fn: Callable[[np.ndarray], np.ndarray],
                     train: Any, val: Any, *, target_ms: float, settings: HALPSettings,
                     seed: int, augment: bool = True, device: str | torch.device = "cpu",
                     base_checkpoint: str | None = None,
                     log: Callable[[str], None] | None = None) -> HALPResult:
    """Run HALP to one latency target (see the module docstring).

    Args:
        base_model: the trained, unpruned network (not modified).
        space: its genome space (``genome_space``).
        latency_fn: ``(n, genes) int array -> (n,)`` calibrated table latency in ms (e.g.
            ``lambda g: cost.evaluate(g)["latency_ms"]``).
        train: training ``ImageTensorDataset``; val: validation one.
        target_ms: the table-latency target.
        settings: the ``halp`` section.
        seed: seeds data order, augmentation and initial state.
        augment: random crop + flip (only where the images allow it; the caller decides).
        device: where training runs.
        base_checkpoint: recorded in the recipe.
        log: receives one line per pruning step.

    Raises:
        ValueError: ``target_ms`` is below the latency of the smallest genome (one granule per
            group) or above the dense latency.
    """
    from prunesearch.methods.evaluator import evaluate_error
    from prunesearch.methods.pruning import channel_producers, make_recipe, prune_to_kept
    from prunesearch.methods.pruning.importance import group_scores

    start = time.perf_counter()
    s = settings
    device = torch.device(device)
    upper = np.asarray(space.upper(), dtype=np.int64)
    lower = np.asarray(space.lower(), dtype=np.int64)
    dense_ms = float(latency_fn(upper[None, :])[0])
    floor_ms = float(latency_fn(lower[None, :])[0])
    if target_ms < floor_ms:
        raise ValueError(f"latency target {target_ms:.4f} ms is below the smallest network's "
                         f"table latency ({floor_ms:.4f} ms, one granule per group)")
    if target_ms > dense_ms:
        raise ValueError(f"latency target {target_ms:.4f} ms is above the dense table latency "
                         f"({dense_ms:.4f} ms): nothing to prune")
    budgets = step_budgets(dense_ms, target_ms, s.pruning_steps, s.schedule)

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = copy.deepcopy(base_model).to(device).train()
    producers = channel_producers(model, space)
    widths = {g.name: g.full_width for g in space.groups}
    masks = _Masks(producers, widths)
    gran = int(space.granularity)
    optimizer = torch.optim.SGD(param_groups(model, s.weight_decay), lr=s.lr,
                                momentum=s.momentum)
    prune_iters = s.pruning_steps * s.interval
    total = prune_iters + s.finetune_steps
    scores = {name: torch.zeros(w, dtype=torch.float64) for name, w in widths.items()}
    counted = 0
    genome = upper.copy()
    history: list[dict[str, Any]] = []
    data = _batches(train, s.batch_size, generator)

    from prunesearch.methods.data import augment_batch

    for it in range(total):
        if s.lr_schedule == "cosine":
            lr = s.lr * 0.5 * (1.0 + math.cos(math.pi * it / total))
            for group in optimizer.param_groups:
                group["lr"] = lr
        x, y = next(data)
        if augment:
            x = augment_batch(x, generator=generator)
        x, y = x.to(device), y.to(device)
        loss = F.cross_entropy(model(x), y)
        if not math.isfinite(float(loss.detach())):
            raise FloatingPointError(f"HALP training loss is {float(loss)} at iteration {it}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if it < prune_iters:
            grads = {p: p.grad for p in model.parameters() if p.grad is not None}
            for name, width in widths.items():
                scores[name] += group_scores(producers[name], width, "taylor", grads)
            counted += 1
        masks.apply(grads=True)
        optimizer.step()
        masks.apply()
        if it < prune_iters and (it + 1) % s.interval == 0:
            step = (it + 1) // s.interval
            mean = {name: v / max(counted, 1) for name, v in scores.items()}
            genome = _prune_step(space, genome, masks, mean, latency_fn, budgets[step - 1],
                                 gran, s.latency_units)
            latency = float(latency_fn(genome[None, :])[0])
            history.append({"step": step, "budget_ms": budgets[step - 1], "latency_ms": latency,
                            "genome": [int(v) for v in genome]})
            if log is not None:
                log(f"HALP step {step}/{s.pruning_steps}: budget {budgets[step - 1]:.4f} ms, "
                    f"table {latency:.4f} ms, loss {float(loss.detach()):.3f}")
            for total_score in scores.values():
                total_score.zero_()
            counted = 0

    model = model.cpu().eval()
    kept = {name: [int(i) for i in torch.nonzero(masks.active[name]).flatten()]
            for name in space.names}
    genome_t = space.genome_for_channels([len(kept[name]) for name in space.names])
    module = prune_to_kept(model, kept, input_shape=space.input_shape).eval()
    recipe = make_recipe(base_model, space, genome_t, kept, importance=HALP_IMPORTANCE,
                         base_checkpoint=base_checkpoint)
    error = evaluate_error(module, val)
    return HALPResult(target_ms=float(target_ms), genome=tuple(int(v) for v in genome_t),
                      kept=kept, module=module, recipe=recipe,
                      latency_ms=float(latency_fn(np.asarray(genome_t)[None, :])[0]),
                      val_error=float(error), history=history,
                      wall_s=time.perf_counter() - start)


def _prune_step(space: Any, genome: np.ndarray, masks: _Masks, scores: Mapping[str, torch.Tensor],
                latency_fn: Callable[[np.ndarray], np.ndarray], budget_ms: float, gran: int,
                units: int) -> np.ndarray:
    """One knapsack step: new genome (granules per group), masks updated in place."""
    names = space.names
    orders, granule_values = [], []
    for name, count in zip(names, genome):
        active = torch.nonzero(masks.active[name]).flatten()
        # Most important first; stable on the negated scores so ties keep index order.
        ranked = active[torch.sort(-scores[name][active], stable=True).indices]
        orders.append(ranked)
        chunks = [float(scores[name][ranked[i:i + gran]].sum())
                  for i in range(0, len(ranked), gran)]
        if len(chunks) != int(count):
            raise RuntimeError(f"group '{name}' has {len(ranked)} active channels, not "
                               f"{int(count)} granules of {gran}")
        granule_values.append(np.asarray(chunks))
    # Latency of the network with one group at k granules, the others as they are now.
    trial = []
    for layer, count in enumerate(genome):
        for k in range(1, int(count) + 1):
            g = genome.copy()
            g[layer] = k
            trial.append(g)
    lat = np.asarray(latency_fn(np.stack(trial)), dtype=np.float64)
    current_ms = float(latency_fn(genome[None, :])[0])
    costs_ms, offset, at_one = [], 0, 0.0
    for count in genome:
        per_k = lat[offset:offset + int(count)]
        offset += int(count)
        costs_ms.append(np.diff(per_k, prepend=per_k[0]))  # granule 1 costs 0: always kept
        at_one += float(per_k[-1] - per_k[0])
    # predicted(k) = current + sum_l (lat_l(k_l) - lat_l(G_l)) <= budget
    room_ms = budget_ms - current_ms + at_one
    int_costs, capacity, _ = quantise_costs(costs_ms, room_ms, units)
    counts = np.asarray(prefix_knapsack(granule_values, int_costs, capacity), dtype=np.int64)
    counts = np.minimum(counts, genome)
    counts = _repair(counts, granule_values, latency_fn, budget_ms)
    for layer, (name, ranked) in enumerate(zip(names, orders)):
        keep = min(int(counts[layer]) * gran, space.groups[layer].full_width)
        active = torch.zeros_like(masks.active[name])
        active[ranked[:keep]] = True
        masks.active[name] = active
    masks.apply()
    return counts


def _repair(counts: np.ndarray, granule_values: Sequence[np.ndarray],
            latency_fn: Callable[[np.ndarray], np.ndarray], budget_ms: float) -> np.ndarray:
    """Drop the granules with the least importance per ms saved until the exact table latency
    meets ``budget_ms`` (or every group is down to one granule)."""
    counts = counts.copy()
    current = float(latency_fn(counts[None, :])[0])
    while current > budget_ms:
        layers = [i for i, k in enumerate(counts) if k > 1]
        if not layers:
            break
        trial = np.repeat(counts[None, :], len(layers), axis=0)
        for row, layer in enumerate(layers):
            trial[row, layer] -= 1
        lat = np.asarray(latency_fn(trial), dtype=np.float64)
        saved = current - lat
        values = np.array([granule_values[l][counts[l] - 1] for l in layers])
        if np.any(saved > 0):
            ratio = np.where(saved > 0, values / np.maximum(saved, 1e-12), np.inf)
            row = int(np.argmin(ratio))
        else:
            row = int(np.argmax(saved))
        counts[layers[row]] -= 1
        current = float(lat[row])
    return counts
