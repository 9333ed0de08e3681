"""The Python API: search a pruned version of your own ``nn.Module`` on your own data.

In the habit of Torch-Pruning and NNI, the network, its data and its hooks are Python objects::

    import prunesearch

    result = prunesearch.prune_search(
        net, train=train_set, val=val_set, example_input=torch.zeros(1, 3, 64, 48),
        search={"budget": 60, "pop_size": 12}, hardware={"device": "cpu", "batch_size": 1},
        evaluator={"finetune_steps": 50}, output="runs/mynet")
    for member in result.front:
        print(member.id, member.error, member.latency_ms, member.macs)
    small = result.rebuild("knee")                    # the physically smaller nn.Module
    result.export("knee", "mynet-small.onnx", format="onnx")

Every section takes the same keys (and gets the same validation) as the YAML job file: a
mapping, or the section's settings object. The search runs through the same method runners as
``prunesearch run`` (a private local Ray instance, or the cluster at ``address`` /
``RAY_ADDRESS``) and writes the same run directory.

Objects (the network, datasets, hook functions) are registered in this process under
``object:`` names, which the saved ``config.yaml`` holds, and shipped to the evaluator actors
with the evaluator payload (Ray pickles them: their classes must be importable on every node,
or defined in ``__main__``). Such a run is reported with ``prunesearch report`` like any other,
but rebuilt and exported from this session (:class:`SearchResult`), since the run directory
never stores code. Import paths (``model="package.module:function"``,
``score_fn="package.module:score"``) work anywhere.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from prunesearch.methods.errors import ConfigError, UsageError

__all__ = ["FrontMember", "SearchResult", "prune_search"]


@dataclasses.dataclass(frozen=True)
class FrontMember:
    """One network of the Pareto front, with its figures (``pareto.csv``'s row).

    Attributes:
        id: Candidate id (``--pick ID``).
        genome: Granules kept per group.
        error: The minimised error objective (``1 - score`` for a maximised score).
        latency_ms: Table latency (calibrated) the search used.
        latency_ms_measured: End-to-end median measured on an idle device at the end.
        memory_mb: Parameter + peak activation memory at the deployment batch size.
        macs: Multiply-accumulates per image.
        params: Parameters.
        metrics: Everything the evaluator recorded (the score under its name, train loss ...).
    """

    id: int
    genome: tuple[int, ...]
    error: float
    latency_ms: float
    latency_ms_measured: float
    memory_mb: float
    macs: float
    params: float
    metrics: Mapping[str, Any]


class SearchResult:
    """A finished (or interrupted) search: its run directory, summary and front.

    Attributes:
        run_dir: The run directory (same layout as ``prunesearch run`` writes).
        summary: ``summary.json``.
        config: The resolved job config.
    """

    def __init__(self, run_dir: Path, config: Any) -> None:
        self.run_dir = Path(run_dir)
        self.config = config
        path = self.run_dir / "summary.json"
        self.summary: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}

    @property
    def front(self) -> list[FrontMember]:
        """The Pareto front, one :class:`FrontMember` per network (empty before any result)."""
        from prunesearch.cluster.export import read_front

        try:
            rows = read_front(self.run_dir)
        except UsageError:
            return []
        members = []
        for row in rows:
            info = self._info(row["id"])
            genome = tuple(int(v) for v in re.findall(r"\d+", str(row["genome"])))
            members.append(FrontMember(
                id=int(row["id"]), genome=genome, error=row["error"],
                latency_ms=row["latency_ms"], latency_ms_measured=row["latency_ms_measured"],
                memory_mb=row["memory_mb"], macs=row["macs"], params=row["params"],
                metrics=dict(info.get("metrics") or {})))
        return members

    def _info(self, member_id: int) -> dict[str, Any]:
        path = self.run_dir / "models" / f"{member_id}.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def member(self, pick: str | int = "knee", *, max_latency_ms: float | None = None,
               max_memory_mb: float | None = None, max_error: float | None = None
               ) -> FrontMember:
        """The front member ``pick`` names: ``knee``, another ``--pick`` word, or an id; with
        limits, among the members that meet them (``member("best", max_latency_ms=2.0)``: the
        most accurate network that runs in 2 ms, measured end to end where the run re-timed
        it)."""
        from prunesearch.cluster.export import Budget, pick_member, read_front

        budget = Budget(latency_ms=max_latency_ms, memory_mb=max_memory_mb, error=max_error)
        row = pick_member(read_front(self.run_dir), str(pick), budget)
        return next(m for m in self.front if m.id == row["id"])

    def rebuild(self, pick: str | int = "knee") -> Any:
        """The picked member as a physically smaller ``nn.Module`` with its fine-tuned weights
        (eval mode, CPU)."""
        import torch

        from prunesearch.methods.pruning import load_pruned

        member = self.member(pick)
        info = self._info(member.id)
        if not info.get("recipe") or not info.get("weights"):
            raise UsageError(f"candidate {member.id} has no saved network in "
                             f"{self.run_dir / 'models'}")
        state = torch.load(self.run_dir / "models" / info["weights"], map_location="cpu",
                           weights_only=True)
        return load_pruned(info["recipe"], state)

    def export(self, pick: str | int, path: str | Path, *, format: str = "pt") -> dict[str, Any]:
        """Write the picked member as ``format`` (``pt``, ``torchscript``, ``onnx``), checked on
        reload, plus its recipe beside it; returns the row, the recipe path and the check."""
        from prunesearch.cluster.export import export_member

        return export_member(self.run_dir, str(pick), Path(path), format=format)

    def __repr__(self) -> str:
        return (f"SearchResult({str(self.run_dir)!r}, status={self.summary.get('status')!r}, "
                f"front={len(self.front)} networks)")


def _section(value: Any, name: str) -> dict[str, Any]:
    from prunesearch.search.settings import section_to_dict

    if value is None:
        return {}
    if dataclasses.is_dataclass(value):
        return dict(section_to_dict(value))
    if isinstance(value, Mapping):
        return dict(value)
    raise ConfigError(f"{name}: expected a mapping of settings or a settings object, got "
                      f"{type(value).__name__}")


def _reference(value: Any, *, kind: str, key: str) -> str | None:
    """An import path as it is; a callable registered as an ``object:`` name."""
    from prunesearch.methods.objects import register_object

    if value is None or isinstance(value, str):
        return value
    if callable(value):
        return register_object(value, kind=kind)
    raise ConfigError(f"{key}: expected 'package.module:function' or a callable, got "
                      f"{type(value).__name__}")


class _Splits:
    """A data factory returning fixed datasets (what ``train=``/``val=``/``test=`` become)."""

    def __init__(self, train: Any, val: Any, test: Any, num_classes: int | None) -> None:
        self.parts = {"train": train, "val": val, "test": test if test is not None else val}
        if num_classes is not None:
            self.parts["num_classes"] = int(num_classes)

    def __call__(self) -> dict[str, Any]:
        return dict(self.parts)


def _model_section(model: Any, options: dict[str, Any]) -> dict[str, Any]:
    import copy

    from torch import nn

    from prunesearch.methods.objects import register_object
    from prunesearch.methods.pruning import state_dict_sha256

    section = dict(options)
    if isinstance(model, nn.Module):
        frozen = copy.deepcopy(model).cpu().eval()  # later edits of the caller's net change nothing
        section["name"] = register_object(frozen, kind="model",
                                          digest=state_dict_sha256(frozen)[:12])
        section.setdefault("pretrain_epochs", 0)
    elif isinstance(model, str):
        section["factory" if ":" in model and not model.startswith("torchvision:")
                else "name"] = model
    elif model is not None:
        raise ConfigError(f"model: expected an nn.Module, a model name or 'package.module:"
                          f"function', got {type(model).__name__}")
    return section


def _check_example(example_input: Any, config: Any) -> None:
    """The example input must have the data's shape (the shape of every trace and timing)."""
    if example_input is None or config.evaluator.kind == "synthetic":
        return
    from prunesearch.methods.data import dataset_info

    shape = tuple(getattr(example_input, "shape", ()))
    expected = tuple(dataset_info(config.data).input_shape)
    if shape[1:] != expected and shape != expected:
        raise ConfigError(f"example_input has shape {shape}, the data's inputs are {expected} "
                          "(timings and traces use the data's shape)")


def prune_search(
    model: Any = None,
    *,
    train: Any = None,
    val: Any = None,
    test: Any = None,
    num_classes: int | None = None,
    example_input: Any = None,
    method: str = "hamp",
    seed: int = 0,
    data: Mapping[str, Any] | Any = None,
    model_options: Mapping[str, Any] | None = None,
    hardware: Mapping[str, Any] | Any = None,
    evaluator: Mapping[str, Any] | Any = None,
    search: Mapping[str, Any] | Any = None,
    cluster: Mapping[str, Any] | Any = None,
    finetune_fn: str | Callable[..., Any] | None = None,
    score_fn: str | Callable[..., Any] | None = None,
    storage: str | None = None,
    output: str | Path | None = None,
    overwrite: bool = False,
    address: str | None = None,
) -> SearchResult:
    """Search pruned versions of ``model`` that trade its score against latency and memory.

    Args:
        model: The trained network (an ``nn.Module``, used with its own weights), a registry
            name (``"torchvision:resnet34"``), or a factory ``"package.module:function"``
            called with ``num_classes=`` (trained for ``model_options['pretrain_epochs']``
            unless ``model_options['checkpoint']`` is given).
        train: Training dataset of ``(image, label)`` items (fine-tuning, BN recalibration).
        val: Validation dataset: every search decision is made on it.
        test: Test dataset (reporting only; default ``val``).
        num_classes: Classes of the datasets (default: ``train.classes``, else the labels).
        example_input: A batch ``(N, C, H, W)`` (or one image) of the data's shape, or
            ``(N, C, L)`` / ``(N, F)`` for sequence and tabular networks: checked against the
            datasets before anything starts.
        method: Search method (``hamp``, ``nsga2``, ``random``, ...).
        seed: Run seed.
        data: The ``data`` section, for data named rather than given (``{"name":
            "imagefolder", "path": ...}``); with ``train=`` only ``root`` and the split sizes
            matter.
        model_options: The rest of the ``model`` section (``classifier``, ``ignore``,
            ``checkpoint``, ``pretrain_epochs``).
        hardware: The ``hardware`` section (device, runtime, dtype, batch size, threads,
            granularity ...).
        evaluator: The ``evaluator`` section (fine-tune steps, lr, importance, score name and
            direction ...).
        search: The ``search`` section (budget, pop_size, ...).
        cluster: The ``cluster`` section (num_evaluators, resources ...).
        finetune_fn: ``evaluator.finetune_fn``: an import path or a function
            ``fn(model, data, *, steps, settings, generator, device)``.
        score_fn: ``evaluator.score_fn``: an import path or a function ``fn(model, data, *,
            settings, device) -> float``.
        storage: URI the run directory is mirrored to.
        output: Run directory (default ``runs/api-<time>/``).
        overwrite: Replace an existing run directory.
        address: Ray cluster to join (default ``RAY_ADDRESS``, else a private local instance).

    Returns:
        The :class:`SearchResult` (its ``summary['status']`` is ``complete`` or
        ``interrupted``).

    Raises:
        ConfigError: a setting is invalid (one line naming the key), or ``example_input``
            does not match the data.
        ModelTraceError: the network cannot be traced along its dependency graph.
    """
    from prunesearch.cluster.config import dump_config, load_config
    from prunesearch.cluster.preflight import check_device
    from prunesearch.cluster.registry import method_entry
    from prunesearch.cluster.rundir import new_run_dir
    from prunesearch.methods.objects import register_object

    data_section = _section(data, "data")
    if train is not None or val is not None:
        if train is None or val is None:
            raise ConfigError("train= and val= go together (val steers the search)")
        if data_section.get("name") or data_section.get("factory"):
            raise ConfigError("give the data either as train=/val= datasets or as data= "
                              "name/factory, not both")
        data_section["factory"] = register_object(_Splits(train, val, test, num_classes),
                                                  kind="data")
        data_section["name"] = None
    evaluator_section = _section(evaluator, "evaluator")
    for key, value in (("finetune_fn", finetune_fn), ("score_fn", score_fn)):
        if value is not None:
            evaluator_section[key] = _reference(value, kind=key.removesuffix("_fn"),
                                                key=f"evaluator.{key}")
    raw: dict[str, Any] = {
        "method": method, "seed": seed, "data": data_section,
        "model": _model_section(model, _section(model_options, "model_options")),
        "hardware": _section(hardware, "hardware"), "evaluator": evaluator_section,
        "search": _section(search, "search"), "cluster": _section(cluster, "cluster"),
    }
    if storage:
        raw["storage"] = storage
    config = load_config(raw)
    _check_example(example_input, config)
    entry = method_entry(config.method)
    entry.preflight(config)
    check_device(config, address=address)
    new = new_run_dir(str(output) if output else None, "api", overwrite=overwrite)
    try:
        dump_config(config, new.run_dir / "config.yaml")
        entry.run(config, new.run_dir, address=address, resume=False)
    except BaseException as exc:
        new.settle(exc)
        raise
    else:
        new.settle(None)
    finally:
        new.lock.release()
    return SearchResult(new.run_dir, config)

