"""CLAD: distillation losses, the criterion learner, fixed criteria, the trial and its resume."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F

from prunesearch.cluster.config import ConfigError, load_config
from prunesearch.methods.clad import (
    CLAD_METHOD,
    ChannelMasks,
    CLADTrial,
    CriterionLearner,
    filter_descriptors,
    fixed_scores,
    group_producers,
    keep_mask,
    pruned_groups,
    rate_for_macs_reduction,
    target_genome,
    znorm,
)
from prunesearch.methods.distill import (
    FeatureTaps,
    attention_loss,
    attention_map,
    kd_loss,
    stage_names,
)
from prunesearch.methods.models import CifarResNet, DigitsCNN
from prunesearch.methods.pruning import apply_genome, genome_space
from prunesearch.methods.pruning.importance import keep_top
from prunesearch.methods.trial import Trial


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _resnet8(seed: int = 0) -> CifarResNet:
    torch.manual_seed(seed)
    return CifarResNet(8).eval()


# ------------------------------------------------------------------------------- distillation
def test_attention_loss_zero_for_identical_networks_positive_otherwise():
    teacher = _resnet8()
    twin = copy.deepcopy(teacher)
    other = copy.deepcopy(teacher)
    with torch.no_grad():
        other.layer2[0].conv1.weight.mul_(-0.5)  # a different network, same shapes
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    names = stage_names(teacher)
    assert names == ["layer1", "layer2", "layer3"]
    with FeatureTaps(teacher, names) as t_taps, FeatureTaps(twin, names) as s_taps, \
            FeatureTaps(other, names) as o_taps:
        teacher(x), twin(x), other(x)
        assert [f.shape[1:] for f in t_taps.features] == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
        assert float(attention_loss(s_taps.features, t_taps.features).detach()) == 0.0
        assert float(attention_loss(o_taps.features, t_taps.features).detach()) > 1e-6
    maps = attention_map(torch.randn(3, 5, 4, 4))
    assert maps.shape == (3, 16)
    torch.testing.assert_close(maps.norm(dim=1), torch.ones(3))
    # Channel counts may differ (a pruned student); only batch and spatial size must match.
    assert float(attention_loss([torch.randn(2, 3, 4, 4)], [torch.randn(2, 7, 4, 4)])) > 0
    with pytest.raises(ValueError, match="spatial"):
        attention_loss([torch.randn(2, 3, 4, 4)], [torch.randn(2, 3, 2, 2)])
    logits = torch.randn(4, 10)
    assert float(kd_loss(logits, logits.clone())) == pytest.approx(0.0, abs=1e-6)
    assert float(kd_loss(logits, torch.randn(4, 10))) > 0


def test_feature_taps_clear_per_forward_and_stop_on_close():
    model = DigitsCNN()
    names = stage_names(model)
    assert names == ["bn1", "bn2", "bn3"]
    taps = FeatureTaps(model, names)
    model(torch.randn(2, 1, 8, 8))
    first = taps.features
    model(torch.randn(5, 1, 8, 8))
    assert [f.shape[0] for f in taps.features] == [5, 5, 5] and first[0].shape[0] == 2
    taps.close()
    model(torch.randn(1, 1, 8, 8))
    # Hooks gone: a pass after close is not captured; the last captured pass stays readable
    # (losses are computed after the forward's block) until cleared.
    assert [f.shape[0] for f in taps.features] == [5, 5, 5]
    taps.clear()
    assert taps.features == []
    with pytest.raises(ValueError, match="not modules"):
        FeatureTaps(model, ["nope"])


# ------------------------------------------------------------------------------ the learner
def test_learner_gradients_reach_every_learner_parameter():
    teacher = _resnet8()
    student = copy.deepcopy(teacher)
    for p in student.parameters():
        p.requires_grad_(False)  # frozen network: only the learners can receive gradient
    space = genome_space(student, "resnet8", granularity=4)
    producers = group_producers(student, space)
    groups = pruned_groups(space, "all", producers)
    genome = target_genome(space, groups, 0.5)
    keep = dict(zip(space.names, space.channels(genome)))
    learner = CriterionLearner(groups, width=8)
    descriptors = {g: znorm(filter_descriptors(producers[g], keep_full))
                   for g, keep_full in zip(space.names, space.full_widths)}
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = torch.arange(8) % 10
    names = stage_names(teacher)
    for mode in ("sigmoid", "ste"):
        learner.zero_grad()
        with ChannelMasks(producers, groups, student) as masks, \
                FeatureTaps(student, names) as s_taps, \
                FeatureTaps(teacher, names) as t_taps:
            scores = learner(descriptors)
            masks.masks = {g: keep_mask(scores[g], keep[g], temperature=0.5, mode=mode)
                           for g in groups}
            logits = student(x)
            with torch.no_grad():
                teacher(x)
            loss = F.cross_entropy(logits, y) + 1000 * attention_loss(s_taps.features,
                                                                      t_taps.features)
            loss.backward()
        for name, p in learner.named_parameters():
            assert p.grad is not None and float(p.grad.abs().sum()) > 0, (mode, name)
        assert all(p.grad is None for p in student.parameters())


def test_keep_mask_keeps_the_requested_count():
    scores = torch.tensor([0.3, -1.0, 2.0, 0.1, 5.0, -0.2], requires_grad=True)
    hard = keep_mask(scores, 3, temperature=0.1, mode="ste")
    assert hard.tolist() == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    soft = keep_mask(scores, 3, temperature=0.1, mode="sigmoid")
    assert ((soft > 0.5) == (hard > 0.5)).all()
    soft.sum().backward()
    assert float(scores.grad.abs().sum()) > 0
    assert keep_mask(scores, 6, temperature=1.0).tolist() == [1.0] * 6


def test_masked_network_equals_physically_pruned_one():
    """A hard mask on the producers' BN outputs is exactly the pruned network."""
    model = _resnet8(3)
    with torch.no_grad():  # non-trivial BN statistics, so BN is not an identity
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.bias.uniform_(-0.5, 0.5)
    space = genome_space(model, "resnet8", granularity=2)
    producers = group_producers(model, space)
    groups = pruned_groups(space, "all", producers)
    genome = target_genome(space, groups, 0.5)
    scores = {g.name: torch.randn(g.full_width, generator=torch.Generator().manual_seed(i))
              for i, g in enumerate(space.groups)}
    pruned = apply_genome(model, space, genome, scores=scores, importance="test").module.eval()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with ChannelMasks(producers, groups, model) as masks, torch.no_grad():
        masks.masks = {}
        for g, c in zip(space.groups, space.channels(genome)):
            mask = torch.zeros(g.full_width)
            mask[keep_top(scores[g.name].double(), c)] = 1.0
            masks.masks[g.name] = mask
        torch.testing.assert_close(model(x), pruned(x), atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------------ fixed criteria
def _digits_with_filters(filters: torch.Tensor) -> tuple[DigitsCNN, object, dict]:
    model = DigitsCNN(widths=(len(filters), 8, 8))
    with torch.no_grad():
        model.conv1.weight.copy_(filters.view(len(filters), 1, 3, 3))
    space = genome_space(model, "digits-cnn", granularity=1)
    return model, space, group_producers(model, space)


def test_fixed_criteria_keep_the_filters_they_should():
    filters = torch.zeros(4, 9)
    filters[0, 0] = 3.0                    # L1 3, L2 3
    filters[1, :4] = 1.0                   # L1 4, L2 2
    filters[2, 0] = 0.5                    # small under both
    filters[3, :] = 0.05                   # L1 0.45
    model, space, producers = _digits_with_filters(filters)
    l1 = fixed_scores(model, space, "l1", producers)["conv1"]
    l2 = fixed_scores(model, space, "l2", producers)["conv1"]
    assert keep_top(l1, 2) == [0, 1] and keep_top(l1, 1) == [1]
    assert keep_top(l2, 1) == [0]          # L2 prefers the peaked filter, L1 the spread one
    genome = (1, 8, 8)
    pruned = apply_genome(model, space, genome, scores=fixed_scores(model, space, "l1",
                                                                    producers))
    assert pruned.recipe["kept"]["conv1"] == [1]
    torch.testing.assert_close(pruned.module.conv1.weight.flatten(), filters[1])

    # FPGM removes the filter nearest the geometric median of its layer: here the centroid.
    spread = torch.zeros(5, 9)
    spread[0, 0], spread[1, 0], spread[2, 1], spread[3, 1] = 2.0, -2.0, 2.0, -2.0
    spread[4, 0] = 0.1                     # near the centre, though not the smallest norm
    spread[:, 8] = 0.01 * torch.arange(5)
    model, space, producers = _digits_with_filters(spread)
    fpgm = fixed_scores(model, space, "fpgm", producers)["conv1"]
    assert int(torch.argmin(fpgm)) == 4
    assert keep_top(fpgm, 4) == [0, 1, 2, 3]

    # Taylor (the pruning core's, HALP's): a channel whose BN outputs nothing scores zero.
    model, space, producers = _digits_with_filters(torch.randn(4, 9))
    with torch.no_grad():
        model.bn1.weight[2] = 0.0
        model.bn1.bias[2] = 0.0
    from prunesearch.methods.pruning import batch_gradients

    batch = (torch.randn(16, 1, 8, 8), torch.arange(16) % 10)
    taylor = fixed_scores(model, space, "taylor", producers,
                          grads=batch_gradients(model, batch))["conv1"]
    assert float(taylor[2]) == 0.0 and float(taylor.sum()) > 0
    assert 2 not in keep_top(taylor, 3)


def test_kept_filters_follow_rate_and_granularity():
    model = CifarResNet(20)
    space = genome_space(model, "resnet20", granularity=4)
    blocks = pruned_groups(space, "blocks")
    assert blocks == [f"layer{s}.{i}" for s in (1, 2, 3) for i in range(3)]
    channels = space.channels(target_genome(space, blocks, 0.5))
    assert channels == [8] * 3 + [16] * 3 + [32] * 3 + [16, 32, 64]
    # round(64 * 0.45) = 29 -> 7 granules of 4 = 28; 16 * 0.45 = 7.2 -> 7 -> 2 granules = 8.
    assert space.channels(target_genome(space, blocks, 0.55))[:9:3] == [8, 16, 28]
    # At least one granule, however high the rate.
    assert space.channels(target_genome(space, blocks, 0.95))[:9:3] == [4, 4, 4]
    assert space.channels(target_genome(space, blocks, 0.0)) == space.full_widths
    rate, reduction = rate_for_macs_reduction(space, blocks, 0.53)
    assert abs(reduction - 0.53) < 0.03 and 0.5 <= rate <= 0.65


# ---------------------------------------------------------------------------------- the trial
def _digits_config(model=None, **clad):
    settings = {"rate": 0.5, "learner_epochs": 2, "finetune_epochs": 2, "batch_size": 32,
                "batches_per_epoch": 4, "bn_recalibration_batches": 2, "measure_latency": False,
                "taylor_batches": 2, **clad}
    return load_config({
        "method": "clad", "seed": 3,
        "data": {"name": "digits", "val_size": 100},
        "model": model or {"name": "digits-cnn", "pretrain_epochs": 3},
        "hardware": {"batch_size": 4, "granularity": 8, "warmup": 0, "repeats": 3,
                     "calibration": "none", "calibration_genomes": 0, "table_warmup": 0,
                     "table_repeats": 3},
        "clad": settings,
    })


def _run(trial: CLADTrial, steps: int | None = None) -> list[dict]:
    rows = []
    while not trial.done and (steps is None or len(rows) < steps):
        rows.append(trial.step())
    return rows


def _roundtrip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)  # a checkpoint holds data, never code


