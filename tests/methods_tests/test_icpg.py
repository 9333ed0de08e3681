"""ICPG: edge scoring of unseen graphs, per-graph edge pruning, the weight schedule, rewinding,
checkpoint/restore, the node-task baselines, the summary and bad input. Tiny synthetic graphs
and one or two epochs keep every test to seconds; one test reads MUTAG from PRUNESEARCH_DATA."""

from __future__ import annotations

import dataclasses
import io
import math
import subprocess
import sys
import types
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from prunesearch.methods.errors import DataNotFoundError, PrunesearchError
from prunesearch.methods.icpg import ICPG_METHOD, ICPGSettings
from prunesearch.methods.icpg.graphs import GraphSet, NodeGraph, make_batch, node_features
from prunesearch.methods.icpg.models import AutoMasker, GraphClassifier, prunable_weights
from prunesearch.methods.icpg.pruning import magnitude_prune, prune_edges
from prunesearch.methods.icpg.trial import GraphTrial, NodeTrial
from prunesearch.methods.settings import DataSettings
from prunesearch.methods.trial import Trial
from prunesearch.search.settings import ConfigError, build_section

TINY = {"hidden": 16, "masker_hidden": 8, "mask_epochs": 1, "eval_epochs": 2, "batch_size": 8,
        "folds": 4, "threads": 1}


def _random_graph(nodes: int, extra_edges: int, generator: torch.Generator) -> torch.Tensor:
    """A connected undirected graph (a path plus random chords), both directions stored."""
    src = list(range(nodes - 1))
    dst = list(range(1, nodes))
    for _ in range(extra_edges):
        a, b = torch.randint(0, nodes, (2,), generator=generator).tolist()
        if a != b:
            src.append(a)
            dst.append(b)
    e = torch.tensor([src, dst])
    return torch.cat([e, e.flip(0)], dim=1)


def synthetic_graphs(num_graphs: int = 24, seed: int = 0) -> GraphSet:
    """Two classes that differ in density: enough structure for the pipeline, tiny to train."""
    gen = torch.Generator().manual_seed(seed)
    xs, edges, node_ptr, edge_ptr, ys = [], [], [0], [0], []
    for g in range(num_graphs):
        label = g % 2
        nodes = int(torch.randint(8, 16, (1,), generator=gen))
        e = _random_graph(nodes, extra_edges=nodes * (1 + 2 * label), generator=gen)
        xs.append(torch.nn.functional.one_hot(torch.randint(0, 3, (nodes,), generator=gen), 3))
        edges.append(e + node_ptr[-1])
        node_ptr.append(node_ptr[-1] + nodes)
        edge_ptr.append(edge_ptr[-1] + e.shape[1])
        ys.append(label)
    edge_index = torch.cat(edges, dim=1)
    x = node_features(torch.cat(xs).float(), edge_index, node_ptr[-1], max_degree=10)
    return GraphSet(name="SYNTH", x=x, y=torch.tensor(ys), node_ptr=torch.tensor(node_ptr),
                    edge_index=edge_index, edge_ptr=torch.tensor(edge_ptr), num_classes=2)


def settings(**changes) -> ICPGSettings:
    return ICPGSettings(**{**TINY, **changes})


def _comparable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "wall_s"}


def test_masker_scores_every_edge_of_an_unseen_graph():
    graphs = synthetic_graphs()
    masker = AutoMasker(graphs.num_features, hidden=8)
    masker.eval()
    gen = torch.Generator().manual_seed(5)
    unseen = _random_graph(11, 20, gen)
    x = node_features(torch.nn.functional.one_hot(torch.randint(0, 3, (11,)), 3).float(), unseen,
                      11, max_degree=10)
    scores = masker(x, unseen)
    assert scores.shape == (unseen.shape[1],)
    assert torch.all((scores > 0) & (scores < 1))
    # The scores depend on the graph: another wiring of the same nodes scores differently.
    other = _random_graph(11, 20, gen)
    assert not torch.allclose(masker(x, other)[:5], scores[:5])


