"""prunesearch: hardware-aware pruning search on Ray.

Sub-packages (each maps one top-level folder of the repository):

* ``prunesearch.search``  -- pymoo algorithms (HAMP, baselines), problems, hypervolume. No torch/Ray.
* ``prunesearch.methods`` -- torch: models, data, structural pruning, cost models, evaluators.
* ``prunesearch.cluster`` -- Ray: evaluator actors, the search driver, Tune, CLI, deployment.
"""

__version__ = "0.1.0"

from prunesearch.search.errors import ConfigError, PrunesearchError  # noqa: E402 - the root

__all__ = ["ConfigError", "PrunesearchError", "__version__"]