@pytest.mark.parametrize(("clad", "stop_after"), [
    ({"criterion": "learned", "learner_training": "frozen", "mask": "sigmoid"}, 1),
    ({"criterion": "learned", "learner_training": "joint", "mask": "ste"}, 4),
    ({"criterion": "taylor"}, 1),
])
def test_restored_trial_ends_like_an_uninterrupted_one(tmp_path, clad, stop_after):
    config = _digits_config(**clad)
    whole = CLADTrial(config, tmp_path / "a")
    assert isinstance(whole, Trial)
    rows = _run(whole)
    assert [r["phase"] for r in rows] == (["learner"] * whole.learner_steps + ["prune"]
                                         + ["finetune"] * 2)

    first = CLADTrial(config, tmp_path / "b")
    _run(first, stop_after)
    state = _roundtrip(first.state_dict())
    del first
    resumed = CLADTrial(config, tmp_path / "c")
    resumed.load_state_dict(state)
    assert resumed.completed_steps == stop_after
    rest = _run(resumed)
    assert len(rest) == len(rows) - stop_after
    for a, b in zip(rows[stop_after:], rest):
        assert a["val_acc"] == b["val_acc"] and a.get("loss") == pytest.approx(b.get("loss"),
                                                                                nan_ok=True)
    final_a, final_b = whole.final(), resumed.final()
    for key in ("error", "test_acc", "macs", "params", "genome", "val_acc_pruned"):
        assert final_a[key] == final_b[key], key
    weights_a, weights_b = whole.pruned.state_dict(), resumed.pruned.state_dict()
    assert weights_a.keys() == weights_b.keys()
    for key in weights_a:
        assert torch.equal(weights_a[key], weights_b[key]), key