def test_held_out_graphs_are_pruned_by_the_masker():
    graphs = synthetic_graphs()
    trial = GraphTrial(settings(rounds=1, edge_rate=0.2), graphs, seed=0)
    before = torch.bincount(trial.edge_graph, minlength=graphs.num_graphs)
    trial.step()
    metrics = trial.step()
    after = torch.bincount(trial.edge_graph[trial.edge_alive], minlength=graphs.num_graphs)
    removed = before - after
    expected = torch.tensor([math.floor(Fraction("0.2") * int(c)) for c in before])
    assert torch.equal(removed, expected)
    assert torch.all(removed[trial.test_ids] > 0)  # graphs the masker never trained on
    assert metrics["graph_sparsity_test"] > 0
    assert metrics["graph_sparsity"] == pytest.approx(1 - float(after.sum()) / before.sum())


def test_pruning_removes_floor_of_the_fraction_per_graph_lowest_scores_first():
    gen = torch.Generator().manual_seed(1)
    counts = torch.tensor([0, 1, 3, 10, 19, 20, 21, 57, 100])
    edge_graph = torch.repeat_interleave(torch.arange(len(counts)), counts)
    scores = torch.rand(edge_graph.numel(), generator=gen)
    alive = torch.ones(edge_graph.numel(), dtype=torch.bool)
    for rate in ("0.05", "0.29", "0.5"):
        new_alive = prune_edges(alive, edge_graph, scores, float(rate), len(counts))
        kept = torch.bincount(edge_graph[new_alive], minlength=len(counts))
        live = torch.bincount(edge_graph[alive], minlength=len(counts))
        expected = torch.tensor([int(c) - math.floor(Fraction(rate) * int(c)) for c in live])
        assert torch.equal(kept, expected), rate
        for g in range(len(counts)):  # every dropped edge scores below every kept one
            mine = edge_graph == g
            dropped, stays = scores[mine & alive & ~new_alive], scores[mine & new_alive]
            if dropped.numel() and stays.numel():
                assert dropped.max() <= stays.min()
        alive = new_alive  # the next rate applies to the current edges: cumulative


def test_weight_sparsity_after_k_rounds_follows_the_schedule():
    graphs = synthetic_graphs()
    for baseline in ("icpg", "random"):
        trial = GraphTrial(settings(rounds=3, eval_epochs=1, baseline=baseline), graphs, seed=0)
        total = sum(p.numel() for p in prunable_weights(trial._make_classifier()).values())
        while not trial.done:
            metrics = trial.step()
            k = metrics["round"]
            assert metrics["weight_sparsity_nominal"] == pytest.approx(1 - 0.8**k)
            # Each round rounds its count to a whole weight.
            assert abs(metrics["weight_sparsity"] - (1 - 0.8**k)) <= (k * 0.5 + 1) / total
            assert metrics["graph_sparsity_nominal"] == pytest.approx(1 - 0.95**k)


def test_magnitude_pruning_removes_the_smallest_live_weights_globally():
    model = GraphClassifier(5, 2, hidden=8, layers=2)
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in prunable_weights(model).items()}
    new = magnitude_prune(model, masks, 0.3)
    params = prunable_weights(model)
    pruned = torch.cat([params[n].detach().abs()[~new[n]] for n in new])
    kept = torch.cat([params[n].detach().abs()[new[n]] for n in new])
    assert pruned.max() <= kept.min()
    total = sum(m.numel() for m in masks.values())
    assert pruned.numel() == round(0.3 * total)


def test_layer_scope_prunes_every_layer_by_the_rate():
    model = GraphClassifier(5, 2, hidden=8, layers=2)
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in prunable_weights(model).items()}
    for _ in range(3):
        new = magnitude_prune(model, masks, 0.2, scope="layer")
        for name, mask in masks.items():
            live = int(mask.sum())
            assert int(new[name].sum()) == live - round(0.2 * live), name
        masks = new


