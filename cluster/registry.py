"""The method registry: every ``method`` a job config can name, and the runner that runs it.

``prunesearch run``, ``resume`` and ``report`` dispatch through this registry, and the config's
``method`` choices come from it: adding a method is one :class:`MethodEntry` here plus its
runner. Runners are named by import path (``"package.module:function"``) and imported only when
used, so validating a config never imports Ray or torch.

Runner kinds:

``search``
    The generational search driver (:func:`prunesearch.cluster.driver.run_search`): pymoo
    ask/tell on the driver, candidates evaluated on Ray actors; writes a journal.
``trials``
    The Ray Tune runner (:func:`prunesearch.cluster.tune_runner.run_trials`): one Tune trial
    per point of the ``tune.space`` grid or sample; the method itself is a
    :class:`prunesearch.methods.trial.TrialMethod` named by ``trial_method``.
``targets``
    One pruned network per latency target (HALP).

A runner is called as ``runner(config, run_dir, *, address, resume)`` (plus
``retime_table=True`` when the user asked to re-time the latency table and the runner accepts
that keyword) and returns the summary dict it wrote to ``summary.json`` (``status`` is ``complete``, ``failed`` or ``interrupted``).
A reporter is called as ``reporter(run_dir)`` and returns the summary.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from typing import Any

from prunesearch.methods.errors import lookup

__all__ = [
    "METHODS",
    "MethodEntry",
    "method_entry",
    "method_names",
    "register_method",
    "resolve",
]

RUNNER_KINDS = ("search", "trials", "targets")


@dataclasses.dataclass(frozen=True)
class MethodEntry:
    """One method a config can name.

    Attributes:
        name: The config's ``method`` value.
        kind: ``search``, ``trials`` or ``targets`` (see the module docstring).
        runner: Import path of ``runner(config, run_dir, *, address, resume) -> summary``.
        reporter: Import path of ``reporter(run_dir) -> summary`` (``prunesearch report``).
        help: One line for ``--help`` and error messages.
        section: The config section holding the method's own settings, if any.
        trial_method: For ``trials``: import path of the method's ``TrialMethod``.
        produces: What its run directory holds, besides ``config.yaml``, ``summary.json`` and
            ``driver.log`` (documentation, and what ``report`` re-renders).
        checker: Import path of ``checker(config) -> None``, raising a ``PrunesearchError``
            for bad input (unknown names, missing data) before anything is created or started.
        data_kind: ``images``: ``data.name`` must be in the image-dataset registry (checked
            when the config is loaded); ``graphs``: the method checks its own dataset names.
    """

    name: str
    kind: str
    runner: str
    reporter: str
    help: str
    section: str | None = None
    trial_method: str | None = None
    produces: tuple[str, ...] = ()
    checker: str | None = None
    data_kind: str = "images"

    def __post_init__(self) -> None:
        if self.data_kind not in ("images", "graphs"):
            raise ValueError(f"method {self.name!r}: data_kind must be images or graphs")
        if self.kind not in RUNNER_KINDS:
            raise ValueError(f"method {self.name!r}: kind must be one of {RUNNER_KINDS}, "
                             f"got {self.kind!r}")
        if self.kind == "trials" and not self.trial_method:
            raise ValueError(f"method {self.name!r}: a 'trials' method names its trial_method")
        for label, path in (("runner", self.runner), ("reporter", self.reporter),
                            ("trial_method", self.trial_method), ("checker", self.checker)):
            if path is not None and ":" not in path:
                raise ValueError(f"method {self.name!r}: {label} must be 'module:attribute', "
                                 f"got {path!r}")

    def run(self, config: Any, run_dir: Any, *, address: str | None, resume: bool,
            retime_table: bool = False) -> dict:
        """Call the runner.

        ``retime_table`` (``prunesearch resume --retime-table``) reaches runners that keep a
        latency table and accept the keyword; the others have nothing to re-time.
        """
        runner = resolve(self.runner)
        kwargs: dict[str, Any] = {"address": address, "resume": resume}
        if retime_table and "retime_table" in inspect.signature(runner).parameters:
            kwargs["retime_table"] = True
        return runner(config, run_dir, **kwargs)

    def report(self, run_dir: Any) -> dict:
        """Call the reporter."""
        return resolve(self.reporter)(run_dir)

    def preflight(self, config: Any) -> None:
        """Run the method's input checks (nothing is created or started)."""
        if self.checker is not None:
            resolve(self.checker)(config)


