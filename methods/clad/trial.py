"""CLAD as a trial: learner training -> hard pruning -> fine-tuning -> final figures.

One :class:`CLADTrial` is one point of the parameter space (``clad.rate``, ``clad.criterion``,
``clad.distill_weight``, ...). Its steps, each reported by the Tune runner with a checkpoint:

1. ``learner_epochs`` steps (``criterion: learned`` only): one epoch of criterion-learner
   training each. The network is masked by the learners' differentiable keep-masks; the loss
   is ``CE + distill_weight * attention_loss(student stages, teacher stages)`` (+ optional
   logit KD) against the frozen unpruned teacher. ``learner_training: frozen`` trains only the
   learners (network in eval mode, weights fixed); ``joint`` also trains the weights (SGD).
2. One ``prune`` step: final scores (the trained learners, or a fixed criterion: ``l1``,
   ``l2``, ``fpgm``, ``taylor``), the top filters of every pruned layer kept through the
   pruning core (:func:`~prunesearch.methods.pruning.apply_genome` with ``scores=``), BN
   statistics re-estimated, validation accuracy of the pruned network.
3. ``finetune_epochs`` steps: SGD with momentum and a cosine schedule, ``CE`` plus the
   attention term when ``distill_finetune``.

:meth:`CLADTrial.final` gives test accuracy/error, MACs, parameters, memory, the calibrated
table latency and the end-to-end latency in the config's runtime (the cost model and latency
table of HAMP's evaluator). The state is data only; a restored trial continues bit for bit
(same seed, same thread count).

Why one module of ~600 lines: the trial's three phases share one state (network, learners,
optimisers, RNGs) that ``state_dict``/``load_state_dict`` must capture whole for exact
resume; split across modules, that state's invariants would be spread too. The learner, the
criteria and the settings live in their own modules.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from prunesearch.methods.clad.criteria import fixed_scores, pruned_groups, target_genome
from prunesearch.methods.clad.learner import (
    ChannelMasks,
    CriterionLearner,
    filter_descriptors,
    group_producers,
    hard_mask,
    keep_mask,
    znorm,
)
from prunesearch.methods.clad.settings import CLADSettings
from prunesearch.methods.cost.counts import count_specs
from prunesearch.methods.cost.latency import measure_latency
from prunesearch.methods.distill import FeatureTaps, attention_loss, kd_loss, stage_names
from prunesearch.methods.evaluator import evaluate_error, recalibrate_bn
from prunesearch.methods.pruning import apply_genome, prune_to_kept
from prunesearch.methods.pruning.specs import layer_specs
from prunesearch.methods.trial import TrialMethod

__all__ = ["CLAD_METHOD", "CLADTrial", "validate_clad_config"]

STATE_FORMAT = 1


@contextlib.contextmanager
def _threads(count: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _cpu_copy(obj: Any) -> Any:
    """Deep copy with every tensor detached, cloned and on the CPU (data only)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu").clone()
    if isinstance(obj, Mapping):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v) for v in obj)
    return obj


def _accumulate(sums: dict[str, float], loss: float, parts: Mapping[str, float]) -> None:
    sums["loss"] = sums.get("loss", 0.0) + loss
    for key, value in parts.items():
        sums[key] = sums.get(key, 0.0) + value


def _means(sums: Mapping[str, float], count: int) -> dict[str, float]:
    """Epoch means of the losses; a term that was off is reported as NaN."""
    out = {key: float("nan") for key in ("loss", "ce_loss", "at_loss", "kd_loss")}
    out.update({key: value / max(count, 1) for key, value in sums.items()})
    return out


def _derived_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


