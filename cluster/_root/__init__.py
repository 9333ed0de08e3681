"""prunesearch: hardware-aware pruning search on Ray.

Sub-packages (each maps one top-level folder of the repository):

* ``prunesearch.search``  -- pymoo algorithms (HAMP, baselines), problems, hypervolume. No torch/Ray.
* ``prunesearch.methods`` -- torch: models, data, structural pruning, cost models, evaluators.
* ``prunesearch.cluster`` -- Ray: evaluator actors, the search driver, Tune, CLI, deployment.

``prunesearch.prune_search(model, train=..., val=..., example_input=..., search=...)`` searches
your own network from Python (:mod:`prunesearch.cluster.api`).
"""

__version__ = "0.1.0"

from prunesearch.search.errors import ConfigError, PrunesearchError  # noqa: E402 - the root

__all__ = ["ConfigError", "FrontMember", "PrunesearchError", "SearchResult", "__version__",
           "prune_search"]

_API = {"prune_search", "SearchResult", "FrontMember"}


def __getattr__(name: str):
    # The Python API (prunesearch.cluster.api) imports torch and Ray: loaded on first use, so
    # ``import prunesearch`` stays light.
    if name in _API:
        from prunesearch.cluster import api

        return getattr(api, name)
    raise AttributeError(f"module 'prunesearch' has no attribute {name!r}")
