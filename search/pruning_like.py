"""Pruning-like benchmark problems: CIFAR-ResNet-shaped genomes with a hardware cost model.

Each problem is a family of *instances*: an instance seed draws the network's layer
sensitivities, interaction strengths, noise and hardware tile, so that search settings can be
tuned on some instances (seeds) and reported on others. Everything is pure numpy.

The genome is the one the cluster searches for a CIFAR ResNet with ``n`` blocks per stage:
``3n`` block (inner) widths then the 3 stage (residual) widths, in granules of 4 channels
(``1 .. full / 4``). Objectives (minimised):

* **error** (expensive): ``e_max - (e_max - e0) * exp(-damage)``; ``damage`` sums a per-gene
  sensitivity times ``(1 - keep)^p``, an interaction between neighbouring layers (consecutive
  blocks of one stage, and each block with its stage width: pruning both costs more than the
  sum), and a collapse penalty below a keep ratio of ~0.2. Plus seeded Gaussian *evaluation
  noise* (the spread a short fine-tune leaves: ``noise`` points of error, drawn once per genome
  and instance, so a re-evaluation repeats it).
* **latency_ms** (cheap, exact): per conv ``overhead + k * ceil(c_in / tile) * ceil(c_out /
  tile) * hw^2``, plus per-channel-tile elementwise costs: latency moves in hardware steps of
  ``tile`` channels (8 or 16 per instance), not smoothly with MACs.
* **memory_mb** (cheap, 3-objective problems): parameter bytes + peak live activations at batch 1.

The reported hypervolume reference (``report_ref``) follows ARCHITECTURE.md for pruning
searches: error at dense error + 0.10, latency and memory of the dense network. It is *not* the
problem's ``hv_ref``: the cluster driver gives HAMP none either, so the benchmark searches see
the problem as a real search does.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from prunesearch.search.problems import GenomeProblem

__all__ = ["PRUNING_LIKE", "PruningLikeProblem", "PruningLikeSpec", "pruning_like_problem"]

GRANULARITY = 4
STAGE_HW = (32, 16, 8)


@dataclasses.dataclass(frozen=True)
class PruningLikeSpec:
    """One family of pruning-like problems.

    Attributes:
        name: Benchmark name.
        blocks_per_stage: ``n``; the genome has ``3n + 3`` genes.
        n_obj: 2 (error, latency) or 3 (error, latency, memory).
        noise: Standard deviation of the evaluation noise on the error (0.002 = 0.2 points).
        width_multiplier: Channels of stage s are ``(16, 32, 64)[s] * width_multiplier``.
    """

    name: str
    blocks_per_stage: int
    n_obj: int
    noise: float
    width_multiplier: int = 1


#: The benchmark's problem families (genes: 3n + 3).
PRUNING_LIKE: dict[str, PruningLikeSpec] = {s.name: s for s in (
    PruningLikeSpec("pl-r38-2obj", 6, 2, 0.003, 2),  # 21 genes, twice as wide
    PruningLikeSpec("pl-r56-2obj", 9, 2, 0.002),     # 30 genes
    PruningLikeSpec("pl-r56-3obj", 9, 3, 0.005),     # 30 genes, the noisiest
    PruningLikeSpec("pl-r110-2obj", 18, 2, 0.004),   # 57 genes
    PruningLikeSpec("pl-r116-3obj", 19, 3, 0.003, 2),  # 60 genes, twice as wide
)}


class PruningLikeProblem(GenomeProblem):
    """One instance of a :class:`PruningLikeSpec` (see the module docstring).

    Args:
        spec: The problem family.
        instance: Instance seed (sensitivities, interactions, hardware tile).
    """

    def __init__(self, spec: PruningLikeSpec, instance: int) -> None:
        self.spec, self.instance = spec, int(instance)
        n = spec.blocks_per_stage
        rng = np.random.default_rng([7919, int(instance), n, spec.n_obj])
        stage_full = np.array([16, 32, 64]) * spec.width_multiplier
        self.full = np.concatenate([np.repeat(stage_full, n), stage_full]).astype(float)
        self.n_blocks = 3 * n
        n_var = 3 * n + 3
        # Sensitivities: a lognormal spread; the first block of a stage and the stage widths
        # (which every block and the residual adds share) hurt more; later stages a bit less.
        position = np.tile(np.arange(n), 3)
        sens = rng.lognormal(-2.3, 0.7, self.n_blocks)
        sens *= np.where(position == 0, 2.0, 1.0) * np.repeat([1.3, 1.0, 0.8], n)
        sens *= 0.3 / n  # total damage of the blocks does not grow with depth
        stage_sens = rng.lognormal(-3.5, 0.3, 3)
        self.sensitivity = np.concatenate([sens, stage_sens])
        self.power = rng.uniform(1.5, 2.5, n_var)
        # Interactions: consecutive blocks of a stage, and every block with its stage width.
        self.pair_coef = rng.lognormal(-2.5, 0.6, self.n_blocks) * (0.3 / n)
        self.pair_coef[position == n - 1] = 0.0  # no pair across a stage boundary
        self.stage_coef = rng.lognormal(-2.0, 0.5, self.n_blocks) * (0.3 / n)
        self.e0 = float(rng.uniform(0.06, 0.09))
        self.e_max = 0.90
        self.tile = int(rng.choice([8, 16]))
        self.conv_k = 1.0e-6 * rng.uniform(0.8, 1.2)
        self.overhead = 0.004 * rng.uniform(0.8, 1.2)
        upper = np.ceil(self.full / GRANULARITY).astype(int)
        super().__init__(np.ones(n_var, dtype=int), upper, n_obj=spec.n_obj,
                         cheap_objectives=tuple(range(1, spec.n_obj)), cheap_fn=self._cheap,
                         expensive_fn=self._errors)
        self.dense_objectives = self.evaluate_full(upper[None, :])[0]
        self.report_ref = self.dense_objectives.copy()
        self.report_ref[0] = self.e0 + 0.10

    @property
    def name(self) -> str:
        """``<family>#<instance>``."""
        return f"{self.spec.name}#{self.instance}"

    # ------------------------------------------------------------------------ objectives
    def channels(self, X: np.ndarray) -> np.ndarray:
        """Kept channels per gene of integer genomes ``X`` (n, n_var)."""
        X = np.atleast_2d(np.asarray(X, dtype=float))
        return np.minimum(X * GRANULARITY, self.full)

    def _damage(self, X: np.ndarray) -> np.ndarray:
        keep = self.channels(X) / self.full
        loss = 1.0 - keep
        n = self.spec.blocks_per_stage
        damage = np.sum(self.sensitivity * loss ** self.power, axis=1)
        blocks = loss[:, : self.n_blocks]
        nxt = np.concatenate([blocks[:, 1:], np.zeros((len(X), 1))], axis=1)
        damage += np.sum(self.pair_coef * blocks * nxt, axis=1)
        stage_of_block = np.repeat(np.arange(3), n)
        damage += np.sum(self.stage_coef * blocks * loss[:, self.n_blocks + stage_of_block],
                         axis=1)
        damage += 3.0 * np.sum(np.maximum(0.0, 0.2 - keep) ** 2, axis=1)
        return damage

    def noiseless_error(self, X: np.ndarray) -> np.ndarray:
        """Error without the evaluation noise."""
        return self.e_max - (self.e_max - self.e0) * np.exp(-self._damage(X))

    def _noise(self, x: np.ndarray) -> float:
        digest = hashlib.blake2b(np.asarray(x, dtype=np.int64).tobytes()
                                 + self.instance.to_bytes(8, "little", signed=True),
                                 digest_size=8).digest()
        return float(np.random.default_rng(int.from_bytes(digest, "little")).normal())

    def _errors(self, X: np.ndarray) -> np.ndarray:
        X = np.atleast_2d(np.asarray(X, dtype=int))
        noise = np.array([self._noise(x) for x in X]) * self.spec.noise
        return np.clip(self.noiseless_error(X) + noise, 0.0, 1.0)[:, None]

    def _cheap(self, X: np.ndarray) -> np.ndarray:
        c = self.channels(X)
        n = self.spec.blocks_per_stage
        m = len(c)
        tile = self.tile

        def steps(ch: np.ndarray) -> np.ndarray:
            return np.ceil(ch / tile)

        stage = c[:, self.n_blocks:]
        latency = np.full(m, self.overhead) + self.conv_k * steps(np.full(m, 3.0)) * steps(
            stage[:, 0]) * 32 ** 2 * 9
        params = 27.0 * stage[:, 0]
        peak = (3.0 + stage[:, 0]) * 32 ** 2
        for b in range(self.n_blocks):
            s, i = divmod(b, n)
            hw = STAGE_HW[s]
            c_in = stage[:, s - 1] if (s > 0 and i == 0) else stage[:, s]
            mid, out = c[:, b], stage[:, s]
            in_hw = STAGE_HW[s - 1] if (s > 0 and i == 0) else hw
            latency += 2 * self.overhead + self.conv_k * 9 * hw ** 2 * (
                steps(c_in) * steps(mid) + steps(mid) * steps(out))
            latency += 0.2 * self.conv_k * hw ** 2 * tile * (steps(mid) + 2 * steps(out))
            params += 9.0 * (c_in * mid + mid * out) + 4.0 * (mid + out)
            peak = np.maximum(peak, c_in * in_hw ** 2 + mid * hw ** 2 + out * hw ** 2)
        params += stage[:, 2] * 10 + 10
        latency_ms = latency
        if self.spec.n_obj == 2:
            return latency_ms[:, None]
        memory_mb = (params + peak) * 4.0 / 2 ** 20
        return np.column_stack([latency_ms, memory_mb])

    def evaluate_full(self, X: np.ndarray) -> np.ndarray:
        """All objectives of integer genomes ``X`` (noise included), without pymoo."""
        X = np.atleast_2d(np.asarray(X, dtype=int))
        return np.column_stack([self._errors(X), self._cheap(X)])


def pruning_like_problem(name: str, instance: int) -> PruningLikeProblem:
    """Instance ``instance`` of the problem family ``name`` (one of :data:`PRUNING_LIKE`)."""
    if name not in PRUNING_LIKE:
        raise ValueError(f"unknown pruning-like problem {name!r}; valid: "
                         + ", ".join(PRUNING_LIKE))
    return PruningLikeProblem(PRUNING_LIKE[name], instance)