def test_rewinding_restores_the_initial_weights_under_the_mask():
    graphs = synthetic_graphs()
    trial = GraphTrial(settings(rounds=1), graphs, seed=0)
    initial = {k: v.clone() for k, v in trial._init_classifier.items()}
    trial.step()
    trial.step()  # round 1: trains, prunes, rewinds, retrains
    rewound = trial._rewound_classifier(trial.weight_masks).state_dict()
    masks = trial.weight_masks
    assert set(masks) and all(not bool(m.all()) for m in masks.values())
    for name, value in rewound.items():
        expected = initial[name] * masks[name] if name in masks else initial[name]
        assert torch.equal(value, expected), name


def _round_trip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)  # data only: loading runs no code


@pytest.mark.parametrize("baseline", ["icpg", "random", "rpimp"])
def test_trial_restored_after_round_1_ends_like_an_uninterrupted_one(baseline):
    graphs = synthetic_graphs()
    s = settings(rounds=3, baseline=baseline, fold=1)
    uninterrupted = GraphTrial(s, graphs, seed=3)
    reference = []
    while not uninterrupted.done:
        reference.append(_comparable(uninterrupted.step()))

    first = GraphTrial(s, graphs, seed=3)
    first.step()
    first.step()
    state = _round_trip(first.state_dict())
    del first
    restored = GraphTrial(s, graphs, seed=3)
    restored.load_state_dict(state)
    assert restored.completed_steps == 2
    rest = []
    while not restored.done:
        rest.append(_comparable(restored.step()))
    assert rest[0]["round"] == 2
    assert rest == reference[2:]
    assert torch.equal(restored.edge_alive, uninterrupted.edge_alive)


@pytest.mark.parametrize("baseline", ["rpimp", "npimp"])
def test_imp_ablations_prune_the_selected_epoch_of_the_trained_ticket(baseline):
    graphs = synthetic_graphs()
    s = settings(rounds=2, eval_epochs=3, baseline=baseline)
    trial = GraphTrial(s, graphs, seed=0)
    row = trial.step()  # round 0: the dense ticket
    for _ in range(2):
        ticket = trial._make_classifier()
        ticket.load_state_dict(trial._trained)
        # The kept ticket is the selected epoch's: it scores the row's validation accuracy.
        val_acc, val_loss = trial._evaluate(ticket, trial.val_ids, trial.edge_alive)
        assert (val_acc, val_loss) == pytest.approx((row["val_acc"], row["val_loss"]))
        expected = magnitude_prune(ticket, trial.weight_masks, 0.2)
        alive_before = trial.edge_alive.clone()
        row = trial.step()  # the next round prunes exactly that ticket's smallest weights
        assert all(torch.equal(trial.weight_masks[n], expected[n]) for n in expected)
        live = torch.bincount(graphs.edge_graph[alive_before], minlength=graphs.num_graphs)
        kept = torch.bincount(graphs.edge_graph[trial.edge_alive], minlength=graphs.num_graphs)
        if baseline == "npimp":
            assert torch.equal(trial.edge_alive, alive_before) and row["graph_sparsity"] == 0
        else:
            assert torch.equal(kept, live - torch.floor(0.05 * live.double()).long())
    state = trial.state_dict()
    del state["trained_classifier"]
    with pytest.raises(PrunesearchError, match="trained ticket"):
        GraphTrial(s, graphs, seed=0).load_state_dict(state)


def test_checkpoint_of_another_trial_is_refused():
    graphs = synthetic_graphs()
    state = GraphTrial(settings(fold=0), graphs, seed=0).state_dict()
    other = GraphTrial(settings(fold=2), graphs, seed=0)
    with pytest.raises(PrunesearchError, match="fold"):
        other.load_state_dict(state)


