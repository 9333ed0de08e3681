"""ICPG trials: one (fold, baseline) of iterative co-pruning, one step per round.

Step 0 trains and evaluates the dense network (round 0). Step k >= 1 runs round k:

* ``icpg`` on graph classification (inductive; official ``TUDataset/main_imp.py``):
  joint training of the classifier (rewound to its initial weights, under the current weight
  mask) and the AutoMasker (rewound to its initial weights), the masker's soft scores as edge
  weights; global magnitude pruning of ``weight_rate`` of the live weights of the final-epoch
  classifier; hard pruning of ``floor(edge_rate * live edges)`` of EVERY graph (training and
  held-out alike) by the best masker's scores; rewinding to the initial weights under the new
  mask; retraining on the pruned graphs; evaluation.
* ``random``: the same schedule with random edges and random weights (official ``rprp``).
* ``rpimp`` / ``npimp`` (official ablations): no masker; the weights are magnitude-pruned from
  the previous round's retrained ticket at its selected epoch (classic iterative magnitude
  pruning), the edges pruned at random (``rpimp``) or not at all (``npimp``).
* ``icpg`` / ``random`` / ``ugs`` on Cora/CiteSeer (transductive, public split); ``ugs`` learns
  soft masks on edges and weights with L1 penalties (VITA-Group/Unified-LTH-GNN).

Randomness is explicit: the initial weights come from ``(seed, fold)`` (shared by all baselines
of a fold, so round 0 is the same dense run), and every step reseeds torch from
``(seed, fold, baseline, round)``. A checkpoint (:meth:`state_dict`) therefore holds data only:
initial weights, weight masks, the per-graph kept-edge mask and the round; a trial restored from
it continues bit for bit like one that never stopped.

Why one module of ~620 lines: the graph and node trials share the round structure and the
checkpointed state (initial weights, masks, kept edges, RNG) that exact resume depends on;
models, pruning, graph loading and settings are in their own modules.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from prunesearch.methods.errors import RunStateError
from prunesearch.methods.icpg.graphs import (
    GraphSet,
    NodeGraph,
    cv_split,
    make_batch,
)
from prunesearch.methods.icpg.models import (
    AutoMasker,
    GraphClassifier,
    NodeClassifier,
    NodeMasker,
    prunable_weights,
)
from prunesearch.methods.icpg.pruning import (
    apply_weight_masks,
    dense_masks,
    magnitude_prune,
    nominal_sparsity,
    prune_edges,
    random_prune,
    score_prune,
    weight_sparsity,
)
from prunesearch.methods.icpg.settings import BASELINES, IMP_BASELINES, ICPGSettings

__all__ = ["GraphTrial", "NodeTrial"]

_STATE_FORMAT = "icpg-trial-v1"
_EVAL_BATCH = 512


@contextlib.contextmanager
def _seeded(seed: int, threads: int) -> Iterator[torch.Generator]:
    """Fork torch's global RNG, seed it, fix the thread count; yield a generator seeded alike."""
    previous = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(threads)
        try:
            yield torch.Generator().manual_seed(seed)
        finally:
            torch.set_num_threads(previous)


