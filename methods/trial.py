"""The contract between a trial-based method (CLAD, ICPG, ...) and the Tune runner.

A trial-based method runs as Ray Tune trials, but ``methods/`` never imports Ray: the method
describes itself with a :class:`TrialMethod` and its work as :class:`Trial` objects, and the
Tune runner in ``prunesearch.cluster`` drives them (this is Tune's own cut between ``Tuner``,
the loop, and ``Trainable``, the work). The same objects run without Ray, e.g. on a GPU machine
that has none: construct the trial, call :meth:`Trial.step` until :attr:`Trial.done`.

A trial is one point of the parameter space: the resolved job config with the trial's
parameters applied as dotted keys (``clad.rate=0.5``, ``icpg.fold=3``), validated by the same
loader as the YAML file. Its work is a fixed number of steps (epochs or rounds).

Order of calls made by the runner, in one process:

1. ``trial = method.make_trial(config, work_dir)`` (``work_dir`` is a private, writable
   folder for caches; it may not survive a restart).
2. If the trial is restored: ``trial.load_state_dict(state)`` with the last checkpointed state.
3. While ``not trial.done``: ``metrics = trial.step()``; the runner reports ``metrics`` with
   ``trial.state_dict()`` as the checkpoint of that step.
4. ``trial.final()``: the trial's final network figures (for pruning methods) or ``None``.

``state_dict()`` must hold data only (tensors, numbers, strings, lists, dicts), so it loads
with ``torch.load(..., weights_only=True)``: a checkpoint never runs code. A restored trial
continues exactly where the checkpoint was taken: with a fixed seed, a trial killed after step
k and restored ends with the same results as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = ["Trial", "TrialMethod"]


@runtime_checkable
class Trial(Protocol):
    """One trial of a trial-based method (see the module docstring for the call order)."""

    @property
    def done(self) -> bool:
        """True once every step has run."""

    @property
    def completed_steps(self) -> int:
        """Steps finished so far (0 before the first; restored from the state)."""

    def step(self) -> dict[str, Any]:
        """Run one step (an epoch or a round) and return its metrics: a flat mapping of names
        to numbers or short strings. It becomes one row of ``results.csv``; ``step`` (the index
        of the step just run, from 1) is added by the runner when absent."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue after the last step, as data only."""

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a state returned by :meth:`state_dict`."""

    def final(self) -> dict[str, Any] | None:
        """The final network's figures, for pruning methods: at least ``error``,
        ``latency_ms``, ``memory_mb``, ``macs``, ``params`` (the same cost model and columns
        as a search's ``pareto.csv``), optionally ``latency_ms_measured`` and ``genome``.
        ``None`` for methods whose trials do not end in one network."""


@dataclasses.dataclass(frozen=True)
class TrialMethod:
    """How the Tune runner runs a method: registered once, in the method registry.

    Attributes:
        name: The config's ``method`` value.
        section: The config section holding the method's settings (e.g. ``"clad"``).
        make_trial: ``(config, work_dir) -> Trial`` for a resolved config with the trial's
            parameters applied.
        default_space: ``config -> {dotted key: values}``, the grid used when the config's
            ``tune.space`` is empty (e.g. ICPG's folds). Keys are validated like ``--set``.
        metric: The reported metric that ranks trials (``summary.json``'s best trial).
        mode: ``"max"`` or ``"min"`` for ``metric``.
        summarize: Optional ``(rows) -> dict`` of method-specific summary figures, from the
            rows of ``results.csv`` (each row a dict with ``trial_id``, the trial's parameters
            and the step's metrics).
        validate: Optional ``config -> None`` raising a ``PrunesearchError`` for bad input
            found before anything is created (e.g. a missing dataset).
        pruning: Whether :meth:`Trial.final` yields networks (``pareto.csv``/``pareto.png``).
        network: Optional ``state -> (recipe, state_dict) | None``: the pruned network held in
            a finished trial's :meth:`Trial.state_dict` (``None`` while it has none). With it the
            report keeps each front member's network under ``models/``, so ``prunesearch
            export`` and ``prunesearch finetune`` take a trial run's networks as a search's.
    """

    name: str
    section: str
    make_trial: Callable[[Any, Path], Trial]
    metric: str
    mode: str = "max"
    default_space: Callable[[Any], Mapping[str, Sequence[Any]]] | None = None
    summarize: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None
    validate: Callable[[Any], None] | None = None
    pruning: bool = True
    network: Callable[[Mapping[str, Any]], tuple[Mapping[str, Any], Mapping[str, Any]] | None] \
        | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise ValueError(f"TrialMethod {self.name!r}: mode must be 'max' or 'min', got {self.mode!r}")
