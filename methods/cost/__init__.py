"""prunesearch.methods.cost: hardware cost models of (pruned) networks.

* :mod:`~prunesearch.methods.cost.specs`: :class:`LayerSpec`, one operation's shapes.
* :mod:`~prunesearch.methods.cost.counts`: MACs, parameters and memory from specs or modules.
* :mod:`~prunesearch.methods.cost.latency`: end-to-end and per-layer latency measurement.
* :mod:`~prunesearch.methods.cost.table`: the calibrated per-layer latency lookup table.
* :mod:`~prunesearch.methods.cost.model`: exact cost of many genomes at once (vectorised).
"""

from prunesearch.methods.cost.counts import (
    Counts,
    count_module,
    count_specs,
    dtype_bytes,
    memory_mb,
    peak_activation_bytes,
)
from prunesearch.methods.cost.latency import (
    LatencyResult,
    device_name,
    measure_latency,
    measure_spec,
)
from prunesearch.methods.cost.model import CostModel, NotFactorisable, PerGenomeCostModel
from prunesearch.methods.cost.specs import LayerSpec
from prunesearch.methods.cost.table import LatencyTable, MissingLatencyEntry, TableKey

__all__ = [
    "CostModel",
    "Counts",
    "LatencyResult",
    "LatencyTable",
    "LayerSpec",
    "MissingLatencyEntry",
    "NotFactorisable",
    "PerGenomeCostModel",
    "TableKey",
    "count_module",
    "count_specs",
    "device_name",
    "dtype_bytes",
    "measure_latency",
    "measure_spec",
    "memory_mb",
    "peak_activation_bytes",
]
