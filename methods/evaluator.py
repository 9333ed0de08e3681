"""The real pruning task and its candidate evaluator (torch only: no Ray, no pymoo).

:class:`PruningTask` is built once on the driver from a job config. It loads the base model,
derives the genome space, enumerates every layer shape the search can produce, builds (or loads)
the latency lookup table for the target device while nothing else runs on it, calibrates the
table against end-to-end timings, and from then on computes the cheap objectives (table latency
and memory) of any genome exactly and without touching the device.

:class:`CandidateEvaluator` lives on an evaluator actor (or in-process). One evaluation:

1. genome -> physically smaller network (:func:`~prunesearch.methods.pruning.apply_genome`,
   channels ranked by ``evaluator.importance``);
2. BN recalibration: running statistics re-estimated on ``bn_recalibration_batches`` training
   batches (cumulative average, no gradient steps);
3. a short fine-tune: ``finetune_steps`` SGD steps (lr, momentum, weight decay, batch size from
   the config; random crop with 4-pixel padding + horizontal flip for images >= 32 px);
4. validation error on the held-out split carved from the training set (never the test set);
5. objectives ``error``, ``latency_ms`` (calibrated table) and ``memory_mb`` (parameter bytes
   + peak activation bytes at the deployment batch size), metrics ``macs``, ``params``,
   ``val_acc``, the fine-tuned weights (numpy) and the replayable recipe.

Randomness of one evaluation (data order, augmentation) comes from the seed it is given
(:func:`~prunesearch.methods.task.candidate_seed` of the run seed and the candidate id), so a
candidate evaluated twice, anywhere, with one CPU thread gives the same error.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

# The training pieces and the table builders live beside their kin; they are re-exported here
# for callers that know them under this module (tests, bench/evaluator.py).
from prunesearch.methods.cost.calibration import (
    GenomeSpecs,
    build_latency_table,
    calibration_genomes,
    cost_model,
    end_to_end,
    saved_or_built_table,
    table_key,
    time_genomes,
)
from prunesearch.methods.cost.model import CostModel
from prunesearch.methods.cost.table import LatencyTable
from prunesearch.methods.hooks import finetune_candidate, score_candidate
from prunesearch.methods.io import atomic_write_text
from prunesearch.methods.objects import adopt, objects_in
from prunesearch.methods.models.training import evaluate_error, finetune, recalibrate_bn
from prunesearch.methods.task import TABLE_FILE, candidate_seed, failed_result

__all__ = [
    "CandidateEvaluator",
    "GenomeSpecs",
    "PruningTask",
    "build_latency_table",
    "build_pruned_module",
    "calibration_genomes",
    "cost_model",
    "evaluate_error",
    "finetune",
    "recalibrate_bn",
    "table_key",
    "time_genomes",
]

DENSE_FILE = "dense_objectives.json"


def _space_for(model: nn.Module, model_name: str, granularity: int,
               input_shape: Sequence[int]) -> Any:
    from prunesearch.methods.pruning import genome_space

    return genome_space(model, model_name, granularity, input_shape=input_shape)


def _apply(model: nn.Module, space: Any, genome: Sequence[int], importance: str,
           example_inputs: tuple[torch.Tensor, torch.Tensor] | None = None,
           base_checkpoint: str | None = None) -> Any:
    from prunesearch.methods.pruning import apply_genome

    return apply_genome(model, space, genome, importance=importance,
                        example_inputs=example_inputs, base_checkpoint=base_checkpoint)


def _checkpoint_path(config: Any) -> str | None:
    """Where the base weights came from (recorded in recipes), when it is a file."""
    from prunesearch.methods.models import pretrained_path

    if config.model.checkpoint:
        return str(config.model.checkpoint)
    found = pretrained_path(config.model.name, config.data.root)
    return str(found) if found is not None and config.data.name == "cifar10" else None


def _numpy_state(module: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def _load_numpy_state(module: nn.Module, weights: dict[str, np.ndarray]) -> None:
    # np.array copies: arrays from Ray's object store are read-only views.
    state = {k: torch.from_numpy(np.array(v)) for k, v in weights.items()}
    module.load_state_dict(state, strict=True)


# ---------------------------------------------------------------------------------------------
# The task (driver side).
# ---------------------------------------------------------------------------------------------
class PruningTask:
    """:class:`~prunesearch.methods.task.SearchTask` of a real network pruned for real hardware.

    Args:
        config: A resolved ``JobConfig`` (duck-typed: ``seed``, ``data``, ``model``,
            ``hardware``, ``evaluator`` sections).
        run_dir: Run directory. ``run_dir/latency_table.json`` is reused when it exists (a
            resumed run predicts the same latencies); otherwise the built table is saved there.
        table: A ready, calibrated table (e.g. built on an evaluator node with
            :meth:`build_table`); skips building and calibration.
        cache_dir: Disk cache of raw table entries (default ``~/.cache/prunesearch/latency``).
        allow_timing: Time missing layer shapes on this machine. When False, a missing shape
            is an error (use it where the device is busy).
    """

    cheap_objectives = (1, 2)

    def __init__(self, config: Any, run_dir: str | Path | None = None, *,
                 table: LatencyTable | None = None, cache_dir: str | Path | None = None,
                 allow_timing: bool = True) -> None:
        from prunesearch.methods.data import dataset_info
        from prunesearch.methods.models import load_base_model

        self.config = config
        self.seed = int(config.seed)
        self.hardware = config.hardware
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.base_model = load_base_model(config.model, config.data, seed=self.seed).eval()
        self.base_checkpoint = _checkpoint_path(config)
        info = dataset_info(config.data)
        self.input_shape = tuple(info.input_shape)
        self.space = _space_for(self.base_model, config.model.name, self.hardware.granularity,
                                self.input_shape)
        self.space.check_searchable(config.model.name)
        self.lower = np.asarray(self.space.lower(), dtype=np.int64)
        self.upper = np.asarray(self.space.upper(), dtype=np.int64)
        self.group_names = list(self.space.names)
        self.cost = cost_model(self.space, self.hardware.batch_size, self.hardware.dtype)
        self._dense: dict[str, float] | None = None
        self._cache_dir = cache_dir
        if table is None:
            table = saved_or_built_table(
                self.run_dir / TABLE_FILE if self.run_dir is not None else None,
                cost=self.cost, hardware=self.hardware, allow_timing=allow_timing,
                build=lambda: self.build_table(allow_timing=allow_timing))
        self.table = table
        self.cost.bind(table)

    # ------------------------------------------------------------------ table
    def build_table(self, *, allow_timing: bool = True) -> LatencyTable:
        """Build, time and calibrate the latency table (see :func:`build_latency_table`)."""
        return build_latency_table(base_model=self.base_model, space=self.space, cost=self.cost,
                                   hardware=self.hardware, seed=self.seed,
                                   cache_dir=self._cache_dir, allow_timing=allow_timing)

    # ------------------------------------------------------------------ SearchTask protocol
    def channels(self, genome: Sequence[int]) -> list[int]:
        """Kept channels per group."""
        return list(self.space.channels(genome))

    def evaluate_cheap(self, genomes: np.ndarray) -> np.ndarray:
        """``(n, 2)`` exact ``[latency_ms, memory_mb]`` from the calibrated table and shapes."""
        out = self.cost.evaluate(np.atleast_2d(np.asarray(genomes)))
        return np.column_stack([out["latency_ms"], out["memory_mb"]])

    def cheap_metrics(self, genome: Sequence[int]) -> dict[str, float]:
        """``macs`` (MACs per image), ``params`` and the raw (uncalibrated) table latency."""
        out = self.cost.evaluate(np.asarray(genome)[None, :])
        return {"macs": float(out["macs"][0]), "params": float(out["params"][0]),
                "latency_table_raw_ms": float(out["latency_raw_ms"][0])}

    def dense_objectives(self) -> dict[str, float]:
        """Objectives of the unpruned model, computed once (and kept in the run directory).

        The error is the dense genome put through the same evaluation as every candidate (BN
        recalibration and fine-tuning included), so that the hypervolume reference compares
        like with like.
        """
        if self._dense is not None:
            return dict(self._dense)
        path = self.run_dir / DENSE_FILE if self.run_dir is not None else None
        if path is not None and path.is_file():
            self._dense = {k: float(v) for k, v in json.loads(path.read_text()).items()}
            return dict(self._dense)
        result = CandidateEvaluator(self.payload()).evaluate(
            self.upper.tolist(), candidate_id=-1, seed=candidate_seed(self.seed, -1))
        if result["status"] != "ok":
            raise RuntimeError(f"evaluating the dense model failed: {result['reason']}")
        self._dense = {k: float(v) for k, v in result["objectives"].items()}
        if path is not None:
            atomic_write_text(path, json.dumps(self._dense))
        return dict(self._dense)

    def payload(self) -> dict[str, Any]:
        """Picklable evaluator description: settings, numpy base weights, the cost model."""
        return {
            "kind": "finetune",
            "seed": self.seed,
            "data": self.config.data,
            "model": self.config.model,
            "hardware": self.hardware,
            "evaluator": self.config.evaluator,
            "base_weights": _numpy_state(self.base_model),
            "base_checkpoint": self.base_checkpoint,
            "cost_model": self.cost,
            "objects": objects_in(self.config),  # API objects named by the config (hooks.py)
        }

    def pruned_module(self, genome: Sequence[int],
                      weights: dict[str, np.ndarray] | None = None) -> nn.Module:
        """The physically pruned network of ``genome`` (with ``weights`` if given).

        Channels are chosen by L1 norm whatever ``evaluator.importance`` says: this module is
        for timing, whose cost depends on the widths only.
        """
        module = _apply(self.base_model, self.space, self.space.validate(genome), "l1").module
        if weights is not None:
            _load_numpy_state(module, weights)
        return module.eval()

    def measure(self, genome: Sequence[int],
                weights: dict[str, np.ndarray] | None = None) -> dict[str, float]:
        """Re-time the pruned network end to end on an idle device (median, p90, peak memory)."""
        return end_to_end(self.pruned_module(genome, weights), self.input_shape, self.hardware)


# ---------------------------------------------------------------------------------------------
# The evaluator (actor side).
# ---------------------------------------------------------------------------------------------
class CandidateEvaluator:
    """Evaluates one genome: prune, recalibrate BN, fine-tune, validate (see module docstring).

    Args:
        payload: :meth:`PruningTask.payload`. The dataset and base model are loaded on first
            use and kept across calls.
    """

    def __init__(self, payload: dict[str, Any]) -> None:
        missing = {"seed", "data", "model", "hardware", "evaluator", "base_weights",
                   "cost_model"} - set(payload)
        if missing:
            raise ValueError(f"payload lacks {sorted(missing)}; "
                             "build it with PruningTask.payload()")
        self.payload = payload
        self.data_settings = payload["data"]
        self.model_settings = payload["model"]
        self.hardware = payload["hardware"]
        self.settings = payload["evaluator"]
        adopt(payload.get("objects"))  # before the cost model's or hooks' first use
        self.cost: CostModel = payload["cost_model"]
        self.device = torch.device(self.hardware.device)
        self._bundle: Any = None
        self._base: nn.Module | None = None
        self._space: Any = None

    # ------------------------------------------------------------------ cached state
    @property
    def bundle(self) -> Any:
        """The dataset splits (loaded once)."""
        if self._bundle is None:
            from prunesearch.methods.data import load_dataset

            self._bundle = load_dataset(self.data_settings, seed=int(self.payload["seed"]))
        return self._bundle

    @property
    def base_model(self) -> nn.Module:
        """The unpruned model with the payload's weights (built once)."""
        if self._base is None:
            from prunesearch.methods.data import dataset_info
            from prunesearch.methods.models import build_base

            info = dataset_info(self.data_settings)
            model = build_base(self.model_settings, info.num_classes)
            _load_numpy_state(model, self.payload["base_weights"])
            self._base = model.eval()
        return self._base

    @property
    def space(self) -> Any:
        """The genome space (same as the task's)."""
        if self._space is None:
            from prunesearch.methods.data import dataset_info

            self._space = _space_for(self.base_model, self.model_settings.name,
                                     self.hardware.granularity,
                                     dataset_info(self.data_settings).input_shape)
        return self._space

    def measure(self, genome: Sequence[int],
                weights: dict[str, np.ndarray] | None = None) -> dict[str, float]:
        """Re-time a pruned network end to end on this evaluator's device (call it only while
        no evaluation runs there): ``latency_ms_measured``, ``latency_ms_p90`` and, on CUDA,
        ``peak_memory_mb``."""
        from prunesearch.methods.data import dataset_info

        module = _apply(self.base_model, self.space, self.space.validate(genome), "l1").module
        if weights is not None:
            _load_numpy_state(module, weights)
        input_shape = dataset_info(self.data_settings).input_shape
        previous = torch.get_num_threads()
        try:
            return end_to_end(module.eval(), input_shape, self.hardware)
        finally:
            torch.set_num_threads(previous)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, genome: Sequence[int], *, candidate_id: int, seed: int) -> dict[str, Any]:
        """Evaluate one candidate; never raises for a bad candidate (see ``failed_result``)."""
        start = time.perf_counter()
        previous_threads = torch.get_num_threads()
        try:
            torch.set_num_threads(self.hardware.threads)
            return self._evaluate(genome, candidate_id=candidate_id, seed=seed, start=start)
        except torch.OutOfMemoryError as exc:
            reason = f"out of memory: {str(exc).splitlines()[0] if str(exc) else ''}"
        except FloatingPointError as exc:
            reason = f"diverged: {exc}"
        except Exception as exc:  # noqa: BLE001 - a crashed candidate must not crash the search
            reason = f"{type(exc).__name__}: {exc}"
        finally:
            torch.set_num_threads(previous_threads)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return failed_result(reason, wall_s=time.perf_counter() - start)

    def _evaluate(self, genome: Sequence[int], *, candidate_id: int, seed: int,
                  start: float) -> dict[str, Any]:
        s = self.settings
        genome = self.space.validate(genome)
        # ``seed`` is the candidate's own seed (methods.task.candidate_seed, derived once by the
        # driver): used as it is.
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        bundle = self.bundle

        example = None
        if s.importance == "taylor":
            # First-order Taylor scores need gradients: one seeded training batch.
            order = torch.randperm(len(bundle.train), generator=generator)
            example = bundle.train.batch(order[: s.batch_size])
        pruned = _apply(self.base_model, self.space, genome, s.importance, example,
                        self.payload.get("base_checkpoint"))
        module = pruned.module.to(self.device)

        recal = []
        if s.bn_recalibration_batches > 0:
            for i, (x, _) in enumerate(bundle.train.batches(s.batch_size, shuffle=True,
                                                            generator=generator)):
                if i >= s.bn_recalibration_batches:
                    break
                recal.append(x.to(self.device))
        recalibrate_bn(module, recal)
        train_loss = finetune_candidate(module, bundle, s, generator=generator,
                                        device=self.device)
        error, scores = score_candidate(module, bundle, s, device=self.device)

        cost = self.cost.evaluate(np.asarray(genome)[None, :])
        objectives = {"error": float(error), "latency_ms": float(cost["latency_ms"][0]),
                      "memory_mb": float(cost["memory_mb"][0])}
        metrics = {"macs": int(cost["macs"][0]), "params": int(cost["params"][0]),
                   **scores, "train_loss": train_loss,
                   "latency_table_raw_ms": float(cost["latency_raw_ms"][0])}
        return {
            "status": "ok",
            "reason": None,
            "objectives": objectives,
            "metrics": metrics,
            "wall_s": time.perf_counter() - start,
            "weights": _numpy_state(module),
            "recipe": pruned.recipe,
        }


def build_pruned_module(recipe: dict[str, Any], weights: dict[str, np.ndarray]) -> nn.Module:
    """Rebuild the very network a candidate was evaluated as (for export).

    No base model is needed: the recipe's base architecture is rebuilt, pruned to the recipe's
    kept channels, and the result's fine-tuned ``weights`` loaded strictly.

    Args:
        recipe: The result's ``recipe``.
        weights: The result's fine-tuned ``weights``.

    Returns:
        The pruned ``nn.Module`` in eval mode, on CPU.
    """
    from prunesearch.methods.pruning import load_pruned

    return load_pruned(recipe, weights)