def test_trial_prunes_physically_and_reports_final_figures(tmp_path):
    config = _digits_config(rate=0.5, learner_epochs=1, finetune_epochs=1, measure_latency=True)
    trial = CLAD_METHOD.make_trial(config, tmp_path)
    rows = _run(trial)
    prune = next(r for r in rows if r["phase"] == "prune")
    assert 0.6 < prune["macs_reduction"] < 0.8   # half the filters of every conv: ~75% of MACs
    pruned = trial.pruned
    assert [pruned.conv1.out_channels, pruned.conv2.out_channels, pruned.conv3.out_channels] \
        == [16, 32, 64]
    assert sum(p.numel() for p in pruned.parameters()) < \
        sum(p.numel() for p in trial.base.parameters())
    assert pruned(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    final = trial.final()
    for key in ("error", "latency_ms", "memory_mb", "macs", "params", "latency_ms_measured"):
        assert final[key] > 0, key
    assert final["macs"] == prune["macs"] and final["channels"] == [16, 32, 64]
    assert 0.0 <= final["error"] <= 1.0 and final["test_acc"] == pytest.approx(1 - final["error"])
    with pytest.raises(RuntimeError, match="all its"):
        trial.step()


def test_bad_clad_config_is_refused_with_its_reason():
    with pytest.raises(ConfigError, match=r"clad.criterion: 'magic' is not allowed.*learned"):
        load_config({"method": "clad", "clad": {"criterion": "magic"}})
    with pytest.raises(ConfigError, match=r"clad.rate: 1.5 is above the maximum"):
        load_config({"method": "clad", "clad": {"rate": 1.5}})
    with pytest.raises(ConfigError, match="temperature_end"):
        load_config({"method": "clad", "clad": {"temperature_start": 0.1,
                                                "temperature_end": 0.5}})
    with pytest.raises(ConfigError, match="unknown key 'clad.epochs'"):
        load_config({"method": "clad", "clad": {"epochs": 3}})


@pytest.mark.parametrize(("name", "swept"), [
    ("clad-resnet56-cifar10.yaml", {"clad.rate", "clad.distill_weight", "clad.criterion"}),
    ("clad-resnet20-cifar10-smoke.yaml", {"clad.criterion"}),
])
def test_shipped_configs_load(repo_root, name, swept):
    config = load_config(repo_root / "configs" / name)
    assert config.method == "clad" and config.tune.search in ("grid", "random", "optuna")
    space = config.tune.space
    assert set(space) == swept
    for key, values in space.items():  # every trial's parameters must validate
        for value in values:
            load_config(repo_root / "configs" / name, [f"{key}={value}"])


@pytest.mark.data
def test_smoke_config_trial_on_cifar10(repo_root, data_root, tmp_path):
    overrides = ["clad.learner_epochs=1", "clad.finetune_epochs=1", "clad.batches_per_epoch=2",
                 "clad.batch_size=32", "clad.bn_recalibration_batches=1", "data.test_subset=200",
                 "data.val_size=200", "clad.measure_latency=false", "hardware.calibration=none"]
    config = load_config(repo_root / "configs" / "clad-resnet20-cifar10-smoke.yaml", overrides)
    CLAD_METHOD.validate(config)
    trial = CLADTrial(config, tmp_path)
    _run(trial)
    final = trial.final()
    assert final["macs_reduction"] > 0.4 and final["test_acc"] > 0.1
    assert [b.conv1.out_channels for b in trial.pruned.layer3] == [32, 32, 32]


def test_missing_pretrained_weights_are_refused_before_any_trial(tmp_path):
    from prunesearch.methods.errors import DataNotFoundError, PrunesearchError

    config = load_config({"method": "clad", "data": {"name": "cifar10", "root": str(tmp_path)},
                          "model": {"name": "resnet20"}})
    with pytest.raises(DataNotFoundError, match=r"no pretrained resnet20: expected .*resnet20-\*\.th"):
        CLAD_METHOD.validate(config)
    assert issubclass(DataNotFoundError, PrunesearchError)  # the CLI's one-line exit 2


def test_apply_genome_refuses_scores_that_do_not_fit_the_space():
    model = DigitsCNN(widths=(8, 8, 8))
    space = genome_space(model, "digits-cnn", granularity=4)
    with pytest.raises(ValueError, match="missing"):
        apply_genome(model, space, (1, 1, 1), scores={"conv1": torch.ones(8)})
    bad = {"conv1": torch.ones(7), "conv2": torch.ones(8), "conv3": torch.ones(8)}
    with pytest.raises(ValueError, match="hold 7 values, expected 8"):
        apply_genome(model, space, (1, 1, 1), scores=bad)


_USER_NET = '''
import torch
from torch import nn


class Net(nn.Module):
    """A user's network on 1-channel images: a stem, a residual block, a head."""

    def __init__(self, num_classes):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(16), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(32), nn.ReLU(),
                                   nn.Conv2d(32, 16, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(16))
        self.head = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.block(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def build(num_classes):
    return Net(num_classes)
'''


@pytest.mark.parametrize("training", ["frozen", "joint"])
def test_learned_criterion_prunes_a_users_network(tmp_path, monkeypatch, training):
    # A network CLAD has no surgery of its own for goes through Torch-Pruning's groups. With
    # frozen weights nothing requires gradients, and the groups must still be found.
    (tmp_path / "clad_user_net.py").write_text(_USER_NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = _digits_config({"factory": "clad_user_net:build", "pretrain_epochs": 2},
                            learner_training=training, learner_epochs=1, finetune_epochs=1)
    trial = CLADTrial(config, tmp_path / "trial")
    assert trial.groups == ["block.0"]            # the block's inner conv; the residual width stays
    assert trial.keep == {"stem.0": 16, "block.0": 16}
    rows = _run(trial)
    assert [r["phase"] for r in rows] == ["learner", "prune", "finetune"]
    pruned = trial.pruned
    assert pruned.block[0].out_channels == 16 and pruned.block[3].in_channels == 16
    assert pruned.stem[0].out_channels == 16
    assert sum(p.numel() for p in pruned.parameters()) < \
        sum(p.numel() for p in trial.base.parameters())
    assert pruned(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert 0.0 <= trial.final()["error"] <= 1.0


def test_block_layers_of_a_mobilenet_are_its_expansion_widths_not_its_residual_ones():
    import torchvision.models as tvm

    model = tvm.mobilenet_v2(num_classes=10, width_mult=0.25).eval()
    space = genome_space(model, input_shape=(3, 32, 32), granularity=4)
    producers = group_producers(model, space)
    groups = pruned_groups(space, "blocks", producers)
    # Every inverted-residual block's expansion (1x1 conv + its depthwise conv) is pruned...
    expansions = [g for g in space.names if g.endswith("conv.0.0")]
    assert len(expansions) == 16 and set(expansions) <= set(groups)
    # ...and a width the residual adds share (written by several blocks' projections) is not.
    shared = [g for g in space.names
              if sum(isinstance(m, torch.nn.Conv2d) and m.groups == 1
                     for m, _ in producers[g]) > 1]
    assert shared and not set(shared) & set(groups)
