"""Graph datasets for ICPG: TU sets by name and Planetoid Cora/CiteSeer/PubMed, held as flat tensors.

A :class:`GraphSet` concatenates every graph of a dataset: node features ``x``, labels ``y``,
``node_ptr``/``edge_ptr`` (graph ``g`` owns nodes ``node_ptr[g]:node_ptr[g+1]`` and edges
``edge_ptr[g]:edge_ptr[g+1]``) and ``edge_index`` in global node numbers. Pruned graphs are never
copied: a boolean ``edge_alive`` over the original edges says which edges each graph keeps, and
:func:`make_batch` gathers a mini-batch of graphs with only their live edges. That mask is
what a checkpoint stores (the per-graph kept-edge indices, as data).

Loading never writes into ``data.root`` (it may be read-only): PyG's ``processed/`` output goes
to a temporary folder under :func:`~prunesearch.methods.data.cache_root`, and the finished
tensors are cached there as one file, written atomically, so parallel trials share it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import pickle
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from prunesearch.methods.data import cache_root
from prunesearch.methods.errors import DataNotFoundError
from prunesearch.methods.io import atomic_path

__all__ = [
    "PLANETOID_NAMES",
    "GraphBatch",
    "GraphSet",
    "NodeGraph",
    "check_dataset",
    "cv_split",
    "dataset_kind",
    "load_graph_set",
    "load_node_graph",
    "make_batch",
    "node_features",
    "ragged_arange",
]

#: Transductive node-classification sets (lower-case config name -> PyG/Planetoid name).
PLANETOID_NAMES = {"cora": "Cora", "citeseer": "CiteSeer", "pubmed": "PubMed"}

_FEATURE_VERSION = "v1"  # bump when the feature construction changes (invalidates caches)


@dataclasses.dataclass(frozen=True)
class GraphSet:
    """Every graph of a graph-classification dataset, concatenated (see the module docstring)."""

    name: str
    x: torch.Tensor
    y: torch.Tensor
    node_ptr: torch.Tensor
    edge_index: torch.Tensor
    edge_ptr: torch.Tensor
    num_classes: int

    @property
    def num_graphs(self) -> int:
        return int(self.y.numel())

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    @property
    def num_features(self) -> int:
        return int(self.x.shape[1])

    @property
    def edge_graph(self) -> torch.Tensor:
        """Graph id of every original edge."""
        counts = self.edge_ptr[1:] - self.edge_ptr[:-1]
        return torch.repeat_interleave(torch.arange(self.num_graphs), counts)


@dataclasses.dataclass(frozen=True)
class NodeGraph:
    """One graph for transductive node classification (public Planetoid split)."""

    name: str
    x: torch.Tensor
    y: torch.Tensor
    edge_index: torch.Tensor
    train_mask: torch.Tensor
    val_mask: torch.Tensor
    test_mask: torch.Tensor
    num_classes: int

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])


@dataclasses.dataclass(frozen=True)
class GraphBatch:
    """A mini-batch of graphs with their live edges, renumbered from 0.

    Attributes:
        x: Node features of the batch.
        edge_index: Live edges in batch node numbers.
        edge_ids: Position of every batch edge among the dataset's original edges.
        batch: Batch position of every node's graph.
        y: Graph labels.
        num_graphs: Graphs in the batch.
    """

    x: torch.Tensor
    edge_index: torch.Tensor
    edge_ids: torch.Tensor
    batch: torch.Tensor
    y: torch.Tensor
    num_graphs: int


def ragged_arange(starts: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """``cat([arange(s, s + c) for s, c in zip(starts, counts)])`` without a Python loop."""
    total = int(counts.sum())
    if total == 0:
        return torch.zeros(0, dtype=torch.long)
    offsets = torch.cumsum(counts, 0) - counts
    return torch.repeat_interleave(starts - offsets, counts) + torch.arange(total)


def make_batch(graphs: GraphSet, graph_ids: torch.Tensor, edge_alive: torch.Tensor) -> GraphBatch:
    """Gather the graphs ``graph_ids`` with the edges ``edge_alive`` keeps."""
    ids = graph_ids.to(torch.long)
    node_start = graphs.node_ptr[ids]
    node_count = graphs.node_ptr[ids + 1] - node_start
    nodes = ragged_arange(node_start, node_count)
    new_start = torch.cumsum(node_count, 0) - node_count
    edge_count = graphs.edge_ptr[ids + 1] - graphs.edge_ptr[ids]
    edge_ids = ragged_arange(graphs.edge_ptr[ids], edge_count)
    edge_pos = torch.repeat_interleave(torch.arange(ids.numel()), edge_count)
    live = edge_alive[edge_ids]
    edge_ids, edge_pos = edge_ids[live], edge_pos[live]
    shift = (new_start - node_start)[edge_pos]
    return GraphBatch(
        x=graphs.x[nodes],
        edge_index=graphs.edge_index[:, edge_ids] + shift,
        edge_ids=edge_ids,
        batch=torch.repeat_interleave(torch.arange(ids.numel()), node_count),
        y=graphs.y[ids],
        num_graphs=int(ids.numel()),
    )


def node_features(x: torch.Tensor | None, edge_index: torch.Tensor, num_nodes: int,
                  max_degree: int) -> torch.Tensor:
    """The official ``deg+odeg{max_degree}`` features: the dataset's own node features, the
    out-degree, and the out-degree one-hot encoded with degrees above ``max_degree`` capped."""
    deg = torch.bincount(edge_index[0], minlength=num_nodes).to(torch.float32)
    onehot = torch.nn.functional.one_hot(deg.clamp(max=max_degree).long(), max_degree + 1)
    parts = [x.to(torch.float32)] if x is not None and x.numel() else []
    return torch.cat([*parts, deg.view(-1, 1), onehot.to(torch.float32)], dim=1)


def dataset_kind(name: str) -> str:
    """``"node"`` for the Planetoid sets (Cora, CiteSeer, PubMed), else ``"graph"`` (a TU set)."""
    return "node" if name.lower() in PLANETOID_NAMES else "graph"


def _tu_folder(root: Path, name: str) -> Path:
    tu = root / "tu"
    exact = tu / name
    if (exact / "raw").is_dir():
        return exact
    if tu.is_dir():
        for candidate in sorted(tu.iterdir()):
            if candidate.name.lower() == name.lower() and (candidate / "raw").is_dir():
                return candidate
    raise DataNotFoundError(
        f"data.name '{name}': no TU dataset at '{exact / 'raw'}' (expected {name}_A.txt, "
        f"{name}_graph_indicator.txt and {name}_graph_labels.txt there, as TUDataset reads "
        f"them) and not a Planetoid set ({', '.join(sorted(PLANETOID_NAMES))})"
    )


def _planetoid_folder(root: Path, name: str) -> Path:
    pyg_name = PLANETOID_NAMES[name.lower()]
    folder = root / "planetoid" / pyg_name
    if not (folder / "raw").is_dir():
        raise DataNotFoundError(
            f"data.name '{name}': no Planetoid {pyg_name} at '{folder / 'raw'}' (expected the "
            f"ind.{pyg_name.lower()}.* files that torch_geometric.datasets.Planetoid reads)"
        )
    return folder


def check_dataset(root: str | Path, name: str) -> Path:
    """The dataset folder for ``name`` under ``root``.

    Raises:
        DataNotFoundError: one line naming the folder expected.
    """
    root = Path(root)
    if dataset_kind(name) == "node":
        return _planetoid_folder(root, name)
    return _tu_folder(root, name)


def _raw_fingerprint(raw: Path) -> str:
    digest = hashlib.sha256(_FEATURE_VERSION.encode())
    for path in sorted(raw.iterdir()):
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    return digest.hexdigest()[:16]


def _cached(key: str, build) -> dict:  # build: () -> dict of tensors
    """Load ``key`` from the cache, or build it and write it atomically (parallel-safe)."""
    folder = cache_root() / "icpg"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.pt"
    if path.is_file():
        with contextlib.suppress(RuntimeError, EOFError, OSError, pickle.UnpicklingError):
            return torch.load(path, weights_only=True)  # a torn or stale file is rebuilt below
    payload = build()
    # A cache shared by concurrent trials: unique temp names, no fsync needed (rebuilt if lost).
    with atomic_path(path, durable=False, unique=True) as tmp:
        torch.save(payload, tmp)
    return payload


def _pyg_load(dataset_cls, folder: Path, **kwargs):  # -> PyG dataset
    """Run a PyG dataset over a writable copy of ``folder/raw`` (``processed/`` lands there)."""
    work = Path(tempfile.mkdtemp(dir=cache_root(), prefix="icpg-pyg-"))
    try:
        target = work / folder.name
        shutil.copytree(folder / "raw", target / "raw")
        return dataset_cls(root=str(work), name=folder.name, **kwargs)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def load_graph_set(root: str | Path, name: str, *, max_degree: int = 100) -> GraphSet:
    """Load the TU dataset ``name`` from ``root/tu/NAME/raw`` with ``deg+odeg`` features.

    Raises:
        DataNotFoundError: the folder is missing (the message names it).
    """
    folder = _tu_folder(Path(root), name)
    key = f"tu-{folder.name}-odeg{max_degree}-{_raw_fingerprint(folder / 'raw')}"

    def build() -> dict:
        from prunesearch.methods.icpg._pyg import quiet_import

        with quiet_import():
            from torch_geometric.data import Batch
            from torch_geometric.datasets import TUDataset

        cache_root().mkdir(parents=True, exist_ok=True)
        dataset = _pyg_load(TUDataset, folder)
        batch = Batch.from_data_list(list(dataset))
        x = batch.x if getattr(batch, "x", None) is not None else None
        num_nodes = int(batch.num_nodes)
        edge_graph = batch.batch[batch.edge_index[0]]
        edge_counts = torch.bincount(edge_graph, minlength=batch.num_graphs)
        if not torch.all(edge_graph[1:] >= edge_graph[:-1]):
            raise ValueError(f"{folder.name}: edges are not grouped by graph")
        return {
            "x": node_features(x, batch.edge_index, num_nodes, max_degree),
            "y": batch.y.view(-1).to(torch.long),
            "node_ptr": batch.ptr.to(torch.long),
            "edge_index": batch.edge_index.to(torch.long),
            "edge_ptr": torch.cat([torch.zeros(1, dtype=torch.long),
                                   torch.cumsum(edge_counts, 0)]),
        }

    data = _cached(key, build)
    y = data["y"]
    return GraphSet(name=folder.name, x=data["x"], y=y, node_ptr=data["node_ptr"],
                    edge_index=data["edge_index"], edge_ptr=data["edge_ptr"],
                    num_classes=int(y.max()) + 1)


def load_node_graph(root: str | Path, name: str) -> NodeGraph:
    """Load Cora or CiteSeer (public split) from ``root/planetoid/NAME/raw``; features are
    row-normalised as in the GCN reference code.

    Raises:
        DataNotFoundError: the folder is missing (the message names it).
    """
    folder = _planetoid_folder(Path(root), name)
    key = f"planetoid-{folder.name}-{_raw_fingerprint(folder / 'raw')}"

    def build() -> dict:
        from prunesearch.methods.icpg._pyg import quiet_import

        with quiet_import():
            from torch_geometric.datasets import Planetoid

        cache_root().mkdir(parents=True, exist_ok=True)
        data = _pyg_load(Planetoid, folder)[0]
        x = data.x / data.x.sum(1, keepdim=True).clamp(min=1.0)
        return {"x": x, "y": data.y, "edge_index": data.edge_index,
                "train_mask": data.train_mask, "val_mask": data.val_mask,
                "test_mask": data.test_mask}

    data = _cached(key, build)
    return NodeGraph(name=folder.name, num_classes=int(data["y"].max()) + 1, **data)


def cv_split(labels: torch.Tensor, *, folds: int, fold: int,
             seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train/validation/test graph ids of ``fold`` in stratified ``folds``-fold CV.

    The test set is fold ``fold``; the validation set is fold ``fold - 1`` (cyclically), taken
    out of the training folds: the ResGCN/GraphCL code base's ``epoch_select='val'`` layout, so
    the split is 8/1/1 tenths with 10 folds and stratified throughout.
    """
    from sklearn.model_selection import StratifiedKFold

    y = labels.numpy()
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    tests = [test for _, test in splitter.split(np.zeros(len(y)), y)]
    test, val = tests[fold], tests[fold - 1]
    train_mask = np.ones(len(y), dtype=bool)
    train_mask[test] = False
    train_mask[val] = False
    return (torch.from_numpy(np.flatnonzero(train_mask)), torch.from_numpy(np.sort(val)),
            torch.from_numpy(np.sort(test)))