def _derive_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def _clone_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class _Selection:
    """Tracks the eval-phase epochs and picks the reported one (``val`` or ``test_max``)."""

    def __init__(self, selection: str = "val", model: nn.Module | None = None) -> None:
        self.epochs: list[tuple[float, float, float]] = []  # (val_acc, val_loss, test_acc)
        self._selection = selection
        self._model = model
        #: The weights of ``model`` at the selected epoch so far (``model`` given only).
        self.selected_state: dict[str, torch.Tensor] | None = None
        self._best: int | None = None

    def _key(self, i: int, selection: str) -> tuple[float, ...]:
        """Epoch ``i``'s rank under ``selection``: smaller is better (ties: the earlier epoch).
        ``val``: highest validation accuracy, then the lower loss; ``test_max``: best test."""
        val_acc, val_loss, test_acc = self.epochs[i]
        return (-val_acc, val_loss) if selection == "val" else (-test_acc,)

    def _best_epoch(self, selection: str) -> int:
        return min(range(len(self.epochs)), key=lambda i: (*self._key(i, selection), i))

    def add(self, val_acc: float, val_loss: float, test_acc: float) -> None:
        self.epochs.append((val_acc, val_loss, test_acc))
        i = len(self.epochs) - 1
        selection = self._selection
        if self._best is None or self._key(i, selection) < self._key(self._best, selection):
            self._best = i
            if self._model is not None:
                self.selected_state = _clone_state(self._model)

    def metrics(self, selection: str) -> dict[str, float]:
        best_val, best_test = self._best_epoch("val"), self._best_epoch("test_max")
        chosen = best_val if selection == "val" else best_test
        return {
            "val_acc": self.epochs[best_val][0],
            "val_loss": self.epochs[best_val][1],
            "test_acc": self.epochs[chosen][2],
            "test_acc_at_best_val": self.epochs[best_val][2],
            "test_acc_max": self.epochs[best_test][2],
            "best_epoch": chosen + 1,
        }