def _synthetic_node_graph() -> NodeGraph:
    gen = torch.Generator().manual_seed(0)
    nodes = 60
    y = torch.arange(nodes) % 3
    edge_index = _random_graph(nodes, 80, gen)
    x = torch.nn.functional.one_hot(y, 3).float() + 0.5 * torch.rand(nodes, 3, generator=gen)
    masks = [torch.zeros(nodes, dtype=torch.bool) for _ in range(3)]
    masks[0][:20], masks[1][20:40], masks[2][40:] = True, True, True
    return NodeGraph(name="SYNTHNODE", x=x, y=y, edge_index=edge_index, train_mask=masks[0],
                     val_mask=masks[1], test_mask=masks[2], num_classes=3)


@pytest.mark.parametrize("baseline", ["icpg", "random", "ugs", "rpimp"])
def test_node_task_baselines_prune_edges_and_weights_on_schedule(baseline):
    graph = _synthetic_node_graph()
    s = settings(rounds=2, baseline=baseline, node_hidden=16, node_masker_hidden=8,
                 edge_rate=0.1)
    trial = NodeTrial(s, graph, seed=0)
    edges = graph.num_edges
    rows = [trial.step() for _ in range(3)]
    live = edges - math.floor(0.1 * edges)
    live -= math.floor(Fraction("0.1") * live)
    assert int(trial.edge_alive.sum()) == live
    assert rows[2]["graph_sparsity"] == pytest.approx(1 - live / edges)
    total = sum(m.numel() for m in trial.weight_masks.values())
    remaining = total
    for _ in range(2):  # each round removes round(20% of the live weights)
        remaining -= round(0.2 * remaining)
    assert rows[2]["weight_sparsity"] == pytest.approx(1 - remaining / total)
    state = _round_trip(trial.state_dict())
    restored = NodeTrial(s, graph, seed=0)
    restored.load_state_dict(state)
    assert restored.done and torch.equal(restored.edge_alive, trial.edge_alive)


def test_ugs_is_refused_on_graph_classification(tmp_path):
    with pytest.raises(ValueError, match="ugs"):
        GraphTrial(settings(baseline="ugs"), synthetic_graphs(), seed=0)


def test_summary_gives_dense_accuracy_per_round_and_last_matching_round():
    rows = []
    accuracies = {0: [0.80, 0.90], 1: [0.84, 0.86], 2: [0.76, 0.78], 3: [0.60, 0.70]}
    for round_index, accs in accuracies.items():
        for fold, acc in enumerate(accs):
            rows.append({"trial_id": f"t{fold}", "baseline": "icpg", "fold": str(fold),
                         "round": str(round_index), "test_acc": str(acc),
                         "weight_sparsity": 1 - 0.8**round_index, "selection": "val"})
            rows.append({"trial_id": f"r{fold}", "baseline": "random", "fold": fold,
                         "round": round_index, "test_acc": acc - 0.1 * (round_index > 0)})
    rows.append(dict(rows[0], test_acc="0.80"))  # a restored trial reporting round 0 again
    summary = ICPG_METHOD.summarize(rows)
    icpg = summary["baselines"]["icpg"]
    assert icpg["dense_acc_mean"] == pytest.approx(0.85)
    assert icpg["dense_acc_std"] == pytest.approx(0.05)
    assert [r["round"] for r in icpg["rounds"]] == [0, 1, 2, 3]
    assert icpg["rounds"][2]["test_acc_mean"] == pytest.approx(0.77)
    # dense - std = 0.80: round 1 (0.85) matches, round 2 (0.77) and 3 (0.65) do not.
    assert icpg["last_matching_round"] == 1
    assert summary["baselines"]["random"]["last_matching_round"] is None
    assert summary["icpg_vs_random"]["pairs"] == 2  # round 3, two folds
    assert summary["icpg_vs_random"]["mean_diff"] == pytest.approx(0.1)