class CLADTrial:
    """One CLAD trial (see the module docstring). Satisfies :class:`~prunesearch.methods.trial.Trial`.

    Args:
        config: A resolved job config (``seed``, ``data``, ``model``, ``hardware`` and ``clad``
            sections; a config without ``clad`` uses :class:`CLADSettings` defaults).
        work_dir: A private, writable folder (unused for now: caches go to the project cache).
    """

    def __init__(self, config: Any, work_dir: str | Path | None = None) -> None:
        from prunesearch.methods.data import load_dataset
        from prunesearch.methods.evaluator import _checkpoint_path
        from prunesearch.methods.models import load_base_model
        from prunesearch.methods.pruning import genome_space

        self.config = config
        self.settings: CLADSettings = getattr(config, "clad", None) or CLADSettings()
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self.hardware = config.hardware
        self.device = torch.device(self.hardware.device)
        self.seed = int(config.seed)
        s = self.settings
        with _threads(self.hardware.threads):
            self.base = load_base_model(config.model, config.data, seed=self.seed).eval()
            self.bundle = load_dataset(config.data, seed=self.seed)
        self.base_checkpoint = _checkpoint_path(config)
        self.space = genome_space(self.base, config.model.name, self.hardware.granularity,
                                  input_shape=self.bundle.input_shape)
        self.groups = pruned_groups(self.space, s.layers, group_producers(self.base, self.space))
        self.genome = target_genome(self.space, self.groups, s.rate)
        self.keep = dict(zip(self.space.names, self.space.channels(self.genome)))
        self.stages = stage_names(self.base)
        self.macs = int(count_specs(layer_specs(self.space, self.space.channels(self.genome))).macs)
        self.learner_steps = s.learner_epochs if s.criterion == "learned" else 0
        self.total_steps = self.learner_steps + 1 + s.finetune_epochs
        self.train_set = self.bundle.train
        self.augment = s.augmentation and self.bundle.augmentable
        self.drop_last = len(self.train_set) >= s.batch_size
        full = (len(self.train_set) // s.batch_size if self.drop_last else 1)
        self.batches_per_epoch = min(full, s.batches_per_epoch or full)

        self.teacher = copy.deepcopy(self.base).to(self.device).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.student = copy.deepcopy(self.base).to(self.device)
        self.student_producers = group_producers(self.student, self.space)
        self.generator = torch.Generator().manual_seed(_derived_seed(self.seed, 10))

        self.learner: CriterionLearner | None = None
        self.learner_opt: torch.optim.Optimizer | None = None
        self.weights_opt: torch.optim.Optimizer | None = None
        self._descriptors: dict[str, torch.Tensor] | None = None
        if s.criterion == "learned":
            torch.manual_seed(_derived_seed(self.seed, 11))  # learner initialisation
            self.learner = CriterionLearner(self.groups, width=s.learner_width,
                                            prior=s.learner_prior).to(self.device)
            self.learner_opt = torch.optim.Adam(self.learner.parameters(), lr=s.learner_lr)
            if s.learner_training == "joint":
                self.weights_opt = torch.optim.SGD(self.student.parameters(), lr=s.lr,
                                                   momentum=s.momentum,
                                                   weight_decay=s.weight_decay)
            else:
                for p in self.student.parameters():
                    p.requires_grad_(False)

        self.pruned: nn.Module | None = None
        self.recipe: dict[str, Any] | None = None
        self.finetune_opt: torch.optim.Optimizer | None = None
        self.history: dict[str, float] = {}
        self._completed = 0
        self._final: dict[str, Any] | None = None

    # ------------------------------------------------------------------ Trial protocol
    @property
    def done(self) -> bool:
        """True once learner training, pruning and every fine-tune epoch have run."""
        return self._completed >= self.total_steps

    @property
    def completed_steps(self) -> int:
        """Steps finished so far."""
        return self._completed

    def step(self) -> dict[str, Any]:
        """Run the next step (a learner epoch, the pruning, or a fine-tune epoch)."""
        if self.done:
            raise RuntimeError(f"the trial has run all its {self.total_steps} steps")
        start = time.perf_counter()
        index = self._completed
        with _threads(self.hardware.threads):
            # Nothing should draw from the global RNG, but seed it per step so a restored
            # trial would match even if something did.
            torch.manual_seed(_derived_seed(self.seed, 12, index))
            if index < self.learner_steps:
                metrics = self._learner_epoch(index)
            elif index == self.learner_steps:
                metrics = self._prune()
            else:
                metrics = self._finetune_epoch(index - self.learner_steps - 1)
        self._completed += 1
        metrics.setdefault("macs", self.macs)  # the target network's, so every row can rank
        metrics["step"] = self._completed
        metrics["wall_s"] = time.perf_counter() - start
        return metrics

    def state_dict(self) -> dict[str, Any]:
        """Data-only state (loads with ``torch.load(..., weights_only=True)``)."""
        state: dict[str, Any] = {
            "format": STATE_FORMAT,
            "completed_steps": self._completed,
            "genome": list(self.genome),
            "generator": self.generator.get_state(),
            "history": dict(self.history),
        }
        if self.pruned is None:
            state["student"] = self.student.state_dict()
            if self.learner is not None:
                state["learner"] = self.learner.state_dict()
                state["learner_opt"] = self.learner_opt.state_dict()
            if self.weights_opt is not None:
                state["weights_opt"] = self.weights_opt.state_dict()
        else:
            state["recipe"] = self.recipe
            state["pruned"] = self.pruned.state_dict()
            state["finetune_opt"] = self.finetune_opt.state_dict()
            if self.learner is not None:
                state["learner"] = self.learner.state_dict()
        return _cpu_copy(state)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict` output (of a trial with the same config)."""
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"CLAD trial state format {state.get('format')!r} is not "
                             f"{STATE_FORMAT}")
        if list(state["genome"]) != list(self.genome):
            raise ValueError(f"the state was taken at genome {list(state['genome'])}, this "
                             f"trial's config gives {list(self.genome)}: not the same trial")
        self._completed = int(state["completed_steps"])
        self.generator.set_state(state["generator"])
        self.history = {k: float(v) for k, v in state.get("history", {}).items()}
        if self.learner is not None and "learner" in state:
            self.learner.load_state_dict(state["learner"])
        if "pruned" not in state:
            self.student.load_state_dict(state["student"])
            self._descriptors = None
            if self.learner_opt is not None and "learner_opt" in state:
                self.learner_opt.load_state_dict(state["learner_opt"])
            if self.weights_opt is not None and "weights_opt" in state:
                self.weights_opt.load_state_dict(state["weights_opt"])
            return
        self.recipe = dict(state["recipe"])
        kept = {g: [int(i) for i in state["recipe"]["kept"][g]] for g in self.space.names}
        self.pruned = prune_to_kept(self.base, kept, input_shape=self.space.input_shape)
        self.pruned.load_state_dict(state["pruned"])
        self.pruned.to(self.device)
        self.finetune_opt = self._make_finetune_opt(self.pruned)
        self.finetune_opt.load_state_dict(state["finetune_opt"])
        self._final = None

    def final(self) -> dict[str, Any]:
        """Test accuracy/error, MACs, parameters, memory and latency of the final network."""
        if not self.done:
            raise RuntimeError(f"final() needs all {self.total_steps} steps; "
                               f"{self._completed} have run")
        if self._final is None:
            with _threads(self.hardware.threads):
                self._final = self._final_figures()
        return dict(self._final)

    # ------------------------------------------------------------------ pieces
    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from prunesearch.methods.data import augment_batch

        s = self.settings
        for b, (x, y) in enumerate(self.train_set.batches(
                s.batch_size, shuffle=True, generator=self.generator, drop_last=self.drop_last)):
            if b >= self.batches_per_epoch:
                break
            if self.augment:
                x = augment_batch(x, generator=self.generator)
            yield x.to(self.device), y.to(self.device)

    def _val_acc(self, module: nn.Module) -> float:
        return 1.0 - evaluate_error(module, self.bundle.val, max_batches=self.settings.val_batches,
                                    device=self.device)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor, student_taps: FeatureTaps,
              teacher_taps: FeatureTaps | None, teacher_logits: torch.Tensor | None,
              distill: bool) -> tuple[torch.Tensor, dict[str, float]]:
        s = self.settings
        ce = F.cross_entropy(logits, labels)
        loss = ce
        parts = {"ce_loss": float(ce.detach())}
        if distill and s.distill_weight > 0 and teacher_taps is not None:
            at = attention_loss(student_taps.features, teacher_taps.features)
            loss = loss + s.distill_weight * at
            parts["at_loss"] = float(at.detach())
        if distill and s.kd_weight > 0 and teacher_logits is not None:
            kd = kd_loss(logits, teacher_logits, s.kd_temperature)
            loss = loss + s.kd_weight * kd
            parts["kd_loss"] = float(kd.detach())
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"CLAD training loss is {value}")
        return loss, parts

    def _uses_teacher(self, distill: bool) -> bool:
        s = self.settings
        return distill and (s.distill_weight > 0 or s.kd_weight > 0)

    def _descriptor_map(self) -> dict[str, torch.Tensor]:
        """z-scored descriptors of every pruned group, from the student's current weights."""
        if self._descriptors is None or self.settings.learner_training == "joint":
            self._descriptors = {
                g: znorm(filter_descriptors(self.student_producers[g], self._full_width(g)))
                .to(self.device) for g in self.groups}
        return self._descriptors

    def _full_width(self, group: str) -> int:
        """Full width of a group."""
        return self.space.groups[self.space.names.index(group)].full_width

    def temperature(self, iteration: int) -> float:
        """Mask temperature at learner iteration ``iteration`` (geometric annealing)."""
        s = self.settings
        total = max(1, self.learner_steps * self.batches_per_epoch - 1)
        fraction = min(1.0, iteration / total)
        return s.temperature_start * (s.temperature_end / s.temperature_start) ** fraction

    def _learner_epoch(self, epoch: int) -> dict[str, Any]:
        s = self.settings
        assert self.learner is not None and self.learner_opt is not None
        # Batch statistics make the masked network's BN behave as it will after pruning and
        # recalibration; running statistics are the dense network's (stale once masked).
        self.student.train(s.learner_training == "joint" or s.learner_bn == "batch")
        self.learner.train()
        use_teacher = self._uses_teacher(True)
        sums: dict[str, float] = {}
        seen = 0
        temperature = s.temperature_start
        with ChannelMasks(self.student_producers, self.groups, self.student) as masks, \
                FeatureTaps(self.student, self.stages) as s_taps, \
                FeatureTaps(self.teacher, self.stages) as t_taps:
            for b, (x, y) in enumerate(self._batches()):
                temperature = self.temperature(epoch * self.batches_per_epoch + b)
                scores = self.learner(self._descriptor_map())
                masks.masks = {g: keep_mask(scores[g], self.keep[g], temperature=temperature,
                                            mode=s.mask) for g in self.groups}
                logits = self.student(x)
                t_logits = None
                if use_teacher:
                    with torch.no_grad():
                        t_logits = self.teacher(x)
                loss, parts = self._loss(logits, y, s_taps, t_taps if use_teacher else None,
                                         t_logits, distill=True)
                self.learner_opt.zero_grad(set_to_none=True)
                if self.weights_opt is not None:
                    self.weights_opt.zero_grad(set_to_none=True)
                loss.backward()
                self.learner_opt.step()
                if self.weights_opt is not None:
                    self.weights_opt.step()
                _accumulate(sums, float(loss.detach()), parts)
                seen += 1
        val_acc = self._masked_val_acc()
        metrics = _means(sums, seen)
        metrics.update(phase="learner", epoch=epoch + 1, val_acc=val_acc,
                       temperature=temperature, kept_overlap_l1=self._overlap_with_l1())
        return metrics

    def _recalibration_batches(self) -> list[torch.Tensor]:
        batches = []
        for i, (x, _) in enumerate(self._batches()):
            if i >= self.settings.bn_recalibration_batches:
                break
            batches.append(x)
        return batches

    def _masked_val_acc(self) -> float:
        """Validation accuracy the network would have if pruned now: a copy with the hard
        masks and its BN statistics re-estimated, as the prune step does."""
        probe = copy.deepcopy(self.student)
        with ChannelMasks(group_producers(probe, self.space), self.groups, probe) as masks:
            masks.masks = self._hard_masks()
            recalibrate_bn(probe, self._recalibration_batches())
            return self._val_acc(probe)

    @torch.no_grad()
    def _learned_scores(self) -> dict[str, torch.Tensor]:
        assert self.learner is not None
        self.learner.eval()
        scores = self.learner(self._descriptor_map())
        return {g: v.detach().to("cpu", torch.float64) for g, v in scores.items()}

    def _hard_masks(self) -> dict[str, torch.Tensor]:
        scores = self._learned_scores()
        return {g: hard_mask(scores[g], self.keep[g]).to(self.device) for g in self.groups}

    def _overlap_with_l1(self, scores: Mapping[str, torch.Tensor] | None = None) -> float:
        """Fraction of kept filters (over the pruned groups) that L1 would keep too."""
        from prunesearch.methods.pruning.importance import keep_top

        scores = scores if scores is not None else self._learned_scores()
        l1 = fixed_scores(self.student, self.space, "l1", self.student_producers)
        same = total = 0
        for g in self.groups:
            ours = set(keep_top(scores[g], self.keep[g]))
            same += len(ours & set(keep_top(l1[g], self.keep[g])))
            total += self.keep[g]
        return same / max(total, 1)

    def _taylor_grads(self) -> dict[nn.Parameter, torch.Tensor]:
        from prunesearch.methods.pruning import batch_gradients

        batches = []
        for x, y in self._batches():
            batches.append((x, y))
            if len(batches) >= self.settings.taylor_batches:
                break

        def loss_fn(model: nn.Module) -> torch.Tensor:
            return torch.stack([F.cross_entropy(model(x), y) for x, y in batches]).mean()

        was = [p.requires_grad for p in self.student.parameters()]
        for p in self.student.parameters():
            p.requires_grad_(True)
        try:
            return batch_gradients(self.student, loss_fn)
        finally:
            for p, flag in zip(self.student.parameters(), was):
                p.requires_grad_(flag)

    def _make_finetune_opt(self, module: nn.Module) -> torch.optim.Optimizer:
        s = self.settings
        return torch.optim.SGD(module.parameters(), lr=s.lr, momentum=s.momentum,
                               weight_decay=s.weight_decay)

    def _prune(self) -> dict[str, Any]:

        s = self.settings
        if s.criterion == "learned":
            scores = self._learned_scores()
        else:
            grads = self._taylor_grads() if s.criterion == "taylor" else None
            scores = fixed_scores(self.student, self.space, s.criterion, self.student_producers,
                                  grads=grads)
        overlap = self._overlap_with_l1(scores)
        full_scores = {g.name: scores.get(g.name, torch.zeros(g.full_width, dtype=torch.float64))
                       for g in self.space.groups}
        label = "clad-learned" if s.criterion == "learned" else f"clad-{s.criterion}"
        result = apply_genome(self.student, self.space, self.genome, scores=full_scores,
                              importance=label, base_checkpoint=self.base_checkpoint)
        pruned = result.module.to(self.device)
        for p in pruned.parameters():
            p.requires_grad_(True)
        recalibrate_bn(pruned, self._recalibration_batches())
        self.pruned, self.recipe = pruned, result.recipe
        self.finetune_opt = self._make_finetune_opt(pruned)
        # The dense student (and its optimizer) are no longer needed.
        self.weights_opt = None
        val_acc = self._val_acc(pruned)
        dense = count_specs(layer_specs(self.space, self.space.full_widths)).macs
        counts = count_specs(layer_specs(self.space, self.space.channels(self.genome)))
        self.history.update(val_acc_pruned=val_acc, kept_overlap_l1=overlap)
        return {"phase": "prune", "epoch": 0, "val_acc": val_acc, "kept_overlap_l1": overlap,
                "macs": int(counts.macs), "params": int(counts.params),
                "macs_reduction": 1.0 - counts.macs / dense}

    def _finetune_epoch(self, epoch: int) -> dict[str, Any]:
        s = self.settings
        assert self.pruned is not None and self.finetune_opt is not None
        self.pruned.train()
        use_teacher = self._uses_teacher(s.distill_finetune)
        total = max(1, s.finetune_epochs * self.batches_per_epoch)
        sums: dict[str, float] = {}
        seen = 0
        lr = s.lr
        with FeatureTaps(self.pruned, self.stages) as s_taps, \
                FeatureTaps(self.teacher, self.stages) as t_taps:
            for b, (x, y) in enumerate(self._batches()):
                iteration = epoch * self.batches_per_epoch + b
                lr = 0.5 * s.lr * (1.0 + math.cos(math.pi * iteration / total))
                for group in self.finetune_opt.param_groups:
                    group["lr"] = lr
                logits = self.pruned(x)
                t_logits = None
                if use_teacher:
                    with torch.no_grad():
                        t_logits = self.teacher(x)
                loss, parts = self._loss(logits, y, s_taps, t_taps if use_teacher else None,
                                         t_logits, distill=s.distill_finetune)
                self.finetune_opt.zero_grad(set_to_none=True)
                loss.backward()
                self.finetune_opt.step()
                _accumulate(sums, float(loss.detach()), parts)
                seen += 1
        metrics = _means(sums, seen)
        metrics.update(phase="finetune", epoch=epoch + 1, val_acc=self._val_acc(self.pruned),
                       lr=lr)
        return metrics

    def _final_figures(self) -> dict[str, Any]:

        assert self.pruned is not None
        s = self.settings
        test_error = evaluate_error(self.pruned, self.bundle.test, device=self.device)
        val_acc = self._val_acc(self.pruned)
        channels = self.space.channels(self.genome)
        cost = self._latency_cost()
        figures = cost.evaluate(np.asarray(self.genome)[None, :])
        dense = count_specs(layer_specs(self.space, self.space.full_widths)).macs
        out: dict[str, Any] = {
            "error": float(test_error),
            "test_acc": 1.0 - float(test_error),
            "val_acc": float(val_acc),
            "latency_ms": float(figures["latency_ms"][0]),
            "latency_ms_table_raw": float(figures["latency_raw_ms"][0]),
            "memory_mb": float(figures["memory_mb"][0]),
            "macs": int(figures["macs"][0]),
            "params": int(figures["params"][0]),
            "dense_macs": int(dense),
            "macs_reduction": 1.0 - float(figures["macs"][0]) / dense,
            "genome": [int(v) for v in self.genome],
            "channels": [int(c) for c in channels],
            "criterion": s.criterion,
            "rate": s.rate,
            **self.history,
        }
        if s.measure_latency:
            hw = self.hardware
            timed = measure_latency(copy.deepcopy(self.pruned).cpu(), self.space.input_shape,
                                    device=hw.device, runtime=hw.runtime, dtype=hw.dtype,
                                    batch_size=hw.batch_size, threads=hw.threads,
                                    warmup=hw.warmup, repeats=hw.repeats,
                                    measure_memory=self.device.type == "cuda")
            out["latency_ms_measured"] = timed.median_ms
            out["latency_ms_p90"] = timed.p90_ms
            if timed.peak_memory_mb is not None:
                out["peak_memory_mb"] = timed.peak_memory_mb
        return out

    def _latency_cost(self) -> Any:
        """A cost model bound to a calibrated latency table for this config's hardware.

        The table is the saved one (``clad.latency_table``) or built here: the shapes of the
        dense network, of ``hardware.calibration_genomes`` random genomes and of this trial's
        genome, timed in isolation (raw entries shared through the disk cache), calibrated
        against end-to-end timings, as HAMP's evaluator does for a whole genome space.
        """
        from prunesearch.methods.cost.model import PerGenomeCostModel
        from prunesearch.methods.cost.table import LatencyTable
        from prunesearch.methods.errors import DataNotFoundError, UsageError
        from prunesearch.methods.evaluator import GenomeSpecs, build_latency_table, table_key

        hw = self.hardware
        cost = PerGenomeCostModel(spec_fn=GenomeSpecs(self.space, hw.batch_size),
                                  lower=self.space.lower(), upper=self.space.upper(),
                                  dtype=hw.dtype)
        saved = self.settings.latency_table
        if saved:
            path = Path(saved).expanduser()
            if not path.is_file():
                raise DataNotFoundError(f"clad.latency_table '{path}' does not exist")
            table = LatencyTable.load(path, device=hw.device)
            if table.key != table_key(hw):
                raise UsageError(f"clad.latency_table '{path}' was measured under "
                                 f"{table.key.slug()}, not {table_key(hw).slug()}")
            cost.bind(table)
        else:
            table = build_latency_table(base_model=self.base, space=self.space, cost=cost,
                                        hardware=hw, seed=self.seed)
        cost.evaluate(np.asarray(self.genome)[None, :])  # times this genome's new shapes
        with contextlib.suppress(OSError):
            table.write_cache()
        return cost


def validate_clad_config(config: Any) -> None:
    """Refuse, before any trial starts, a config whose model, data or weights are missing.

    Raises:
        UnknownNameError: unknown model or dataset name.
        DataNotFoundError: the pretrained weights or ``model.checkpoint`` are missing.
    """
    from prunesearch.methods.data import dataset_info
    from prunesearch.methods.errors import DataNotFoundError
    from prunesearch.methods.models import model_info, pretrained_path
    from prunesearch.methods.objects import resolve

    # A user's network or data (model.factory / data.factory) is found by importing it; a
    # registry name is looked up (an unknown one is refused with the valid names).
    if config.model.factory is not None:
        resolve(config.model.factory, key="model.factory")
    if config.data.factory is not None:
        resolve(config.data.factory, key="data.factory")
    info = model_info(config.model.name) if config.model.factory is None else None
    data = dataset_info(config.data.name) if config.data.factory is None else None
    if config.model.checkpoint:
        if not Path(config.model.checkpoint).expanduser().is_file():
            raise DataNotFoundError(f"model.checkpoint '{config.model.checkpoint}' does not exist")
    elif (info is not None and data is not None and info.pretrained_cifar10
          and data.name == "cifar10"
          and pretrained_path(info.name, config.data.root) is None):
        folder = Path(config.data.root).expanduser() / "weights" / "cifar10-resnet"
        raise DataNotFoundError(f"data.root '{config.data.root}' has no pretrained "
                                f"{info.name}: expected {folder}/{info.name}-*.th, or set "
                                "model.checkpoint")


def _make_trial(config: Any, work_dir: Path) -> CLADTrial:
    return CLADTrial(config, work_dir)


def _network_of_state(state: Mapping[str, Any]) -> tuple[Any, Any] | None:
    """The pruned network of a CLAD trial's state (none before its prune step)."""
    if "pruned" not in state or not state.get("recipe"):
        return None
    return state["recipe"], state["pruned"]


#: CLAD for the Tune runner: trials ranked by their last reported validation accuracy.
CLAD_METHOD = TrialMethod(name="clad", section="clad", make_trial=_make_trial, metric="val_acc",
                          mode="max", validate=validate_clad_config, pruning=True,
                          network=_network_of_state)
