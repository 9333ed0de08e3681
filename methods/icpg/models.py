"""ICPG's networks: the ResGCN-style graph classifier, the AutoMasker, and the node-task GCNs.

Every propagating layer takes an optional soft ``edge_weight`` (one weight per edge), which is
how the AutoMasker's scores reach the classifier. GCN layers are PyG's ``GCNConv`` (symmetric
normalisation with unit self-loops, degrees from the weighted edges:
D^-1/2 (A*M + I) D^-1/2, as in the official code); GIN has no edge weight in PyG, so
:class:`WeightedGINConv` weights the summed messages itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from prunesearch.methods.icpg._pyg import GCNConv, MessagePassing, PygLinear, global_add_pool

__all__ = [
    "AutoMasker",
    "GraphClassifier",
    "NodeClassifier",
    "NodeMasker",
    "WeightedGINConv",
    "make_conv",
    "prunable_weights",
]


class WeightedGINConv(MessagePassing):
    """GIN layer ``mlp((1 + eps) * x_i + sum_j w_ji * x_j)`` with per-edge weights ``w``.

    Args:
        in_channels: Input width.
        out_channels: Output width.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(aggr="add")
        self.mlp = nn.Sequential(nn.Linear(in_channels, out_channels), nn.ReLU(),
                                 nn.Linear(out_channels, out_channels))
        self.eps = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor,
                edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        neighbours = self.propagate(edge_index, x=x, edge_weight=edge_weight)
        return self.mlp((1 + self.eps) * x + neighbours)

    def message(self, x_j: torch.Tensor, edge_weight: torch.Tensor | None) -> torch.Tensor:
        return x_j if edge_weight is None else x_j * edge_weight.view(-1, 1)


def make_conv(kind: str, in_channels: int, out_channels: int) -> nn.Module:
    """A propagating layer ``(x, edge_index, edge_weight=None) -> x`` of type ``gcn``/``gin``."""
    if kind == "gcn":
        return GCNConv(in_channels, out_channels)
    if kind == "gin":
        return WeightedGINConv(in_channels, out_channels)
    raise ValueError(f"unknown conv type {kind!r}; valid: gcn, gin")


def _init_bn(bn: nn.BatchNorm1d) -> nn.BatchNorm1d:
    # ResGCN initialises BN to weight 1, bias 1e-4.
    nn.init.constant_(bn.weight, 1.0)
    nn.init.constant_(bn.bias, 1e-4)
    return bn


class GraphClassifier(nn.Module):
    """ResGCN-style graph classifier (official ``ResGCN`` as ``main_imp.py`` builds it).

    BN -> linear feature transform (glorot init) -> ReLU, ``layers`` x [BN -> conv -> ReLU],
    global sum pooling, BN -> Linear -> ReLU, BN -> Linear -> log-softmax. No dropout, no residual.

    Args:
        num_features: Node feature width.
        num_classes: Graph classes.
        hidden: Width of every layer.
        layers: Propagating layers.
        conv: ``gcn`` or ``gin``.
    """

    def __init__(self, num_features: int, num_classes: int, *, hidden: int = 128,
                 layers: int = 3, conv: str = "gcn") -> None:
        super().__init__()
        self.bn_feat = _init_bn(nn.BatchNorm1d(num_features))
        # The official feature transform is a GCNConv used without propagation (gfn=True):
        # a glorot-initialised weight with a zero bias, not nn.Linear's kaiming init. The scale
        # matters: global magnitude pruning compares weights across layers.
        self.feat = PygLinear(num_features, hidden, weight_initializer="glorot",
                              bias_initializer="zeros")
        self.bns = nn.ModuleList(_init_bn(nn.BatchNorm1d(hidden)) for _ in range(layers))
        self.convs = nn.ModuleList(make_conv(conv, hidden, hidden) for _ in range(layers))
        self.bn_fc = _init_bn(nn.BatchNorm1d(hidden))
        self.fc = nn.Linear(hidden, hidden)
        self.bn_head = _init_bn(nn.BatchNorm1d(hidden))
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor,
                num_graphs: int, edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        """Log-probabilities ``(num_graphs, num_classes)``; ``edge_weight`` is the soft mask."""
        h = F.relu(self.feat(self.bn_feat(x)))
        for bn, conv in zip(self.bns, self.convs):
            h = F.relu(conv(bn(h), edge_index, edge_weight))
        g = global_add_pool(h, batch, size=num_graphs)
        g = F.relu(self.fc(self.bn_fc(g)))
        return F.log_softmax(self.head(self.bn_head(g)), dim=-1)