def test_default_space_is_folds_by_baselines():
    config = types.SimpleNamespace(icpg=settings(folds=5, grid_folds=3,
                                                 baselines=("icpg", "random")))
    assert ICPG_METHOD.default_space(config) == {"icpg.fold": [0, 1, 2],
                                                 "icpg.baseline": ["icpg", "random"]}
    assert ICPG_METHOD.name == "icpg" and ICPG_METHOD.metric == "val_acc"
    assert ICPG_METHOD.pruning is False
    trial = GraphTrial(settings(rounds=0), synthetic_graphs(), seed=0)
    assert isinstance(trial, Trial) and trial.completed_steps == 0 and not trial.done
    trial.step()
    assert trial.done and trial.final() is None


def test_bad_settings_are_refused_with_their_reason():
    with pytest.raises(ConfigError, match="fold 4 must be below folds 4"):
        build_section(ICPGSettings, {"fold": 4, "folds": 4}, prefix="icpg")
    with pytest.raises(ConfigError, match="icpg.baseline"):
        build_section(ICPGSettings, {"baseline": "magic"}, prefix="icpg")


def test_unknown_dataset_names_the_folder_expected(tmp_path):
    config = types.SimpleNamespace(icpg=ICPGSettings(), seed=0,
                                   data=DataSettings(name="NOPE", root=str(tmp_path)))
    with pytest.raises(DataNotFoundError) as info:
        ICPG_METHOD.make_trial(config, tmp_path)
    message = str(info.value)
    assert str(tmp_path / "tu" / "NOPE" / "raw") in message
    assert "\n" not in message


def test_cli_refuses_an_unknown_dataset_with_exit_2(tmp_path, repo_root):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "prunesearch", "run", str(repo_root / "configs/icpg-mutag-smoke.yaml"),
         "--output", str(out), "--set", "data.name=NOPE", "--set", f"data.root={tmp_path}"],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path / "tu" / "NOPE" / "raw") in lines[0]
    assert not out.exists()


@pytest.mark.data
def test_mutag_trial_from_the_data_root_prunes_without_writing_there(data_root, tmp_path,
                                                                     monkeypatch):
    monkeypatch.setenv("PRUNESEARCH_CACHE", str(tmp_path / "cache"))
    config = types.SimpleNamespace(
        icpg=settings(rounds=1, max_graphs_per_epoch=32, folds=10), seed=0,
        data=DataSettings(name="MUTAG", root=str(data_root)))
    trial = ICPG_METHOD.make_trial(config, tmp_path)
    assert trial.graphs.num_graphs == 188
    assert trial.graphs.num_features == 7 + 1 + 101  # node labels + deg + odeg100
    rows = [trial.step(), trial.step()]
    assert rows[1]["weight_sparsity"] == pytest.approx(0.2, abs=1e-4)
    # MUTAG graphs hold 20-66 directed edges: every graph loses floor(5%) >= 1 edge.
    assert 0.035 < rows[1]["graph_sparsity"] < 0.05
    assert 0.0 <= rows[1]["test_acc"] <= 1.0
    assert not (data_root / "tu" / "MUTAG" / "processed").exists()


def test_batches_renumber_nodes_and_keep_only_live_edges():
    graphs = synthetic_graphs(6)
    alive = torch.ones(graphs.num_edges, dtype=torch.bool)
    alive[graphs.edge_ptr[2]:graphs.edge_ptr[2] + 4] = False
    batch = make_batch(graphs, torch.tensor([2, 0]), alive)
    n2 = int(graphs.node_ptr[3] - graphs.node_ptr[2])
    assert torch.equal(batch.x[:n2], graphs.x[graphs.node_ptr[2]:graphs.node_ptr[3]])
    e2 = int(graphs.edge_ptr[3] - graphs.edge_ptr[2]) - 4
    assert torch.equal(batch.edge_index[:, :e2], graphs.edge_index[:, batch.edge_ids[:e2]]
                       - graphs.node_ptr[2])
    assert int(batch.edge_index[:, e2:].min()) >= n2  # graph 0's edges follow graph 2's nodes
    assert batch.edge_ids.numel() == int(alive[graphs.edge_graph == 2].sum()
                                         + (graphs.edge_graph == 0).sum())


