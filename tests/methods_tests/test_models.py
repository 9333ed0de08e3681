"""Model registry, CIFAR ResNet architecture and pretrained weights, base-model resolution."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from prunesearch.methods.data import load_dataset
from prunesearch.methods.errors import DataNotFoundError, UnknownNameError
from prunesearch.methods.models import (
    MODELS,
    CifarResNet,
    accuracy,
    arch_config,
    build_from_arch,
    build_model,
    load_base_model,
)
from prunesearch.methods.models.cifar_resnet import ChannelGatherShortcut
from prunesearch.methods.settings import DataSettings, ModelSettings

torch.set_num_threads(2)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_unknown_model_lists_valid_names():
    with pytest.raises(UnknownNameError) as err:
        build_model("vgg16")
    assert "vgg16" in str(err.value) and "resnet56" in str(err.value)
    assert "digits-cnn" in str(err.value)
    assert {"digits-cnn", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
            "resnet18", "resnet50", "mobilenet_v2"} <= set(MODELS)


@pytest.mark.parametrize(("name", "millions"), [("resnet20", 0.27), ("resnet56", 0.85),
                                                ("resnet110", 1.7)])
def test_cifar_resnet_sizes_match_the_paper(name, millions):
    model = build_model(name)
    assert abs(n_params(model) / 1e6 - millions) / millions < 0.03  # the paper rounds
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_option_a_shortcut_is_zero_padding():
    x = torch.randn(2, 16, 8, 8)
    shortcut = ChannelGatherShortcut(16, 32, stride=2)
    expected = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 8, 8))
    assert torch.equal(shortcut(x), expected)
    assert not list(shortcut.parameters()) and not shortcut.state_dict()


def test_arbitrary_widths_and_arch_round_trip():
    model = CifarResNet(20, stage_widths=(8, 12, 20), block_widths=[4, 8, 12, 6, 6, 6, 20, 3, 9],
                        num_classes=7)
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 7)
    rebuilt = build_from_arch(arch_config(model, "resnet20"))
    assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in model.parameters()]
    with pytest.raises(ValueError, match="depth"):
        CifarResNet(21)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_torchvision_models_build_offline(name):
    model = build_model(name, num_classes=5).eval()
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 5)


@pytest.mark.data
def test_pretrained_resnet56_scores_83_percent(data_root):
    """Proves weights, parameter names and normalisation: 83.2% on the shipped JPEG test set."""
    data = DataSettings(name="cifar10", root=str(data_root), val_size=10, train_subset=10,
                        test_subset=2000)
    model = load_base_model(ModelSettings(name="resnet56"), data)
    bundle = load_dataset(data, seed=0)
    with torch.inference_mode():
        acc = accuracy(model, bundle.test, batch_size=500)
    assert abs(acc - 0.832) <= 0.02, acc


def test_missing_pretrained_weights_name_the_expected_file(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        load_base_model(ModelSettings(name="resnet56"),
                        DataSettings(name="cifar10", root=str(tmp_path)))
    assert "weights/cifar10-resnet/resnet56-*.th" in str(err.value)
    assert str(tmp_path) in str(err.value)


def test_checkpoint_override_accepts_wrapped_and_prefixed_state_dicts(tmp_path):
    source = build_model("resnet20")
    path = tmp_path / "ckpt.th"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    loaded = load_base_model(ModelSettings(name="resnet20", checkpoint=str(path)),
                             DataSettings(name="cifar10", root=str(tmp_path)))
    for (k, a), (_, b) in zip(source.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    with pytest.raises(DataNotFoundError, match="missing.th"):
        load_base_model(ModelSettings(name="resnet20", checkpoint=str(tmp_path / "missing.th")),
                        DataSettings(name="cifar10", root=str(tmp_path)))


@pytest.fixture
def one_thread():
    # Tiny convs: with other processes busy, two threads oversubscribe the cores (10x slower).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_digits_cnn_trains_once_and_is_cached(tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("PRUNESEARCH_CACHE", str(tmp_path))
    data = DataSettings(name="digits")
    settings = ModelSettings(name="digits-cnn", pretrain_epochs=15)
    model = load_base_model(settings, data, seed=0)
    bundle = load_dataset(data, seed=0)
    assert accuracy(model, bundle.val) >= 0.95
    assert len(list((tmp_path / "models").glob("digits-cnn-digits-seed0-e15-*.pt"))) == 1

    def must_not_train(*args, **kwargs):
        raise AssertionError("the cached model should have been used")

    again = load_base_model(settings, data, seed=0, train_fn=must_not_train)
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
