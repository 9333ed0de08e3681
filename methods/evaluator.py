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
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from prunesearch.methods.cost.latency import measure_latency
from prunesearch.methods.cost.model import CostModel, NotFactorisable, PerGenomeCostModel
from prunesearch.methods.cost.table import LatencyTable, TableKey
from prunesearch.methods.hooks import finetune_candidate, score_candidate
from prunesearch.methods.io import atomic_write_text
from prunesearch.methods.objects import adopt, objects_in
from prunesearch.methods.task import candidate_seed, failed_result

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

TABLE_FILE = "latency_table.json"
DENSE_FILE = "dense_objectives.json"


# ---------------------------------------------------------------------------------------------
# Adapters to the pruning package (one place that knows its call signatures).
# ---------------------------------------------------------------------------------------------
def _space_for(model: nn.Module, model_name: str, granularity: int,
               input_shape: Sequence[int]) -> Any:
    from prunesearch.methods.pruning import genome_space

    return genome_space(model, model_name, granularity, input_shape=input_shape)


class GenomeSpecs:
    """Picklable ``genome -> list[LayerSpec]`` of a genome space at one batch size."""

    def __init__(self, space: Any, batch_size: int) -> None:
        self.space = space
        self.batch_size = int(batch_size)

    def __call__(self, genome: Sequence[int]) -> list[Any]:
        from prunesearch.methods.pruning.specs import layer_specs

        return layer_specs(self.space, self.space.channels(genome), batch=self.batch_size)


def _apply(model: nn.Module, space: Any, genome: Sequence[int], importance: str,
           example_inputs: tuple[torch.Tensor, torch.Tensor] | None = None,
           base_checkpoint: str | None = None) -> Any:
    from prunesearch.methods.pruning import apply_genome

    return apply_genome(model, space, genome, importance=importance,
                        example_inputs=example_inputs, base_checkpoint=base_checkpoint)


# ---------------------------------------------------------------------------------------------
# Training pieces (plain functions, usable outside the evaluator).
# ---------------------------------------------------------------------------------------------
def recalibrate_bn(module: nn.Module, batches: Sequence[torch.Tensor] | Any) -> int:
    """Re-estimate every BatchNorm's running statistics from ``batches`` (inputs only).

    Statistics are reset and accumulated as a cumulative average over the batches (momentum
    None), with no gradient step: after pruning, the surviving channels' statistics shift
    because their inputs lost channels, and this alone recovers much of the accuracy.

    Returns:
        The number of batches used (0 leaves the module untouched).
    """
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    batches = list(batches)
    if not bns or not batches:
        return 0
    momenta = [bn.momentum for bn in bns]
    was_training = module.training
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    module.train()
    with torch.no_grad():
        for x in batches:
            module(x)
    for bn, momentum in zip(bns, momenta):
        bn.momentum = momentum
    module.train(was_training)
    return len(batches)


def finetune(module: nn.Module, dataset: Any, *, steps: int, lr: float, momentum: float,
             weight_decay: float, batch_size: int, augment: bool,
             generator: torch.Generator, device: torch.device,
             augment_ops: Sequence[str] = ("crop", "flip"), padding: int = 4) -> float:
    """A few SGD steps on ``dataset`` (an ``ImageTensorDataset``), in place.

    Batches are drawn in a shuffled order from ``generator`` (epochs restart as needed).

    Returns:
        The mean loss of the last (up to) 10 steps (NaN when ``steps`` is 0).

    Raises:
        FloatingPointError: the loss became NaN or infinite (diverged).
    """
    from prunesearch.methods.data import augment_batch

    if steps <= 0:
        return float("nan")
    optimizer = torch.optim.SGD(module.parameters(), lr=lr, momentum=momentum,
                                weight_decay=weight_decay)
    module.train()
    losses: list[float] = []
    done = 0
    while done < steps:
        for x, y in dataset.batches(batch_size, shuffle=True, generator=generator, drop_last=True):
            if augment:
                x = augment_batch(x, generator=generator, padding=padding, ops=augment_ops)
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(module(x), y)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"fine-tuning loss is {value} at step {done + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(value)
            done += 1
            if done >= steps:
                break
        if not losses and done == 0:
            raise ValueError(f"the training set ({len(dataset)} images) is smaller than one "
                             f"batch of {batch_size}")
    return float(np.mean(losses[-10:]))


