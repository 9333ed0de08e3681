"""The resume rule: which config changes a resumed run accepts (the only place it is written).

A resumed search must make the decisions the uninterrupted one would have made, so every key
under the search-defining sections (:data:`~prunesearch.cluster.config.SEARCH_KEYS`: method,
seed, data, model, hardware, evaluator, search) must stay as saved, except paths that only say
where the same files now live (:data:`RELOCATABLE_KEYS`). ``cluster.*`` and ``storage`` may
change freely.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prunesearch.cluster.config import SEARCH_KEYS

__all__ = ["RELOCATABLE_KEYS", "diff_search_keys", "refused_resume_keys"]

#: Paths that may move between machines when a run is resumed elsewhere (same files, new place).
RELOCATABLE_KEYS = ("data.root", "model.checkpoint")


def diff_search_keys(saved: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Dotted config keys, under the search-defining sections, whose values differ.

    Args:
        saved: the resolved config of the run (``config_to_dict`` / ``config.yaml``).
        new: the config the run would be resumed with.

    Returns:
        Sorted keys such as ``["search.budget", "seed"]``; empty when nothing differs.
    """
    changed: list[str] = []

    def walk(a: Any, b: Any, prefix: str) -> None:
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            for key in sorted(set(a) | set(b), key=str):
                walk(a.get(key), b.get(key), f"{prefix}.{key}")
        elif _plain(a) != _plain(b):
            changed.append(prefix)

    for key in SEARCH_KEYS:
        walk(saved.get(key), new.get(key), key)
    return sorted(changed)


def refused_resume_keys(saved: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The changed keys a resume refuses: :func:`diff_search_keys` less the relocatable paths.

    Returns:
        Sorted dotted keys; empty when the resume is allowed.
    """
    return [key for key in diff_search_keys(saved, new) if key not in RELOCATABLE_KEYS]


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