def test_settings_round_trip_through_the_job_config():
    from prunesearch.cluster.config import load_config

    config = load_config(Path(__file__).parents[2] / "configs/icpg-mutag.yaml",
                         ["icpg.fold=3", "icpg.baseline=random"])
    assert config.method == "icpg" and config.icpg.fold == 3 and config.icpg.baseline == "random"
    assert dataclasses.asdict(config.icpg)["rounds"] == 20


def test_pyg_import_does_not_print_torch_deprecation_noise():
    # PyG's import-time torch.jit.script call makes torch >= 2.11 warn in every trial's log;
    # the ICPG modules import PyG with only that message silenced.
    code = ("import warnings\n"
            "warnings.simplefilter('error')\n"
            "import prunesearch.methods.icpg.models\n"
            "import torch_geometric.datasets\n"
            "warnings.warn('still shown', UserWarning)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert "jit.script" not in proc.stderr, proc.stderr[-2000:]
    assert "UserWarning: still shown" in proc.stderr  # other warnings are not swallowed


@pytest.mark.data
def test_any_planetoid_set_by_name_loads_from_its_folder(data_root, tmp_path, monkeypatch):
    # PubMed is not in the shared data; Cora's files under PubMed's names stand in for it, so
    # the name routes to planetoid/PubMed/raw and PyG's reader (ind.pubmed.*) like the others.
    from prunesearch.methods.icpg import dataset_kind, load_node_graph

    monkeypatch.setenv("PRUNESEARCH_CACHE", str(tmp_path / "cache"))
    raw = tmp_path / "root" / "planetoid" / "PubMed" / "raw"
    with pytest.raises(DataNotFoundError, match=str(raw).replace("\\", "\\\\")):
        load_node_graph(tmp_path / "root", "pubmed")
    raw.mkdir(parents=True)
    for path in (data_root / "planetoid" / "Cora" / "raw").iterdir():
        (raw / path.name.replace("cora", "pubmed")).write_bytes(path.read_bytes())
    assert dataset_kind("PubMed") == "node"
    graph = load_node_graph(tmp_path / "root", "PubMed")
    assert graph.x.shape[0] == 2708 and int(graph.train_mask.sum()) == 140
    assert not (raw.parent / "processed").exists()  # PyG's output goes to the cache


def test_gin_option_for_classifier_and_masker_co_prunes_on_schedule():
    graphs = synthetic_graphs()
    s = settings(rounds=2, conv="gin", masker_conv="gin")
    trial = GraphTrial(s, graphs, seed=0)
    classifier = trial._make_classifier()
    # GIN's MLP weights are the prunable ones; soft edge weights reach its messages.
    total = sum(p.numel() for p in prunable_weights(classifier).values())
    assert total > 0
    b = make_batch(graphs, torch.arange(4), torch.ones(graphs.num_edges, dtype=torch.bool))
    classifier.eval()
    n = b.edge_index.shape[1]
    ones = classifier(b.x, b.edge_index, b.batch, b.num_graphs, torch.ones(n))
    halves = classifier(b.x, b.edge_index, b.batch, b.num_graphs, torch.full((n,), 0.5))
    assert not torch.allclose(ones, halves)
    masker = AutoMasker(graphs.num_features, hidden=8, conv="gin")
    scores = masker(b.x, b.edge_index)
    assert scores.shape == (n,) and torch.all((scores > 0) & (scores < 1))
    rows = [trial.step() for _ in range(3)]
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert rows[2]["weight_sparsity"] == pytest.approx(0.36, abs=2 / total)
    edges = graphs.edge_ptr.diff()
    after_one = edges - torch.floor(0.05 * edges.double()).long()
    live = after_one - torch.floor(0.05 * after_one.double()).long()
    assert int(trial.edge_alive.sum()) == int(live.sum())
