"""The job config: one loader from YAML to a frozen, validated :class:`JobConfig`.

Every section is a frozen dataclass defined by the layer that consumes it
(``search.settings``, ``methods.settings``, and :class:`ClusterSettings` here). Unknown keys,
wrong types and out-of-range values raise :class:`~prunesearch.search.settings.ConfigError`
with one line naming the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from prunesearch.methods.io import atomic_write_text
from prunesearch.methods.clad.settings import CLADSettings
from prunesearch.methods.icpg.settings import ICPGSettings
from prunesearch.methods.halp.settings import HALPSettings
from prunesearch.methods.settings import (
    DataSettings,
    EvaluatorSettings,
    FinetuneSettings,
    HardwareSettings,
    ModelSettings,
)
from prunesearch.search.settings import (
    ConfigError,
    SearchSettings,
    build_section,
    section_to_dict,
    setting,
)

__all__ = [
    "ConfigError",
    "ClusterSettings",
    "JobConfig",
    "SEARCH_KEYS",
    "TrialResources",
    "TuneSettings",
    "load_config",
    "parse_overrides",
    "config_to_dict",
    "dump_config",
]

#: Top-level keys whose change alters a run (resume refuses to change them).
SEARCH_KEYS = ("method", "seed", "data", "model", "hardware", "evaluator", "search", "tune", "clad", "icpg",
               "halp")


@dataclasses.dataclass(frozen=True)
class ClusterSettings:
    """The ``cluster`` section: where evaluations run. May change on resume."""

    num_evaluators: int = setting(2, min=1, help="evaluator actors in the pool")
    evaluator_resource: float = setting(
        1.0, min=0.0, help="units of the custom 'evaluator' resource each actor holds"
    )
    num_cpus: float = setting(0.0, min=0.0, help="CPUs each actor reserves (0: use the custom resource)")
    num_gpus: float = setting(0.0, min=0.0, help="GPUs per actor (fractions allowed)")
    accelerator_type: str | None = setting(None, help="Ray accelerator type, e.g. H100")
    max_retries: int = setting(2, min=0, help="re-tries of a candidate whose actor died")
    max_restarts: int = setting(3, min=0, help="restarts of a dead evaluator actor")
    dashboard: bool = setting(False, help="start Ray's dashboard with the private local instance")
    object_store_mb: int | None = setting(None, min=64, help="object store size for local Ray")


@dataclasses.dataclass(frozen=True)
class TrialResources:
    """``tune.resources_per_trial``: what one Tune trial reserves (fractions allowed)."""

    cpu: float = setting(1.0, min=0.0, help="CPUs per trial")
    gpu: float = setting(0.0, min=0.0, help="GPUs per trial (above 0: the trial runs on a GPU)")


#: How ``tune.space`` values are written: a list (grid values, or choices when sampled), or a
#: range ``{min: a, max: b, log: false}`` (sampled uniformly; integers when both ends are ints).
_SPACE_HELP = "dotted config key -> list of values, or {min, max, log} (random/optuna only)"


@dataclasses.dataclass(frozen=True)
class TuneSettings:
    """The ``tune`` section: how a trial-based method (CLAD, ICPG) runs as Ray Tune trials."""

    search: str = setting("grid", choices=("grid", "random", "optuna"),
                          help="grid: every combination; random or optuna: num_samples draws")
    space: Any = setting(default_factory=dict, help=_SPACE_HELP)
    num_samples: int = setting(1, min=1, help="grid: repeats of the grid; random/optuna: trials")
    metrics: tuple[str, ...] = setting((), help="metrics to optimise (optuna: several allowed; "
                                       "default the method's own metric)")
    modes: tuple[str, ...] = setting((), choices=("min", "max"), help="min or max per metric")
    max_failures: int = setting(1, min=0, help="retries of a failed trial before it is failed")
    num_to_keep: int = setting(1, min=1, help="checkpoints kept per trial")
    max_concurrent: int | None = setting(None, min=1, help="trials running at once (null: as "
                                         "many as the resources allow)")
    resources_per_trial: TrialResources = setting(default_factory=TrialResources)

    def __post_init__(self) -> None:
        if len(self.metrics) != len(self.modes):
            raise ValueError(f"tune.metrics has {len(self.metrics)} entries but tune.modes has "
                             f"{len(self.modes)}: give one mode (min or max) per metric")
        if len(self.metrics) > 1 and self.search != "optuna":
            raise ValueError("several tune.metrics need tune.search: optuna (grid and random "
                             "rank trials by one metric)")
        if not isinstance(self.space, Mapping):
            raise ValueError(f"tune.space must be a mapping ({_SPACE_HELP}), got {self.space!r}")
        plain: dict[str, Any] = {}
        for key, values in self.space.items():
            if not isinstance(key, str) or "." not in key and key != "seed":
                raise ValueError(f"tune.space key {key!r} must be a dotted config key such as "
                                 "'clad.rate'")
            if isinstance(values, Mapping):
                if set(values) - {"min", "max", "log"} or not {"min", "max"} <= set(values):
                    raise ValueError(f"tune.space.{key}: a range is {{min, max, log}}, got "
                                     f"{dict(values)!r}")
                lo, hi = values["min"], values["max"]
                if not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                           for v in (lo, hi)) or lo > hi:
                    raise ValueError(f"tune.space.{key}: min and max must be numbers with "
                                     f"min <= max, got {lo!r}, {hi!r}")
                if self.search == "grid":
                    raise ValueError(f"tune.space.{key}: a range needs tune.search random or "
                                     "optuna (grid takes a list of values)")
                plain[key] = {"min": lo, "max": hi, "log": bool(values.get("log", False))}
            elif isinstance(values, Sequence) and not isinstance(values, (str, bytes)):
                if not values:
                    raise ValueError(f"tune.space.{key} is an empty list")
                plain[key] = list(values)
            else:
                raise ValueError(f"tune.space.{key}: expected a list of values or "
                                 f"{{min, max, log}}, got {values!r}")
        # A plain dict (not the loader's read-only mapping view), so the config pickles.
        object.__setattr__(self, "space", plain)


@dataclasses.dataclass(frozen=True)
class JobConfig:
    """A whole job file, resolved. Build it with :func:`load_config`."""

    method: str = setting("hamp", help="method from the method registry (cluster/registry.py)")
    seed: int = setting(0, min=0, max=2**32 - 1)
    data: DataSettings = setting(default_factory=DataSettings)
    model: ModelSettings = setting(default_factory=ModelSettings)
    hardware: HardwareSettings = setting(default_factory=HardwareSettings)
    evaluator: EvaluatorSettings = setting(default_factory=EvaluatorSettings)
    search: SearchSettings = setting(default_factory=SearchSettings)
    cluster: ClusterSettings = setting(default_factory=ClusterSettings)
    halp: HALPSettings = setting(default_factory=HALPSettings)
    finetune: FinetuneSettings = setting(default_factory=FinetuneSettings)
    storage: str | None = setting(None, help="pyarrow filesystem URI the run directory is mirrored to")
    tune: TuneSettings = setting(default_factory=TuneSettings)
    clad: CLADSettings = setting(default_factory=CLADSettings)
    icpg: ICPGSettings = setting(default_factory=ICPGSettings)

    def __post_init__(self) -> None:
        from prunesearch.cluster.registry import METHODS
        from prunesearch.methods.settings import image_dataset_names

        if self.method not in METHODS:
            close = difflib.get_close_matches(str(self.method), list(METHODS), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"method: {self.method!r} is not allowed{hint}; choose one of: "
                              + ", ".join(METHODS))
        if (self.search.mode == "async"
                and METHODS[self.method].kind != "search"):
            raise ConfigError(f"search.mode: 'async' is for the searches of the search driver "
                              f"(hamp, nsga2, random and the ablations), not method "
                              f"{self.method!r}; use search.mode: generational")
        budget = self.search.device_budget()
        if budget and METHODS[self.method].kind != "search":
            hint = (" (HALP takes its latency budgets as halp.latency_targets with "
                    "halp.target_unit: ms)" if self.method == "halp" else "")
            raise ConfigError(f"search.{next(iter(budget))}: a device budget is for the "
                              f"searches of the search driver (hamp, nsga2, random and the "
                              f"ablations), not method {self.method!r}{hint}; pick a network within it with "
                              "'prunesearch export --max-latency-ms / --max-memory-mb'")
        names = image_dataset_names()
        if (METHODS[self.method].data_kind == "images" and self.data.factory is None
                and self.data.name not in names):
            close = difflib.get_close_matches(str(self.data.name), list(names), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"data.name: {self.data.name!r} is not allowed{hint}; choose one "
                              f"of: " + ", ".join(names) + f" (method {self.method})")

    def replace(self, **changes: Any) -> JobConfig:
        return dataclasses.replace(self, **changes)


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """Parse ``key.path=value`` strings (values are YAML scalars/lists) into a nested dict."""
    nested: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key.path=value")
        key, _, text = item.partition("=")
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set {item!r}: empty key")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: '{part}' is set both as a value and a section")
            node = child
        node[parts[-1]] = value
    return nested


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"config file '{path}' does not exist")
    if path.is_dir():
        raise ConfigError(f"config path '{path}' is a directory, not a YAML file")
    try:
        docs = list(yaml.safe_load_all(path.read_text()))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config file '{path}' is not valid YAML{where}: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file '{path}' is not a text file") from None
    docs = [d for d in docs if d is not None]
    if not docs:
        raise ConfigError(f"config file '{path}' is empty; start from configs/quickstart.yaml "
                          "(every key is optional, but a job file must say something)")
    if len(docs) > 1:
        raise ConfigError(f"config file '{path}' holds {len(docs)} YAML documents; expected one")
    raw = docs[0] if docs else {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config file '{path}' must hold a mapping of sections, got {type(raw).__name__}")
    return dict(raw)


def load_config(
    source: str | Path | Mapping[str, Any],
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
    *,
    base_dir: Path | None = None,
) -> JobConfig:
    """Load, merge ``--set`` overrides into, validate and resolve a job config.

    Relative paths (``data.root``, ``model.checkpoint``, ``file://`` storage) are made absolute
    against the current directory so that actors, trials and Ray jobs see the same files.

    Raises:
        ConfigError: the file is missing or malformed, or a key/value is invalid.
    """
    raw = _read_yaml(Path(source)) if isinstance(source, (str, Path)) else dict(source)
    if overrides:
        if not isinstance(overrides, Mapping):
            overrides = parse_overrides(list(overrides))
        raw = _merge(raw, overrides)
    _suggest_unknown(raw)
    config = build_section(JobConfig, raw)
    return _resolve_paths(config, base_dir or Path.cwd())


def _suggest_unknown(raw: Mapping[str, Any]) -> None:
    valid = [f.name for f in dataclasses.fields(JobConfig)]
    for key in raw:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown key '{key}'{hint}; valid keys: " + ", ".join(valid))


def _resolve_paths(config: JobConfig, base: Path) -> JobConfig:
    def absolute(p: str) -> str:
        path = Path(p).expanduser()
        return str(path if path.is_absolute() else (base / path).resolve())

    data = dataclasses.replace(config.data, root=absolute(config.data.root))
    model = config.model
    if model.checkpoint:
        model = dataclasses.replace(model, checkpoint=absolute(model.checkpoint))
    storage = config.storage
    if storage and "://" not in storage:
        storage = "file://" + absolute(storage)
    clad = config.clad
    if clad.latency_table:
        clad = dataclasses.replace(clad, latency_table=absolute(clad.latency_table))
    return dataclasses.replace(config, data=data, model=model, storage=storage, clad=clad)


def config_to_dict(config: JobConfig) -> dict[str, Any]:
    """Plain nested dict of a resolved config (what ``config.yaml`` holds)."""
    return section_to_dict(config)


def dump_config(config: JobConfig, path: Path) -> None:
    """Write the resolved config as YAML, atomically."""
    atomic_write_text(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))