def evaluate_error(module: nn.Module, dataset: Any, *, batch_size: int = 500,
                   max_batches: int | None = None, device: torch.device | None = None) -> float:
    """Top-1 error of ``module`` on ``dataset`` (eval mode, no gradients).

    Raises:
        FloatingPointError: the network's outputs are not finite.
    """
    device = device or torch.device("cpu")
    module.eval()
    correct = total = 0
    with torch.inference_mode():
        for i, (x, y) in enumerate(dataset.batches(batch_size)):
            if max_batches is not None and i >= max_batches:
                break
            logits = module(x.to(device))
            if not torch.isfinite(logits).all():
                raise FloatingPointError("the network's outputs are not finite")
            correct += int((logits.argmax(1).cpu() == y).sum())
            total += int(y.numel())
    if total == 0:
        raise ValueError("the validation set is empty")
    return 1.0 - correct / total


# ---------------------------------------------------------------------------------------------
# Calibration genomes.
# ---------------------------------------------------------------------------------------------
def calibration_genomes(lower: Sequence[int], upper: Sequence[int], count: int,
                        seed: int) -> list[tuple[int, ...]]:
    """The dense genome plus ``count`` seeded random genomes spread over network sizes.

    Genome ``k`` keeps about ``r_k`` of every group (``r_k`` evenly spaced over 0.3..0.9) with
    per-gene jitter of +-0.2, so the calibration fit covers small and large networks rather
    than clustering at half width as uniform genomes would.
    """
    lo = np.asarray(lower, dtype=np.int64)
    hi = np.asarray(upper, dtype=np.int64)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    genomes = [tuple(int(v) for v in hi)]
    ratios = np.linspace(0.3, 0.9, count) if count > 1 else np.array([0.6] * count)
    for r in ratios:
        u = rng.uniform(r - 0.2, r + 0.2, size=hi.size)
        genomes.append(tuple(int(v) for v in np.clip(np.rint(u * hi), lo, hi)))
    return genomes


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


def table_key(hardware: Any) -> TableKey:
    """The latency-table key of a ``hardware`` section on this machine."""
    return TableKey.current(device=hardware.device, runtime=hardware.runtime,
                            dtype=hardware.dtype, batch_size=hardware.batch_size,
                            threads=hardware.threads)