class AutoMasker(nn.Module):
    """Scores every edge of any input graph in (0, 1) (official ``GCNmasker``).

    BN -> linear feature transform -> ReLU, ``layers`` x [BN -> conv] with ReLU between layers
    (not after the last), then ``sigmoid(Linear([h_u || h_v]))`` for each directed edge u->v.

    Args:
        num_features: Node feature width.
        hidden: Trunk width (official ``mask_dim`` 64).
        layers: Propagating layers.
        conv: ``gcn`` or ``gin``.
    """

    def __init__(self, num_features: int, *, hidden: int = 64, layers: int = 3,
                 conv: str = "gcn") -> None:
        super().__init__()
        self.bn_feat = _init_bn(nn.BatchNorm1d(num_features))
        self.feat = nn.Linear(num_features, hidden)
        self.bns = nn.ModuleList(_init_bn(nn.BatchNorm1d(hidden)) for _ in range(layers))
        self.convs = nn.ModuleList(make_conv(conv, hidden, hidden) for _ in range(layers))
        self.score = nn.Linear(2 * hidden, 1)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """One score per column of ``edge_index``, in (0, 1)."""
        h = F.relu(self.feat(self.bn_feat(x)))
        for i, (bn, conv) in enumerate(zip(self.bns, self.convs)):
            h = conv(bn(h), edge_index)
            if i < len(self.convs) - 1:
                h = F.relu(h)
        pair = torch.cat([h[edge_index[0]], h[edge_index[1]]], dim=1)
        return torch.sigmoid(self.score(pair)).view(-1)


class NodeClassifier(nn.Module):
    """Two-layer GCN for transductive node classification (Kipf & Welling; official
    ``NodeClassification/Transductive`` model): dropout -> conv -> ReLU -> dropout -> conv."""

    def __init__(self, num_features: int, num_classes: int, *, hidden: int = 512,
                 dropout: float = 0.5, conv: str = "gcn") -> None:
        super().__init__()
        self.conv1 = make_conv(conv, num_features, hidden)
        self.conv2 = make_conv(conv, hidden, num_classes)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor,
                edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(num_nodes, num_classes)``."""
        h = F.dropout(x, self.dropout, self.training)
        h = F.relu(self.conv1(h, edge_index, edge_weight))
        h = F.dropout(h, self.dropout, self.training)
        return self.conv2(h, edge_index, edge_weight)


class NodeMasker(nn.Module):
    """Two-layer GCN edge scorer for node tasks: conv -> ReLU -> conv, concat-MLP sigmoid."""

    def __init__(self, num_features: int, *, hidden: int = 128, conv: str = "gcn") -> None:
        super().__init__()
        self.conv1 = make_conv(conv, num_features, hidden)
        self.conv2 = make_conv(conv, hidden, hidden)
        self.score = nn.Linear(2 * hidden, 1)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """One score per column of ``edge_index``, in (0, 1)."""
        h = self.conv2(F.relu(self.conv1(x, edge_index)), edge_index)
        pair = torch.cat([h[edge_index[0]], h[edge_index[1]]], dim=1)
        return torch.sigmoid(self.score(pair)).view(-1)


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """The weight matrices magnitude pruning acts on: every ``nn.Linear`` and every GCN layer's
    linear map (PyG ``Linear``); BN parameters, biases and GIN's ``eps`` are left alone."""
    found: dict[str, nn.Parameter] = {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, PygLinear)):
            found[f"{name}.weight"] = module.weight
    return found