class _TrialBase:
    """Bookkeeping shared by graph and node trials: rounds, seeds, masks, checkpoints."""

    kind = ""

    def __init__(self, settings: ICPGSettings, *, seed: int, dataset: str) -> None:
        self.settings = settings
        self.seed = int(seed)
        self.dataset = dataset
        self._round = 0
        self._baseline_index = BASELINES.index(settings.baseline)
        # IMP baselines: the retrained ticket at its selected epoch, which the next round prunes.
        self._trained: dict[str, torch.Tensor] | None = None

    # Trial protocol ------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self._round > self.settings.rounds

    @property
    def completed_steps(self) -> int:
        return self._round

    def step(self) -> dict[str, Any]:
        if self.done:
            raise RuntimeError("the trial has run all its rounds")
        start = time.perf_counter()
        round_index = self._round
        # Round 0 (dense) does not depend on the baseline: every baseline of a fold shares it.
        baseline_part = 0 if round_index == 0 else self._baseline_index + 1
        seed = _derive_seed(self.seed, self.settings.fold, baseline_part, round_index)
        with _seeded(seed, self.settings.threads) as generator:
            metrics = self._dense_round(generator) if round_index == 0 else \
                self._prune_round(generator)
        self._round += 1
        s = self.settings
        return {
            "round": round_index,
            "baseline": s.baseline,
            "fold": s.fold,
            "dataset": self.dataset,
            "selection": s.selection,
            **metrics,
            "weight_sparsity_nominal": nominal_sparsity(s.weight_rate, round_index),
            "graph_sparsity_nominal": nominal_sparsity(s.edge_rate, round_index),
            "wall_s": time.perf_counter() - start,
        }

    def final(self) -> dict[str, Any] | None:
        return None  # ICPG's tickets are GNNs, not CNN latency-front members

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": _STATE_FORMAT,
            "kind": self.kind,
            "dataset": self.dataset,
            "seed": self.seed,
            "fold": self.settings.fold,
            "baseline": self.settings.baseline,
            "completed_steps": self._round,
            "init_classifier": {k: v.clone() for k, v in self._init_classifier.items()},
            "init_masker": {k: v.clone() for k, v in self._init_masker.items()},
            "weight_masks": {k: v.clone() for k, v in self.weight_masks.items()},
            "edge_alive": self.edge_alive.clone(),
            **({"trained_classifier": {k: v.clone() for k, v in self._trained.items()}}
               if self._trained is not None else {}),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        expected = {"format": _STATE_FORMAT, "kind": self.kind, "dataset": self.dataset,
                    "seed": self.seed, "fold": self.settings.fold,
                    "baseline": self.settings.baseline}
        for key, value in expected.items():
            if state.get(key) != value:
                raise RunStateError(f"ICPG checkpoint has {key}={state.get(key)!r}, but this trial "
                                    f"has {value!r}: it belongs to another trial or version")
        alive = torch.as_tensor(state["edge_alive"], dtype=torch.bool)
        if alive.shape != self.edge_alive.shape:
            raise RunStateError(f"ICPG checkpoint holds {alive.numel()} edges, the dataset "
                                f"{self.dataset} has {self.edge_alive.numel()}")
        self._init_classifier = {k: v.clone() for k, v in state["init_classifier"].items()}
        self._init_masker = {k: v.clone() for k, v in state["init_masker"].items()}
        self.weight_masks = {k: torch.as_tensor(v, dtype=torch.bool).clone()
                             for k, v in state["weight_masks"].items()}
        self.edge_alive = alive.clone()
        self._round = int(state["completed_steps"])
        trained = state.get("trained_classifier")
        if self.settings.baseline in IMP_BASELINES and self._round > 0 and trained is None:
            raise RunStateError(f"ICPG checkpoint of a {self.settings.baseline} trial lacks the "
                                f"trained ticket its next round prunes from")
        self._trained = {k: v.clone() for k, v in trained.items()} if trained else None

    # Shared helpers ------------------------------------------------------------------------
    def _init_models(self, classifier_factory, masker_factory) -> None:
        with _seeded(_derive_seed(self.seed, self.settings.fold, 999), 1):
            classifier, masker = classifier_factory(), masker_factory()
        self._init_classifier = _clone_state(classifier)
        self._init_masker = _clone_state(masker)
        self.weight_masks = dense_masks(classifier)

    def _rewound_classifier(self, masks: Mapping[str, torch.Tensor]) -> nn.Module:
        """The classifier at its initial weights under ``masks`` (lottery-ticket rewinding)."""
        model = self._make_classifier()
        model.load_state_dict(self._init_classifier)
        apply_weight_masks(model, masks)
        return model

    def _imp_masks(self) -> dict[str, torch.Tensor]:
        """The next weight masks of an IMP baseline: magnitude pruning of the trained ticket."""
        if self._trained is None:
            raise RuntimeError("an IMP round needs the previous round's trained ticket")
        model = self._make_classifier()
        model.load_state_dict(self._trained)
        return magnitude_prune(model, self.weight_masks, self.settings.weight_rate,
                               scope=self.settings.weight_scope)

    def _selection_record(self, classifier: nn.Module) -> _Selection:
        keep = self.settings.baseline in IMP_BASELINES
        return _Selection(self.settings.selection, classifier if keep else None)

    def _keep_trained(self, record: _Selection) -> None:
        if self.settings.baseline in IMP_BASELINES:
            self._trained = record.selected_state

    def _rewound_masker(self) -> nn.Module:
        masker = self._make_masker()
        masker.load_state_dict(self._init_masker)
        return masker

    def _make_classifier(self) -> nn.Module:
        raise NotImplementedError

    def _make_masker(self) -> nn.Module:
        raise NotImplementedError

    def _dense_round(self, generator: torch.Generator) -> dict[str, Any]:
        raise NotImplementedError

    def _prune_round(self, generator: torch.Generator) -> dict[str, Any]:
        raise NotImplementedError