def time_genomes(base_model: nn.Module, space: Any, genomes: Sequence[Sequence[int]],
                 hardware: Any, *, rounds: int = 3) -> list[float]:
    """End-to-end median latency (ms) of each genome's pruned network, in interleaved rounds.

    Every round times every network with ``hardware.repeats // rounds`` runs; the result is the
    median of a network's round medians, so a burst of background load spoils one round of
    every network rather than every round of one.
    """
    if rounds < 1:
        raise ValueError(f"rounds={rounds} must be >= 1")
    modules = [_apply(base_model, space, space.validate(g), "l1").module.eval() for g in genomes]
    per_round = max(3, hardware.repeats // rounds)
    results: list[list[float]] = [[] for _ in modules]
    for _ in range(rounds):
        for i, module in enumerate(modules):
            results[i].append(measure_latency(
                module, space.input_shape, device=hardware.device, runtime=hardware.runtime,
                dtype=hardware.dtype, batch_size=hardware.batch_size, threads=hardware.threads,
                warmup=hardware.warmup, repeats=per_round).median_ms)
    return [float(np.median(r)) for r in results]


def build_latency_table(*, base_model: nn.Module, space: Any,
                        cost: CostModel | PerGenomeCostModel, hardware: Any, seed: int,
                        cache_dir: str | Path | None = None,
                        allow_timing: bool = True) -> LatencyTable:
    """Build, time and calibrate the latency table on this machine's ``hardware.device``.

    Call it only while nothing else runs on the device. Raw entries are merged from the disk
    cache, every reachable layer shape that is missing (``cost.specs``) is timed in isolation,
    then the dense network and ``hardware.calibration_genomes`` random pruned networks
    (:func:`calibration_genomes`) are timed end to end (:func:`time_genomes`) and the
    calibration (``hardware.calibration``) fitted. ``cost`` is bound to the finished table.
    """
    table = LatencyTable(key=table_key(hardware), calibration=hardware.calibration,
                         device=hardware.device if allow_timing else None,
                         warmup=hardware.table_warmup, repeats=hardware.table_repeats)
    table.merge_cache(cache_dir)
    if table.measure_missing(cost.specs):
        try:
            table.write_cache(cache_dir)
        except OSError:
            pass  # a read-only home is no reason to fail a run
    cost.bind(table)
    if hardware.calibration != "none" and allow_timing:
        genomes = calibration_genomes(space.lower(), space.upper(),
                                      hardware.calibration_genomes, seed)
        raw = [float(v) for v in cost.evaluate(np.asarray(genomes))["latency_raw_ms"]]
        table.calibrate(raw, time_genomes(base_model, space, genomes, hardware))
        cost.bind(table)
    return table


def cost_model(space: Any, batch_size: int, dtype: str) -> CostModel | PerGenomeCostModel:
    """The exact vectorised cost model of a genome space; the per-genome one (memoised, new
    shapes timed on first sight) for torchvision models and spaces that do not factorise."""
    from prunesearch.methods.families import family_entry

    spec_fn = GenomeSpecs(space, batch_size)
    if not family_entry(space.family).exact_cost:
        # Specs of torchvision models come from tracing a pruned copy (~1 s each): enumerating
        # every gene pair's combinations would take hours (ResNet-18 at granularity 64: 6 min).
        return PerGenomeCostModel(spec_fn=spec_fn, lower=space.lower(), upper=space.upper(),
                                  dtype=dtype)
    try:
        return CostModel(spec_fn=spec_fn, lower=space.lower(), upper=space.upper(), dtype=dtype)
    except NotFactorisable:
        return PerGenomeCostModel(spec_fn=spec_fn, lower=space.lower(), upper=space.upper(),
                                  dtype=dtype)


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
        self.lower = np.asarray(self.space.lower(), dtype=np.int64)
        self.upper = np.asarray(self.space.upper(), dtype=np.int64)
        self.group_names = list(self.space.names)
        self.cost = cost_model(self.space, self.hardware.batch_size, self.hardware.dtype)
        self._dense: dict[str, float] | None = None
        self._cache_dir = cache_dir
        if table is None:
            saved = self.run_dir / TABLE_FILE if self.run_dir is not None else None
            if saved is not None and saved.is_file():
                table = LatencyTable.load(
                    saved, device=self.hardware.device if allow_timing else None)
                missing = table.missing(self.cost.specs)
                if missing:
                    if not allow_timing or table.key != table_key(self.hardware):
                        where = ("timing is not allowed here" if not allow_timing else
                                 f"it was measured under {table.key.slug()}, not here")
                        raise ValueError(
                            f"{saved} lacks {len(missing)} layer shapes of this genome space "
                            f"and {where}; delete it to rebuild the table")
                    table.measure_missing(self.cost.specs)
                    table.save(saved)
            else:
                table = self.build_table(allow_timing=allow_timing)
                if self.run_dir is not None:
                    table.save(self.run_dir / TABLE_FILE)
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
        return _end_to_end(self.pruned_module(genome, weights), self.input_shape, self.hardware)


def _end_to_end(module: nn.Module, input_shape: Sequence[int], hw: Any) -> dict[str, float]:
    result = measure_latency(module, input_shape, device=hw.device, runtime=hw.runtime,
                             dtype=hw.dtype, batch_size=hw.batch_size, threads=hw.threads,
                             warmup=hw.warmup, repeats=hw.repeats,
                             measure_memory=torch.device(hw.device).type == "cuda")
    out = {"latency_ms_measured": result.median_ms, "latency_ms_p90": result.p90_ms}
    if result.peak_memory_mb is not None:
        out["peak_memory_mb"] = result.peak_memory_mb
    return out


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
            return _end_to_end(module.eval(), input_shape, self.hardware)
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