#: Every method by name, in the order ``--help`` and error messages list them.
METHODS: dict[str, MethodEntry] = {}


def register_method(entry: MethodEntry, *, replace: bool = False) -> MethodEntry:
    """Add ``entry`` to :data:`METHODS` (``replace=True`` to redefine a name)."""
    if entry.name in METHODS and not replace:
        raise ValueError(f"method {entry.name!r} is already registered")
    METHODS[entry.name] = entry
    return entry


def method_entry(name: str) -> MethodEntry:
    """The entry for ``name``, or an ``UnknownNameError`` listing the valid names."""
    return lookup(METHODS, name, key="method", kind="method")


def method_names() -> tuple[str, ...]:
    """Every registered method name."""
    return tuple(METHODS)


def resolve(path: str) -> Any:
    """Import ``"package.module:attribute"`` and return the attribute."""
    module_name, _, attribute = path.partition(":")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ImportError(f"{module_name} has no attribute {attribute!r} (from {path!r})") from None


# ------------------------------------------------------------------------ the methods
_SEARCH_FILES = ("journal.jsonl", "state/", "models/", "latency_table.json", "pareto.csv",
                 "pareto.png")
_SEARCHES = {
    "hamp": "HAMP: memetic MOEA (portfolio selection + surrogate-ranked local search)",
    "nsga2": "NSGA-II baseline",
    "random": "random-search baseline",
    "hamp-no-ls": "HAMP ablation without the surrogate-assisted local search",
    "hamp-no-portfolio": "HAMP ablation with NSGA-II selection only",
}
for _name, _help in _SEARCHES.items():
    register_method(MethodEntry(
        name=_name, kind="search", help=_help,
        runner="prunesearch.cluster.driver:run_search",
        reporter="prunesearch.cluster.report:write_report",
        checker="prunesearch.cluster.preflight:check_image_task",
        produces=_SEARCH_FILES,
    ))
del _name, _help


# Trial-based methods: one Tune trial per point of ``tune.space`` (cluster/tune_runner.py).
_TRIAL_FILES = ("tune/", "results.csv", "trials.json", "pareto.csv", "pareto.png")
register_method(MethodEntry(
    name="clad", kind="trials",
    help="CLAD: learned per-layer filter criteria with attention distillation (Tune trials)",
    runner="prunesearch.cluster.tune_runner:run_trials",
    reporter="prunesearch.cluster.tune_report:report_trials",
    checker="prunesearch.cluster.tune_runner:check_trial_inputs",
    trial_method="prunesearch.methods.clad:CLAD_METHOD",
    section="clad", produces=_TRIAL_FILES,
))
register_method(MethodEntry(
    name="icpg", kind="trials", data_kind="graphs",
    help="ICPG: inductive co-pruning of GNN edges (AutoMasker) and weights (Tune trials)",
    runner="prunesearch.cluster.tune_runner:run_trials",
    reporter="prunesearch.cluster.tune_report:report_trials",
    checker="prunesearch.cluster.tune_runner:check_trial_inputs",
    trial_method="prunesearch.methods.icpg:ICPG_METHOD",
    section="icpg", produces=("tune/", "results.csv", "trials.json"),
))

# One pruned network per latency target (cluster/halp_runner.py).
register_method(MethodEntry(
    name="halp", kind="targets",
    help="HALP baseline: latency-constrained knapsack pruning, one network per latency target",
    runner="prunesearch.cluster.halp_runner:run_halp",
    reporter="prunesearch.cluster.report:write_report",
    checker="prunesearch.cluster.preflight:check_image_task",
    section="halp", produces=_SEARCH_FILES,
))
