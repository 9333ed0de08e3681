"""The ``icpg`` config section: ICPG's schedule, models, protocol and work caps.

Defaults follow the official code (yongduosui/ICPG, TUDataset/run.sh and main_imp.py, read for
facts): 20 rounds of 5% edges and 20% weights, 100 + 100 epochs per round, Adam lr 1e-3 for the
GNN and 1e-2 for the AutoMasker, batch 128, width 128 (masker 64). ``docs/METHODS.md`` ("ICPG")
lists every choice the paper or code leaves open.
"""

from __future__ import annotations

import dataclasses

from prunesearch.search.settings import setting

__all__ = ["BASELINES", "CONV_TYPES", "IMP_BASELINES", "SELECTIONS", "ICPGSettings"]

#: ``icpg``: AutoMasker edges + magnitude weights; ``random``: random edges + random weights at
#: the same schedule (official ``rprp``); ``ugs``: learned soft masks (UGS, transductive node
#: tasks only); ``rpimp``: random edges + iterative magnitude pruning of the trained ticket, no
#: masker (official ``rpimp``); ``npimp``: the same weights, no edge pruning (official
#: ``npimp``). New names go at the end: a baseline's position seeds its rounds.
BASELINES = ("icpg", "random", "ugs", "rpimp", "npimp")
#: Baselines whose weights are pruned from the previous round's retrained ticket (classic IMP).
IMP_BASELINES = ("rpimp", "npimp")
CONV_TYPES = ("gcn", "gin")
#: ``val``: test accuracy at the best validation epoch; ``test_max``: the best test epoch
#: (the official code's choice, optimistic).
SELECTIONS = ("val", "test_max")


@dataclasses.dataclass(frozen=True)
class ICPGSettings:
    """The ``icpg`` section.

    The task kind (inductive graph classification on a TU set, transductive node classification
    on Cora/CiteSeer/PubMed) is inferred from ``data.name``.
    """

    rounds: int = setting(20, min=0, help="co-pruning rounds after the dense round 0")
    edge_rate: float = setting(0.05, min=0.0, max=1.0,
                               help="fraction of each graph's current edges pruned per round")
    weight_rate: float = setting(0.2, min=0.0, max=1.0,
                                 help="fraction of the remaining prunable weights pruned per round")
    weight_scope: str = setting(
        "global", choices=("global", "layer"),
        help="weight ranking: global over all layers (official) or per layer")
    mask_epochs: int = setting(100, min=1, help="epochs of joint GNN + masker training per round")
    eval_epochs: int = setting(100, min=1, help="epochs of ticket retraining per round")
    lr: float = setting(1e-3, min=0.0, help="Adam lr of the GNN (graph tasks)")
    masker_lr: float = setting(1e-2, min=0.0, help="Adam lr of the AutoMasker (graph tasks)")
    weight_decay: float = setting(0.0, min=0.0, help="Adam weight decay (graph tasks)")
    batch_size: int = setting(128, min=1, help="graphs per batch")
    hidden: int = setting(128, min=1, help="GNN width (graph tasks)")
    masker_hidden: int = setting(64, min=1, help="AutoMasker width (graph tasks)")
    layers: int = setting(3, min=1, help="propagating GNN layers of classifier and masker")
    conv: str = setting("gcn", choices=CONV_TYPES, help="classifier convolution")
    masker_conv: str = setting("gcn", choices=CONV_TYPES, help="AutoMasker convolution")
    max_degree: int = setting(100, min=1,
                              help="one-hot degree feature cap (the official 'odeg100')")
    folds: int = setting(10, min=2, help="stratified cross-validation folds (TU sets)")
    fold: int = setting(0, min=0, help="fold this trial runs (node tasks: the seed replicate)")
    grid_folds: int | None = setting(
        None, min=1, help="folds in the default trial grid (first N; null: all folds)")
    baseline: str = setting("icpg", choices=BASELINES, help="pruning this trial runs")
    baselines: tuple[str, ...] = setting(("icpg", "random"), choices=BASELINES,
                                         help="pruning methods in the default trial grid")
    selection: str = setting(
        "val", choices=SELECTIONS,
        help="epoch selection: val, or test_max (official code; optimistic)")
    cv_seed: int = setting(12345, min=0, help="StratifiedKFold shuffle seed (official: 12345)")
    max_graphs_per_epoch: int | None = setting(
        None, min=1, help="cap on training graphs per epoch (seeded subset; null: all)")
    max_eval_graphs: int | None = setting(
        None, min=1, help="cap on validation/test graphs scored per epoch (null: all)")
    threads: int = setting(1, min=1, help="torch intra-op threads of a trial")
    # Transductive node classification (Cora/CiteSeer/PubMed), official NodeClassification settings.
    node_hidden: int = setting(512, min=1, help="2-layer GCN width (node tasks)")
    node_masker_hidden: int = setting(128, min=1, help="2-layer masker GCN width (node tasks)")
    node_dropout: float = setting(0.5, min=0.0, max=1.0, help="GCN dropout (node tasks)")
    node_lr: float = setting(0.01, min=0.0, help="Adam lr of the GCN (node tasks)")
    node_weight_decay: float = setting(5e-4, min=0.0, help="GCN weight decay (node tasks)")
    node_masker_lr: float = setting(0.01, min=0.0, help="Adam lr of the masker (node tasks)")
    node_masker_weight_decay: float = setting(5e-6, min=0.0, help="masker weight decay (node)")
    ugs_edge_l1: float = setting(1e-2, min=0.0, help="UGS: L1 coefficient s1 on the edge mask")
    ugs_weight_l1: float = setting(1e-2, min=0.0, help="UGS: L1 coefficient s2 on weight masks")

    def __post_init__(self) -> None:
        if self.fold >= self.folds:
            raise ValueError(f"fold {self.fold} must be below folds {self.folds} (folds are 0-based)")
        if self.grid_folds is not None and self.grid_folds > self.folds:
            raise ValueError(f"grid_folds {self.grid_folds} exceeds folds {self.folds}")
        if not self.baselines:
            raise ValueError("baselines must name at least one pruning method")
