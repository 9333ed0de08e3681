"""Frozen settings sections and the one validator every config section uses.

Each layer defines the config sections it consumes as frozen dataclasses whose fields are
declared with :func:`setting` (type, allowed values, range, help). The CLI's loader
(``prunesearch.cluster.config``) builds them from YAML with :func:`build_section`, so every
unknown key, wrong type and out-of-range value is refused the same way, naming the key, the value
and what is allowed.

This module is pure Python: it is imported by ``search``, ``methods`` and ``cluster`` alike.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from prunesearch.search.errors import ConfigError

__all__ = [
    "ConfigError",
    "allowed_values",
    "setting",
    "build_section",
    "section_to_dict",
    "LocalSearchSettings",
    "SearchSettings",
]


def setting(
    default: Any = dataclasses.MISSING,
    *,
    choices: Sequence[Any] | Callable[[], Sequence[Any]] | None = None,
    min: float | None = None,  # noqa: A002 - reads naturally at the call site
    max: float | None = None,  # noqa: A002
    help: str = "",  # noqa: A002
    default_factory: Any = dataclasses.MISSING,
    member: Callable[[Any], bool] | None = None,
) -> Any:
    """Declare a validated config field.

    Args:
        default: Default value (omit for a required field).
        choices: Allowed values, if the field is an enumeration; or a zero-argument callable
            returning them, called at validation time, so that a registry is the only list of
            its names (entries registered later are accepted too).
        min: Inclusive lower bound for numbers.
        max: Inclusive upper bound for numbers.
        help: One-line description, shown in error messages and docs.
        default_factory: Factory for mutable defaults (tuples are preferred).
        member: With callable ``choices``: ``value -> bool`` that answers membership without
            listing every choice (a registry whose full list is costly to build); the list is
            then built only for the message that refuses a value.
    """
    if choices is not None and not callable(choices):
        choices = tuple(choices)
    meta = {"choices": choices, "min": min, "max": max, "help": help, "member": member}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


T = TypeVar("T")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (tuple, list):
        args = typing.get_args(tp)
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against annotation ``tp``; return the (frozen) value or raise."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, value, arg)
            except ConfigError as exc:
                errors.append(exc)
        raise ConfigError(f"{key}: {value!r} is not a {_type_name(tp)}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping of settings, got {value!r}")
        return build_section(tp, value, prefix=key)
    if origin in (tuple, list):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ConfigError(f"{key}: {value!r} is not a {_type_name(tp)}")
        args = typing.get_args(tp)
        item_tp = args[0] if args else Any
        return tuple(_coerce(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: {value!r} is not a mapping")
        kt, vt = typing.get_args(tp) or (Any, Any)
        return types.MappingProxyType(
            {_coerce(key, k, kt): _coerce(f"{key}.{k}", v, vt) for k, v in value.items()}
        )
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: {value!r} is not a bool (use true or false)")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: {value!r} is not an int")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: {value!r} is not a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: {value!r} is not a string")
        return value
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{key}: {value!r} must be null")
        return None
    return value


def build_section(cls: type[T], raw: Mapping[str, Any] | None, *, prefix: str = "") -> T:
    """Build and validate the frozen dataclass ``cls`` from a mapping.

    Raises:
        ConfigError: one line naming the offending key, its value and what is allowed.
    """
    raw = dict(raw or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        where = f"section '{prefix}'" if prefix else "the top level"
        raise ConfigError(
            f"unknown key '{_join(prefix, unknown[0])}' in {where}; valid keys: "
            + ", ".join(sorted(fields))
        )
    kwargs = {}
    for name, f in fields.items():
        key = _join(prefix, name)
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"missing required key '{key}'" + _help(f))
            continue
        value = _coerce(key, raw[name], hints[name])
        _check_range(key, value, f)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:  # __post_init__ cross-field checks
        raise ConfigError(f"{prefix or 'config'}: {exc}") from None


def _help(f: dataclasses.Field) -> str:
    text = f.metadata.get("help") if f.metadata else ""
    return f" ({text})" if text else ""


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _check_range(key: str, value: Any, f: dataclasses.Field) -> None:
    meta = f.metadata or {}
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        if v is None:
            continue
        member = meta.get("member")
        if member is not None and member(v):
            choices = None
        else:
            choices = allowed_values(f)
        if choices is not None and v not in choices:
            raise ConfigError(
                f"{key}: {v!r} is not allowed; choose one of: " + ", ".join(map(str, choices))
            )
        lo, hi = meta.get("min"), meta.get("max")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if lo is not None and v < lo:
                raise ConfigError(f"{key}: {v!r} is below the minimum {lo}" + _help(f))
            if hi is not None and v > hi:
                raise ConfigError(f"{key}: {v!r} is above the maximum {hi}" + _help(f))


def allowed_values(f: dataclasses.Field) -> tuple[Any, ...] | None:
    """The allowed values of a :func:`setting` field (a registry's names are read now)."""
    choices = (f.metadata or {}).get("choices")
    if choices is None:
        return None
    return tuple(choices() if callable(choices) else choices)


def section_to_dict(section: Any) -> Any:
    """Plain-data (YAML/JSON-ready) view of a settings dataclass."""
    if dataclasses.is_dataclass(section):
        return {f.name: section_to_dict(getattr(section, f.name))
                for f in dataclasses.fields(section)}
    if isinstance(section, Mapping):
        return {k: section_to_dict(v) for k, v in section.items()}
    if isinstance(section, tuple):
        return [section_to_dict(v) for v in section]
    return section


def _registry_names(module: str, registry: str) -> tuple[str, ...]:
    # Imported when a config is validated, not when this module is (it must load without pymoo).
    import importlib

    return tuple(getattr(importlib.import_module(f"prunesearch.search.{module}"), registry))


# --------------------------------------------------------------------------------------------
# The `search` section: consumed by prunesearch.search.make_algorithm.
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LocalSearchSettings:
    """Surrogate-assisted local search budgets (HAMP)."""

    parents: int = setting(4, min=1, help="non-dominated solutions whose neighbourhood is searched")
    samples_per_parent: int = setting(200, min=1, help="neighbour moves sampled and ranked per parent")
    moves_per_parent: int = setting(1, min=0, help="best-ranked moves per parent evaluated for real")
    max_moves: int = setting(4, min=0, help="cap on local-search candidates added per generation")
    offspring_pool: int = setting(
        16, min=1, max=64,
        help="offspring bred per offspring evaluated; the surrogate pre-screens the pool (1: off)")
    explore_fraction: float = setting(
        0.25, min=0.0, max=1.0,
        help="share of the evaluated offspring drawn at random from the pool, not by prediction")
    min_rank_correlation: float = setting(
        0.2, min=-1.0, max=1.0,
        help="surrogate steps run only while its out-of-bag rank correlation is at least this")
    min_batch_rank_correlation: float = setting(
        0.8, min=-1.0, max=1.0,
        help="surrogate steps run only while it ranked the last batches (out of sample) with at "
             "least this rank correlation (mean of the last credit_window generations)")


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    """The ``search`` section: budget and algorithm settings for generational searches."""

    # The maximum keeps every count the search derives from the budget an exact int64/float.
    budget: int = setting(400, min=1, max=10**9, help="number of real evaluations")
    pop_size: int = setting(20, min=4, help="population size (offspring per generation)")
    portfolio: tuple[str, ...] = setting(
        ("nsga2", "sms-emoa", "spea2", "ibea"),
        choices=lambda: _registry_names("selection", "SELECTORS"),
        help="environmental-selection operators HAMP chooses among",
    )
    surrogate: str = setting("random_forest",
                             choices=lambda: _registry_names("surrogate", "SURROGATES"),
                             help="scikit-learn model for the expensive objectives")
    local_search: LocalSearchSettings = setting(default_factory=LocalSearchSettings)
    hv_max_error_increase: float = setting(
        0.10, min=0.0, max=1.0, help="error axis of the hypervolume reference: dense error + this"
    )
    credit_window: int = setting(5, min=1, help="portfolio credit sliding window (generations)")
    min_probability: float = setting(0.05, min=0.0, max=0.25,
                                     help="probability floor of each portfolio operator")
    mode: str = setting(
        "generational", choices=("generational", "async"),
        help="generational: ask a batch, wait for all of it, tell it; async: every free "
             "evaluator gets the next candidate at once, results are told as they arrive")
    async_ask_size: int | None = setting(
        None, min=1,
        help="async mode: offspring per ask (refills of the candidate queue); "
             "null: max(2, ceil(evaluators / 2))")
    async_queue_margin: int | None = setting(
        None, min=0,
        help="async mode: asked candidates kept queued beyond one per evaluator before "
             "asking again; smaller is fresher (each ask sees more results), larger keeps "
             "a freed evaluator from waiting for the next ask; null: half the ask size, "
             "rounded up")
    async_adaptive_margin: bool = setting(
        False,
        help="async mode: cap the queue margin at the largest of the last 8 told groups (the "
             "results that arrived during one busy spell of the driver): with evaluations "
             "long against an ask the queue shrinks to one candidate, so asks see fresher "
             "results")
    async_checkpoint_s: float = setting(
        10.0, min=0.0,
        help="async mode: seconds between checkpoints (resume replays the journaled tells "
             "since the last one); 0: after every tell")
    max_latency_ms: float | None = setting(
        None, min=0.0,
        help="the device's latency budget: no candidate whose table latency is above it is "
             "evaluated (over-budget genomes are shrunk to fit); null: no budget")
    max_memory_mb: float | None = setting(
        None, min=0.0,
        help="the device's memory budget, in the units of the memory objective; as "
             "max_latency_ms; null: no budget")

    limit_repair: str = setting(
        "spread", choices=("spread", "boundary"),
        help="how a genome beyond the device budget is shrunk to fit: boundary: to the "
             "largest fitting uniform shrink (onto the limit); spread: half of them further "
             "in, to 40-100% of that shrink (docs/METHODS.md, device budget)")

    #: The device-budget keys, with the objective index each limits.
    BUDGET_OBJECTIVES = (("max_latency_ms", 1), ("max_memory_mb", 2))

    def __post_init__(self) -> None:
        for name, _ in self.BUDGET_OBJECTIVES:
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"search.{name} must be > 0 (or null for no budget), "
                                 f"got {value!r}")

    def device_budget(self) -> dict[str, float]:
        """The budgets that are set, by key (``{"max_latency_ms": 2.0}``; empty: none)."""
        return {name: float(getattr(self, name)) for name, _ in self.BUDGET_OBJECTIVES
                if getattr(self, name) is not None}

    def limits(self) -> dict[int, float]:
        """The budgets as limits on objectives (1: latency, 2: memory) for a
        :class:`~prunesearch.search.problems.GenomeProblem`."""
        budget = self.device_budget()
        return {index: budget[name] for name, index in self.BUDGET_OBJECTIVES if name in budget}