class GraphTrial(_TrialBase):
    """ICPG (or random pruning) on one fold of a graph-classification dataset.

    Args:
        settings: The ``icpg`` section (``fold`` and ``baseline`` pick the trial).
        graphs: The dataset (:func:`~prunesearch.methods.icpg.graphs.load_graph_set`).
        seed: The run seed.
    """

    kind = "graph"

    def __init__(self, settings: ICPGSettings, graphs: GraphSet, *, seed: int) -> None:
        if settings.baseline == "ugs":
            raise ValueError("icpg.baseline 'ugs' is for the transductive node tasks "
                             "(cora, citeseer); use icpg or random on graph datasets")
        super().__init__(settings, seed=seed, dataset=graphs.name)
        self.graphs = graphs
        self.train_ids, self.val_ids, self.test_ids = cv_split(
            graphs.y, folds=settings.folds, fold=settings.fold, seed=settings.cv_seed)
        self.edge_graph = graphs.edge_graph
        self.edge_alive = torch.ones(graphs.num_edges, dtype=torch.bool)
        eval_cap = settings.max_eval_graphs
        if eval_cap is not None:
            cap_gen = torch.Generator().manual_seed(_derive_seed(seed, settings.fold, 7))
            self.val_ids = self._capped(self.val_ids, eval_cap, cap_gen)
            self.test_ids = self._capped(self.test_ids, eval_cap, cap_gen)
        self._init_models(self._make_classifier, self._make_masker)

    @staticmethod
    def _capped(ids: torch.Tensor, cap: int, generator: torch.Generator) -> torch.Tensor:
        if ids.numel() <= cap:
            return ids
        return torch.sort(ids[torch.randperm(ids.numel(), generator=generator)[:cap]]).values

    def _make_classifier(self) -> GraphClassifier:
        s = self.settings
        return GraphClassifier(self.graphs.num_features, self.graphs.num_classes,
                               hidden=s.hidden, layers=s.layers, conv=s.conv)

    def _make_masker(self) -> AutoMasker:
        s = self.settings
        return AutoMasker(self.graphs.num_features, hidden=s.masker_hidden, layers=s.layers,
                          conv=s.masker_conv)

    # Batching --------------------------------------------------------------------------------
    def _train_chunks(self, generator: torch.Generator) -> list[torch.Tensor]:
        order = self.train_ids[torch.randperm(self.train_ids.numel(), generator=generator)]
        cap = self.settings.max_graphs_per_epoch
        if cap is not None:
            order = order[:cap]
        size = self.settings.batch_size
        chunks = list(torch.split(order, size))
        # Graph-level BatchNorm cannot train on one graph: fold a last singleton into the
        # previous batch.
        if len(chunks) > 1 and chunks[-1].numel() == 1:
            chunks[-2:] = [torch.cat(chunks[-2:])]
        return [c for c in chunks if c.numel() > 1]

    def _train_epoch(self, classifier: GraphClassifier, optimizer: torch.optim.Optimizer,
                     generator: torch.Generator, masks: Mapping[str, torch.Tensor],
                     masker: AutoMasker | None = None) -> None:
        classifier.train()
        if masker is not None:
            masker.train()
        for ids in self._train_chunks(generator):
            batch = make_batch(self.graphs, ids, self.edge_alive)
            edge_weight = masker(batch.x, batch.edge_index) if masker is not None else None
            out = classifier(batch.x, batch.edge_index, batch.batch, batch.num_graphs, edge_weight)
            loss = F.nll_loss(out, batch.y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            apply_weight_masks(classifier, masks)

    @torch.no_grad()
    def _evaluate(self, classifier: GraphClassifier, ids: torch.Tensor,
                  edge_alive: torch.Tensor) -> tuple[float, float]:
        """Accuracy and mean NLL of ``classifier`` (no soft mask) on graphs ``ids``."""
        classifier.eval()
        correct, loss = 0, 0.0
        for chunk in torch.split(ids, _EVAL_BATCH):
            batch = make_batch(self.graphs, chunk, edge_alive)
            out = classifier(batch.x, batch.edge_index, batch.batch, batch.num_graphs)
            correct += int((out.argmax(1) == batch.y).sum())
            loss += float(F.nll_loss(out, batch.y, reduction="sum"))
        return correct / ids.numel(), loss / ids.numel()

    @torch.no_grad()
    def _score_edges(self, masker: AutoMasker, ids: torch.Tensor) -> torch.Tensor:
        """Masker scores of the live edges of graphs ``ids`` (``+inf`` elsewhere)."""
        masker.eval()
        scores = torch.full((self.graphs.num_edges,), float("inf"))
        for chunk in torch.split(ids, _EVAL_BATCH):
            batch = make_batch(self.graphs, chunk, self.edge_alive)
            scores[batch.edge_ids] = masker(batch.x, batch.edge_index)
        return scores

    def _pruned_alive(self, scores: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """``edge_alive`` after pruning the graphs ``ids`` (only those) by ``scores``."""
        in_ids = torch.zeros(self.graphs.num_graphs, dtype=torch.bool)
        in_ids[ids] = True
        selected = self.edge_alive & in_ids[self.edge_graph]
        pruned = prune_edges(selected, self.edge_graph, scores, self.settings.edge_rate,
                             self.graphs.num_graphs)
        return (self.edge_alive & ~selected) | pruned

    def _retrain_and_evaluate(self, generator: torch.Generator) -> dict[str, Any]:
        """Train the rewound ticket on the current graphs for ``eval_epochs``; evaluate each."""
        s = self.settings
        classifier = self._rewound_classifier(self.weight_masks)
        optimizer = torch.optim.Adam(classifier.parameters(), lr=s.lr, weight_decay=s.weight_decay)
        record = self._selection_record(classifier)
        for _ in range(s.eval_epochs):
            self._train_epoch(classifier, optimizer, generator, self.weight_masks)
            val_acc, val_loss = self._evaluate(classifier, self.val_ids, self.edge_alive)
            test_acc, _ = self._evaluate(classifier, self.test_ids, self.edge_alive)
            record.add(val_acc, val_loss, test_acc)
        self._keep_trained(record)
        kept = self.edge_alive
        test_edges = torch.zeros(self.graphs.num_graphs, dtype=torch.bool)
        test_edges[self.test_ids] = True
        test_edges = test_edges[self.edge_graph]
        return {
            **record.metrics(s.selection),
            "weight_sparsity": weight_sparsity(classifier),
            "graph_sparsity": 1.0 - float(kept.sum()) / kept.numel(),
            "graph_sparsity_test": 1.0 - float(kept[test_edges].sum()) / max(
                int(test_edges.sum()), 1),
        }

    # Rounds ----------------------------------------------------------------------------------
    def _dense_round(self, generator: torch.Generator) -> dict[str, Any]:
        return self._retrain_and_evaluate(generator)

    def _prune_round(self, generator: torch.Generator) -> dict[str, Any]:
        s = self.settings
        all_ids = torch.arange(self.graphs.num_graphs)
        extra: dict[str, Any] = {}
        scores: torch.Tensor | None
        if s.baseline == "random":
            new_masks = random_prune(self.weight_masks, s.weight_rate, generator=generator,
                                     scope=s.weight_scope)
            scores = torch.rand(self.graphs.num_edges, generator=generator)
        elif s.baseline in IMP_BASELINES:
            new_masks = self._imp_masks()
            scores = (torch.rand(self.graphs.num_edges, generator=generator)
                      if s.baseline == "rpimp" else None)
        else:
            classifier = self._rewound_classifier(self.weight_masks)
            masker = self._rewound_masker()
            optimizer = torch.optim.Adam(
                [{"params": classifier.parameters(), "lr": s.lr},
                 {"params": masker.parameters(), "lr": s.masker_lr}],
                weight_decay=s.weight_decay)
            select_ids = self.val_ids if s.selection == "val" else self.test_ids
            best_acc, best_masker = -1.0, _clone_state(masker)
            for _ in range(s.mask_epochs):
                self._train_epoch(classifier, optimizer, generator, self.weight_masks, masker)
                # The masker is judged as it will be used: hard-prune the held-out graphs with
                # it and run the classifier on them without a soft mask.
                alive = self._pruned_alive(self._score_edges(masker, select_ids), select_ids)
                acc, _ = self._evaluate(classifier, select_ids, alive)
                if acc > best_acc:
                    best_acc, best_masker = acc, _clone_state(masker)
            # Weights are pruned from the final-epoch classifier (as the official code does).
            new_masks = magnitude_prune(classifier, self.weight_masks, s.weight_rate,
                                        scope=s.weight_scope)
            masker.load_state_dict(best_masker)
            scores = self._score_edges(masker, all_ids)
            extra["masker_select_acc"] = best_acc
        # Every graph is pruned, the held-out ones included: the inductive part.
        if scores is not None:
            self.edge_alive = prune_edges(self.edge_alive, self.edge_graph, scores, s.edge_rate,
                                          self.graphs.num_graphs)
        self.weight_masks = new_masks
        return {**self._retrain_and_evaluate(generator), **extra}


class NodeTrial(_TrialBase):
    """ICPG, random pruning or UGS on a transductive node-classification graph (public split).

    ``fold`` is the seed replicate (the split is fixed). The edge mask covers the directed
    edges of the one graph; ``floor(edge_rate * live edges)`` are pruned per round.

    Args:
        settings: The ``icpg`` section.
        graph: The dataset (:func:`~prunesearch.methods.icpg.graphs.load_node_graph`).
        seed: The run seed.
    """

    kind = "node"

    def __init__(self, settings: ICPGSettings, graph: NodeGraph, *, seed: int) -> None:
        super().__init__(settings, seed=seed, dataset=graph.name)
        self.graph = graph
        self.edge_alive = torch.ones(graph.num_edges, dtype=torch.bool)
        self._edge_graph = torch.zeros(graph.num_edges, dtype=torch.long)
        self._init_models(self._make_classifier, self._make_masker)

    def _make_classifier(self) -> NodeClassifier:
        s = self.settings
        return NodeClassifier(self.graph.x.shape[1], self.graph.num_classes,
                              hidden=s.node_hidden, dropout=s.node_dropout, conv=s.conv)

    def _make_masker(self) -> NodeMasker:
        s = self.settings
        return NodeMasker(self.graph.x.shape[1], hidden=s.node_masker_hidden, conv=s.masker_conv)

    def _edges(self) -> torch.Tensor:
        return self.graph.edge_index[:, self.edge_alive]

    def _loss(self, logits: torch.Tensor) -> torch.Tensor:
        g = self.graph
        return F.cross_entropy(logits[g.train_mask], g.y[g.train_mask])

    @torch.no_grad()
    def _accuracies(self, logits: torch.Tensor) -> tuple[float, float, float]:
        g = self.graph
        pred = logits.argmax(1)
        val_loss = float(F.cross_entropy(logits[g.val_mask], g.y[g.val_mask]))
        val = float((pred[g.val_mask] == g.y[g.val_mask]).float().mean())
        test = float((pred[g.test_mask] == g.y[g.test_mask]).float().mean())
        return val, val_loss, test

    def _optimizer(self, classifier: nn.Module,
                   masker: nn.Module | None = None) -> torch.optim.Optimizer:
        s = self.settings
        groups = [{"params": classifier.parameters(), "lr": s.node_lr,
                   "weight_decay": s.node_weight_decay}]
        if masker is not None:
            groups.append({"params": masker.parameters(), "lr": s.node_masker_lr,
                           "weight_decay": s.node_masker_weight_decay})
        return torch.optim.Adam(groups)

    def _retrain_and_evaluate(self) -> dict[str, Any]:
        classifier = self._rewound_classifier(self.weight_masks)
        optimizer = self._optimizer(classifier)
        edges = self._edges()
        record = self._selection_record(classifier)
        for _ in range(self.settings.eval_epochs):
            classifier.train()
            loss = self._loss(classifier(self.graph.x, edges))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            apply_weight_masks(classifier, self.weight_masks)
            classifier.eval()
            with torch.no_grad():
                record.add(*self._accuracies(classifier(self.graph.x, edges)))
        self._keep_trained(record)
        return {
            **record.metrics(self.settings.selection),
            "weight_sparsity": weight_sparsity(classifier),
            "graph_sparsity": 1.0 - float(self.edge_alive.sum()) / self.edge_alive.numel(),
        }

    def _dense_round(self, generator: torch.Generator) -> dict[str, Any]:
        return self._retrain_and_evaluate()

    def _prune_round(self, generator: torch.Generator) -> dict[str, Any]:
        s = self.settings
        live = torch.nonzero(self.edge_alive).view(-1)
        live_scores = {"random": self._random_scores, "icpg": self._icpg_scores,
                       "ugs": self._ugs_scores, "rpimp": self._imp_scores,
                       "npimp": self._imp_scores}[s.baseline]
        edge_scores, new_masks = live_scores(generator)
        if edge_scores is not None:
            scores = torch.full((self.graph.num_edges,), float("inf"))
            scores[live] = edge_scores
            self.edge_alive = prune_edges(self.edge_alive, self._edge_graph, scores, s.edge_rate,
                                          1)
        self.weight_masks = new_masks
        return self._retrain_and_evaluate()

    def _random_scores(self, generator: torch.Generator):
        s = self.settings
        new_masks = random_prune(self.weight_masks, s.weight_rate, generator=generator,
                                 scope=s.weight_scope)
        return torch.rand(int(self.edge_alive.sum()), generator=generator), new_masks

    def _imp_scores(self, generator: torch.Generator):
        new_masks = self._imp_masks()
        if self.settings.baseline == "npimp":
            return None, new_masks
        return torch.rand(int(self.edge_alive.sum()), generator=generator), new_masks

    def _icpg_scores(self, generator: torch.Generator):
        # Official Cora code: weights pruned from the best-validation classifier, edges scored
        # by the final masker.
        classifier = self._rewound_classifier(self.weight_masks)
        masker = self._rewound_masker()
        optimizer = self._optimizer(classifier, masker)
        edges = self._edges()
        best_val, best_state = -1.0, _clone_state(classifier)
        for _ in range(self.settings.mask_epochs):
            classifier.train()
            masker.train()
            loss = self._loss(classifier(self.graph.x, edges, masker(self.graph.x, edges)))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            apply_weight_masks(classifier, self.weight_masks)
            classifier.eval()
            masker.eval()
            with torch.no_grad():
                val, _, _ = self._accuracies(
                    classifier(self.graph.x, edges, masker(self.graph.x, edges)))
            if val > best_val:
                best_val, best_state = val, _clone_state(classifier)
        classifier.load_state_dict(best_state)
        new_masks = magnitude_prune(classifier, self.weight_masks, self.settings.weight_rate,
                                    scope=self.settings.weight_scope)
        masker.eval()
        with torch.no_grad():
            return masker(self.graph.x, edges), new_masks

    def _ugs_scores(self, generator: torch.Generator):
        # UGS: trainable soft masks on the live edges and on every prunable weight (all ones at
        # the start), L1 penalties s1/s2, masks taken at the best validation epoch.
        s = self.settings
        classifier = self._rewound_classifier(self.weight_masks)
        edges = self._edges()
        edge_mask = nn.Parameter(torch.ones(edges.shape[1]))
        weight_soft = {n: nn.Parameter(torch.ones_like(p))
                       for n, p in prunable_weights(classifier).items()}
        optimizer = torch.optim.Adam([*classifier.parameters(), edge_mask, *weight_soft.values()],
                                     lr=s.node_lr, weight_decay=s.node_weight_decay)
        params = prunable_weights(classifier)

        def forward() -> torch.Tensor:
            masked = {n: params[n] * weight_soft[n] * self.weight_masks[n] for n in params}
            return torch.func.functional_call(classifier, masked, (self.graph.x, edges, edge_mask))

        best_val = -1.0
        best_edge = edge_mask.detach().clone()
        best_weight = {n: m.detach().clone() for n, m in weight_soft.items()}
        for _ in range(s.mask_epochs):
            classifier.train()
            loss = self._loss(forward())
            loss = loss + s.ugs_edge_l1 * edge_mask.abs().sum()
            loss = loss + s.ugs_weight_l1 * sum(m.abs().sum() for m in weight_soft.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            apply_weight_masks(classifier, self.weight_masks)
            classifier.eval()
            with torch.no_grad():
                val, _, _ = self._accuracies(forward())
            if val > best_val:
                best_val = val
                best_edge = edge_mask.detach().clone()
                best_weight = {n: m.detach().clone() for n, m in weight_soft.items()}
        new_masks = score_prune(self.weight_masks, {n: m.abs() for n, m in best_weight.items()},
                                s.weight_rate, scope=s.weight_scope)
        return best_edge.abs(), new_masks

