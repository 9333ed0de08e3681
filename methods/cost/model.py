"""Exact, vectorised cost of many genomes: MACs, parameters, table latency and memory.

A genome's layer specs come from the pruning code (``genome -> list[LayerSpec]``). Building
those lists for every candidate the search looks at (HAMP ranks thousands of local-search
moves per generation) costs about a millisecond each. But every layer's shape depends on at
most a couple of genes (a conv on the group feeding it and on its own group), so the cost of a
genome *factorises*: total MACs, parameters and table latency are sums of per-layer terms, and
peak activation is a max of per-layer terms, each a function of a few genes.

:class:`CostModel` finds which genes each layer depends on (by changing one gene at a time),
then enumerates every value combination of each small gene set once, through the real spec
function, so its tables hold the exact per-layer figures of every reachable genome. Evaluating
n genomes is then a handful of numpy gathers. The same enumeration yields every layer shape the
search can ever produce, which is what the latency table must hold before the search starts (so
nothing is timed while evaluators load the device).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from prunesearch.methods.cost.counts import (
    MB,
    activation_term,
    activation_terms,
    dtype_bytes,
    skip_sources,
    spec_macs,
    spec_params,
)
from prunesearch.methods.cost.specs import LayerSpec
from prunesearch.methods.cost.table import LatencyTable
from prunesearch.methods.errors import PrunesearchError

__all__ = ["CostModel", "NotFactorisable", "PerGenomeCostModel"]

SpecFn = Callable[[Sequence[int]], Sequence[LayerSpec]]


class NotFactorisable(PrunesearchError, ValueError):
    """The spec function's layers do not depend on small gene sets (use the per-genome path).

    Internal: caught where the cost model is chosen.
    """

    exit_code = 1


class _Factor:
    """Per-layer terms of the layers that depend on one gene set, for every value combination."""

    def __init__(self, genes: tuple[int, ...], lower: np.ndarray, sizes: tuple[int, ...],
                 layers: list[int]) -> None:
        self.genes = genes
        self.lower = lower  # lower bounds of these genes (the index origin)
        self.sizes = sizes
        self.layers = layers
        self.key_index = np.zeros((*sizes, len(layers)), dtype=np.int64)
        self.macs = np.zeros(sizes, dtype=np.int64)
        self.params = np.zeros(sizes, dtype=np.int64)
        self.act = np.zeros(sizes, dtype=np.int64)
        self.latency = np.zeros(sizes, dtype=np.float64)

    def index(self, genomes: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(genomes[:, g] - lo for g, lo in zip(self.genes, self.lower))


class CostModel:
    """Exact per-genome costs from a spec function, vectorised over genomes.

    Args:
        spec_fn: ``genome -> list[LayerSpec]`` at the deployment batch size. Must give the
            same number of layers for every genome (widths change, layers do not vanish).
        lower: Inclusive lower bounds of the genome.
        upper: Inclusive upper bounds (the dense genome).
        dtype: Deployment dtype name (bytes per element for memory).
        max_combinations: Largest value product of one layer's gene set that is enumerated.

    Raises:
        NotFactorisable: layer count varies, or a layer depends on too many genes.
    """

    def __init__(self, *, spec_fn: SpecFn, lower: Sequence[int], upper: Sequence[int],
                 dtype: str = "float32", max_combinations: int = 4096) -> None:
        self.lower = np.asarray(lower, dtype=np.int64)
        self.upper = np.asarray(upper, dtype=np.int64)
        if self.lower.shape != self.upper.shape or self.lower.ndim != 1:
            raise ValueError(f"lower {self.lower.shape} and upper {self.upper.shape} must be "
                             "equal 1-D shapes")
        if np.any(self.lower > self.upper) or np.any(self.lower < 0):
            raise ValueError("lower must satisfy 0 <= lower <= upper for every gene")
        if max_combinations < 1:
            raise ValueError(f"max_combinations={max_combinations} must be >= 1")
        self.dtype = dtype
        self.dtype_bytes = dtype_bytes(dtype)
        self.table: LatencyTable | None = None

        dense = [int(v) for v in self.upper]
        base = list(spec_fn(dense))
        if not base:
            raise ValueError("spec_fn returned no layers for the dense genome")
        self.batch = base[0].batch
        n_layers = len(base)
        # Which add's skip tensor is alive at each layer depends on the op sequence only.
        skips = skip_sources(base)
        base_act = activation_terms(base)
        deps: list[set[int]] = [set() for _ in range(n_layers)]
        for g in range(len(dense)):
            if self.lower[g] == self.upper[g]:
                continue
            genome = list(dense)
            genome[g] = int(self.lower[g])
            specs = list(spec_fn(genome))
            if len(specs) != n_layers:
                raise NotFactorisable(
                    f"gene {g} at its lower bound changes the layer count "
                    f"({n_layers} -> {len(specs)})"
                )
            if [s.op for s in specs] != [s.op for s in base]:
                raise NotFactorisable(f"gene {g} at its lower bound changes the op sequence")
            act = activation_terms(specs)
            for i in range(n_layers):
                if specs[i] != base[i] or act[i] != base_act[i]:
                    deps[i].add(g)

        by_genes: dict[tuple[int, ...], list[int]] = {}
        for i, d in enumerate(deps):
            by_genes.setdefault(tuple(sorted(d)), []).append(i)

        self._key_ids: dict[str, int] = {}
        self.specs: list[LayerSpec] = []  # every distinct reachable layer shape
        self.factors: list[_Factor] = []
        for genes, layers in sorted(by_genes.items()):
            sizes = tuple(int(self.upper[g] - self.lower[g] + 1) for g in genes)
            if int(np.prod(sizes, dtype=np.int64)) > max_combinations:
                raise NotFactorisable(
                    f"layers {layers[:3]}... depend on genes {genes} with {int(np.prod(sizes))} "
                    f"value combinations (> max_combinations={max_combinations})"
                )
            factor = _Factor(genes, self.lower[list(genes)], sizes, layers)
            for combo in itertools.product(*(range(s) for s in sizes)):
                genome = list(dense)
                for g, offset in zip(genes, combo):
                    genome[g] = int(self.lower[g] + offset)
                specs = base if not genes else list(spec_fn(genome))
                if len(specs) != n_layers:
                    raise NotFactorisable(f"genome {genome} changes the layer count")
                factor.key_index[combo] = [self._key_id(specs[i]) for i in layers]
                factor.macs[combo] = sum(spec_macs(specs[i]) for i in layers)
                factor.params[combo] = sum(spec_params(specs[i]) for i in layers)
                factor.act[combo] = max(activation_term(specs, i, skips[i]) for i in layers)
            self.factors.append(factor)
        self.n_layers = n_layers

    def _key_id(self, spec: LayerSpec) -> int:
        key = spec.key()
        idx = self._key_ids.get(key)
        if idx is None:
            idx = self._key_ids[key] = len(self.specs)
            self.specs.append(spec)
        return idx

    # ------------------------------------------------------------------ latency
    def bind(self, table: LatencyTable) -> None:
        """Attach a latency table holding every reachable shape (see :attr:`specs`).

        Raises:
            MissingLatencyEntry: a reachable shape has no entry.
        """
        values = np.array([table.entry(spec.key()) for spec in self.specs], dtype=np.float64)
        for factor in self.factors:
            # Summed in layer order, the same order LatencyTable.raw_ms uses within a factor.
            factor.latency = values[factor.key_index].sum(axis=-1)
        self.table = table

    # ------------------------------------------------------------------ evaluation
    def _check(self, genomes: Any) -> np.ndarray:
        x = np.asarray(genomes, dtype=np.int64)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.lower.size:
            raise ValueError(f"genomes must have shape (n, {self.lower.size}), "
                             f"got {np.shape(genomes)}")
        if np.any(x < self.lower) or np.any(x > self.upper):
            raise ValueError("a genome lies outside [lower, upper]")
        return x

    def evaluate(self, genomes: Any) -> dict[str, np.ndarray]:
        """Costs of n genomes (shape (n, n_genes), or one genome).

        Returns:
            Arrays of length n: ``macs`` (MACs per image), ``params``, ``param_bytes``,
            ``peak_activation_bytes``, ``memory_mb`` and, once a table is bound,
            ``latency_raw_ms`` and ``latency_ms`` (calibrated).
        """
        x = self._check(genomes)
        n = x.shape[0]
        macs = np.zeros(n, dtype=np.int64)
        params = np.zeros(n, dtype=np.int64)
        act = np.zeros(n, dtype=np.int64)
        raw = np.zeros(n, dtype=np.float64)
        for factor in self.factors:
            idx = factor.index(x)
            macs += factor.macs[idx]
            params += factor.params[idx]
            np.maximum(act, factor.act[idx], out=act)
            raw += factor.latency[idx]
        out = {
            "macs": macs // self.batch,
            "params": params,
            "param_bytes": params * self.dtype_bytes,
            "peak_activation_bytes": act * self.dtype_bytes,
        }
        out["memory_mb"] = (out["param_bytes"] + out["peak_activation_bytes"]) / MB
        if self.table is not None:
            out["latency_raw_ms"] = raw
            out["latency_ms"] = self.table.scale * raw + self.table.offset_ms
        return out


class PerGenomeCostModel:
    """The same figures as :class:`CostModel`, computed genome by genome (memoised).

    For spaces that do not factorise (e.g. torchvision models whose specs come from tracing a
    pruned copy): slower, and layer shapes the table lacks are timed on first sight when the
    table has a timing device (:class:`~prunesearch.methods.cost.table.LatencyTable`), else an
    error.

    Args:
        spec_fn: Picklable ``genome -> list[LayerSpec]`` at the deployment batch size.
        lower: Inclusive lower bounds of the genome.
        upper: Inclusive upper bounds (the dense genome).
        dtype: Deployment dtype name.
    """

    def __init__(self, *, spec_fn: SpecFn, lower: Sequence[int], upper: Sequence[int],
                 dtype: str = "float32") -> None:
        self.spec_fn = spec_fn
        self.lower = np.asarray(lower, dtype=np.int64)
        self.upper = np.asarray(upper, dtype=np.int64)
        self.dtype = dtype
        self.dtype_bytes = dtype_bytes(dtype)
        self.table: LatencyTable | None = None
        dense = list(spec_fn([int(v) for v in self.upper]))
        self.batch = dense[0].batch
        self.specs: list[LayerSpec] = dense  # shapes known up front (the dense network)
        self._memo: dict[tuple[int, ...], tuple[int, int, int, list[LayerSpec]]] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_memo"] = {}  # recomputed where needed; keeps the payload light
        return state

    def bind(self, table: LatencyTable) -> None:
        """Attach a latency table (shapes it lacks are timed or refused on first use)."""
        self.table = table

    def _entry(self, genome: tuple[int, ...]) -> tuple[int, int, int, list[LayerSpec]]:
        hit = self._memo.get(genome)
        if hit is None:
            specs = list(self.spec_fn(list(genome)))
            hit = (sum(spec_macs(s) for s in specs) // self.batch,
                   sum(spec_params(s) for s in specs), max(activation_terms(specs)), specs)
            self._memo[genome] = hit
        return hit

    def evaluate(self, genomes: Any) -> dict[str, np.ndarray]:
        """Same keys as :meth:`CostModel.evaluate`."""
        x = np.atleast_2d(np.asarray(genomes, dtype=np.int64))
        if x.ndim != 2 or x.shape[1] != self.lower.size:
            raise ValueError(f"genomes must have shape (n, {self.lower.size}), "
                             f"got {np.shape(genomes)}")
        if np.any(x < self.lower) or np.any(x > self.upper):
            raise ValueError("a genome lies outside [lower, upper]")
        rows = [self._entry(tuple(int(v) for v in g)) for g in x]
        params = np.array([r[1] for r in rows], dtype=np.int64)
        act = np.array([r[2] for r in rows], dtype=np.int64)
        out = {
            "macs": np.array([r[0] for r in rows], dtype=np.int64),
            "params": params,
            "param_bytes": params * self.dtype_bytes,
            "peak_activation_bytes": act * self.dtype_bytes,
        }
        out["memory_mb"] = (out["param_bytes"] + out["peak_activation_bytes"]) / MB
        if self.table is not None:
            raw = []
            for r in rows:
                if self.table.device is not None:
                    self.table.measure_missing(r[3])
                raw.append(self.table.raw_ms(r[3]))
            out["latency_raw_ms"] = np.asarray(raw, dtype=np.float64)
            out["latency_ms"] = self.table.scale * out["latency_raw_ms"] + self.table.offset_ms
        return out
