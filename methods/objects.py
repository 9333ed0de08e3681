"""Import paths and in-process objects named in a config (factories, hooks, networks).

A config names user code by import path, ``"package.module:function"``: evaluator actors on
other nodes import it themselves (the package must be installed there). The Python API
(:func:`prunesearch.prune_search`) also takes live objects (an ``nn.Module``, datasets, hook
functions); each is registered here under an ``"object:<kind>-<digest>"`` name that the config
holds instead of a path, and shipped to the actors inside the evaluator payload
(:func:`objects_in` / :func:`adopt`). A run directory never stores the objects themselves
(checkpoints hold data, never code): such a run is resumed and exported from the same Python
session.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Iterable, Mapping
from typing import Any

from prunesearch.methods.errors import ConfigError, UsageError

__all__ = ["OBJECT_PREFIX", "adopt", "is_object", "objects_in", "register_object", "resolve"]

OBJECT_PREFIX = "object:"
_OBJECTS: dict[str, Any] = {}


def is_object(ref: str | None) -> bool:
    """Whether ``ref`` names a registered in-process object rather than an import path."""
    return isinstance(ref, str) and ref.startswith(OBJECT_PREFIX)


def register_object(obj: Any, *, kind: str, digest: str | None = None) -> str:
    """Register ``obj`` and return its ``object:`` name (stable for the same ``digest``)."""
    if digest is None:
        qualname = f"{type(obj).__module__}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"
        digest = hashlib.sha1(f"{qualname}:{id(obj)}".encode()).hexdigest()[:12]
    key = f"{OBJECT_PREFIX}{kind}-{digest}"
    _OBJECTS[key] = obj
    return key


def registered(prefix: str = OBJECT_PREFIX) -> tuple[str, ...]:
    """Names of the registered objects starting with ``prefix``."""
    return tuple(k for k in _OBJECTS if k.startswith(prefix))


def resolve(ref: str, *, key: str) -> Any:
    """The object ``ref`` names: a registered ``object:`` name or ``"package.module:attr"``.

    Raises:
        ConfigError: the path is malformed, its module cannot be imported or lacks the name
            (one line naming ``key``).
        UsageError: an ``object:`` name not registered in this process (a run started from
            the Python API, resumed elsewhere).
    """
    if is_object(ref):
        if ref not in _OBJECTS:
            raise UsageError(f"{key}: {ref!r} was a Python object given to prunesearch's Python "
                             "API; it exists only in that session (resume or export the run "
                             "from there, or name it by import path 'package.module:function')")
        return _OBJECTS[ref]
    module_name, sep, attr = str(ref).partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{key}: {ref!r} is not an import path; write 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{key}: cannot import module '{module_name}' ({exc}); install the "
                          "package or put it on PYTHONPATH (on every node of a cluster)") from None
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"{key}: module '{module_name}' has no attribute '{attr}'")
        target = getattr(target, part)
    return target


def _refs(config: Any) -> Iterable[str]:
    for section, name in (("model", "name"), ("model", "factory"), ("data", "factory"),
                          ("evaluator", "finetune_fn"), ("evaluator", "score_fn")):
        value = getattr(getattr(config, section, None), name, None)
        if is_object(value):
            yield value


def objects_in(config: Any) -> dict[str, Any]:
    """The registered objects a config refers to (shipped in the evaluator payload)."""
    return {ref: _OBJECTS[ref] for ref in _refs(config) if ref in _OBJECTS}


def adopt(objects: Mapping[str, Any] | None) -> None:
    """Register objects shipped from the driver (on an evaluator actor)."""
    for ref, obj in (objects or {}).items():
        _OBJECTS.setdefault(ref, obj)
