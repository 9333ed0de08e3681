"""Bring your own network and data, end to end (issue 15): an image folder at a non-square
size with a user's model factory through the CLI, and a user's nn.Module, datasets and score
function through the Python API; the custom score steers the front."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]

USER_MODULE = textwrap.dedent('''
    import torch
    from torch import nn


    class UserNet(nn.Module):
        """A residual block with a grouped conv, a depthwise-separable pair and a head."""

        def __init__(self, num_classes=10):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False),
                                      nn.BatchNorm2d(16), nn.ReLU())
            self.grouped = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=4, bias=False),
                                         nn.BatchNorm2d(16), nn.ReLU())
            self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False),
                                    nn.BatchNorm2d(16), nn.ReLU())
            self.pw = nn.Sequential(nn.Conv2d(16, 24, 1, bias=False), nn.BatchNorm2d(24),
                                    nn.ReLU())
            self.head = nn.Linear(24, num_classes)

        def forward(self, x):
            x = self.stem(x)
            x = x + self.grouped(x)
            x = self.pw(self.dw(x))
            return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


    def build(num_classes):
        return UserNet(num_classes)


    def fewer_params_score(model, data, *, settings, device):
        # A made-up score in (0, 1] that only rewards small networks.
        return 1.0 / (1.0 + sum(p.numel() for p in model.parameters()) / 1000.0)
''')

TINY = {"hardware": {"repeats": 5, "warmup": 1, "calibration_genomes": 1, "table_repeats": 3,
                     "table_warmup": 1, "calibration_rounds": 1},
        "evaluator": {"finetune_steps": 2, "batch_size": 8, "bn_recalibration_batches": 1},
        "search": {"budget": 8, "pop_size": 4,
                   "local_search": {"parents": 2, "samples_per_parent": 10,
                                    "moves_per_parent": 1, "max_moves": 2}},
        "cluster": {"num_evaluators": 1}}


@pytest.fixture(scope="module")
def user_package(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("userpkg")
    (folder / "byo_usernet.py").write_text(USER_MODULE)
    return folder


def _image_folder(root: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 16), ("val", 5)):
        for c, name in enumerate(("cat", "dog", "owl")):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                pixels = (rng.random((30, 44, 3)) * 255).astype(np.uint8)
                pixels[..., c] //= 3  # each class darker in one channel: learnable
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root


def test_image_folder_and_model_factory_through_the_cli(tmp_path, user_package):
    import yaml

    _image_folder(tmp_path / "pets")
    config = {"method": "hamp", "seed": 0,
              "data": {"name": "imagefolder", "path": str(tmp_path / "pets"),
                       "image_size": [24, 40], "val_size": 5},
              "model": {"name": None, "factory": "byo_usernet:build", "pretrain_epochs": 1},
              **TINY}
    path = tmp_path / "byo.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**__import__("os").environ, "PYTHONPATH": f"{user_package}"}
    proc = subprocess.run([sys.executable, "-m", "prunesearch", "run", str(path), "--output",
                           str(tmp_path / "run")], cwd=REPO, capture_output=True, text=True, check=False,
                          timeout=400, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    rows = list(csv.DictReader((run / "pareto.csv").open()))
    assert rows and all(float(r["latency_ms_measured"]) > 0 for r in rows)
    # Table entries and end-to-end timings are of 24x40 images, 3 channels, 3 classes.
    table = json.loads((run / "latency_table.json").read_text())["entries"]
    assert any(k.startswith("conv_b1_i3_") and "_h24x40_" in k for k in table)
    info = json.loads((run / "models" / f"{rows[0]['id']}.json").read_text())
    assert info["recipe"]["input_shape"] == [3, 24, 40]
    assert info["recipe"]["base_arch"]["name"] == "factory:byo_usernet:build"
    # The exported network is rebuilt from the factory and runs on the folder's image size.
    out = tmp_path / "small.pt"
    proc = subprocess.run([sys.executable, "-m", "prunesearch", "export", str(run), "--pick",
                           "knee", "--out", str(out)], cwd=REPO, capture_output=True, check=False,
                          text=True, timeout=200, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_python_api_with_a_module_datasets_and_a_score_that_steers_the_front(
        tmp_path, user_package, monkeypatch):
    from torch.utils.data import TensorDataset

    import prunesearch

    monkeypatch.syspath_prepend(str(user_package))
    monkeypatch.setenv("PYTHONPATH", str(user_package))  # the Ray workers import it too
    import byo_usernet

    g = torch.Generator().manual_seed(0)

    def dataset(n: int) -> TensorDataset:
        x = torch.randn(n, 3, 20, 28, generator=g)
        return TensorDataset(x, (x[:, 0].mean((1, 2)) > 0).long())

    net = byo_usernet.build(2)
    with pytest.raises(prunesearch.ConfigError, match="example_input"):
        prunesearch.prune_search(net, train=dataset(8), val=dataset(8),
                                 example_input=torch.zeros(1, 3, 32, 32), **TINY)
    result = prunesearch.prune_search(
        net, train=dataset(64), val=dataset(16), example_input=torch.zeros(1, 3, 20, 28),
        score_fn=byo_usernet.fewer_params_score,
        evaluator={**TINY["evaluator"], "score_name": "fewer_params", "augmentation": False},
        **{k: v for k, v in TINY.items() if k != "evaluator"}, output=tmp_path / "api")
    assert result.summary["status"] == "complete"
    front = result.front
    assert front
    journal = [json.loads(line) for line in (tmp_path / "api" / "journal.jsonl").open()]
    ok = [r for r in journal if r["status"] == "ok"]
    for record in ok:  # the objective is 1 - the user's score, recorded under its name
        score = record["metrics"]["fewer_params"]
        assert record["objectives"]["error"] == pytest.approx(1.0 - score)
        assert score == pytest.approx(1.0 / (1.0 + record["metrics"]["params"] / 1000.0))
    # Steered: the front's lowest-error network is the smallest network evaluated.
    best = min(front, key=lambda m: m.error)
    assert best.params == min(r["metrics"]["params"] for r in ok)
    small = result.rebuild(best.id)
    assert small(torch.zeros(1, 3, 20, 28)).shape == (1, 2)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in net.parameters())
    exported = result.export(best.id, tmp_path / "best.pt")
    assert exported["check"].max_abs_diff <= 1e-4


SEQUENCE_MODULE = textwrap.dedent('''
    import torch
    from torch import nn


    def kws(num_classes):
        return nn.Sequential(
            nn.Conv1d(2, 16, 5, padding=2), nn.BatchNorm1d(16), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(16, 24, 3, padding=1), nn.BatchNorm1d(24), nn.ReLU(),
            nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(24, num_classes))


    def signals(seed=0):
        # Two-channel signals of 32 steps; the class is which channel carries a slow wave.
        g = torch.Generator().manual_seed(seed)
        n = 96
        y = torch.arange(n) % 2
        x = 0.3 * torch.randn(n, 2, 32, generator=g)
        wave = torch.sin(torch.linspace(0, 6.28, 32))
        x[torch.arange(n), y] += wave
        ds = lambda a, b: torch.utils.data.TensorDataset(x[a:b], y[a:b])
        return {"train": ds(0, 64), "val": ds(64, 80), "test": ds(80, 96), "num_classes": 2}
''')


def test_sequence_network_and_data_factories_through_the_cli(tmp_path, monkeypatch):
    """A Conv1d network on (C, L) signals: searched, timed as Conv1d layers, exported to ONNX
    (reloaded in ONNX Runtime on the same layout); CLAD's preflight takes the factories."""
    import yaml

    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "byo_signals.py").write_text(SEQUENCE_MODULE)
    config = {"method": "hamp", "seed": 0, "data": {"factory": "byo_signals:signals"},
              "model": {"factory": "byo_signals:kws", "pretrain_epochs": 2},
              "finetune": {"batch_size": 16}, **TINY}
    path = tmp_path / "kws.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path / "pkg")}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "prunesearch", *args], cwd=REPO,
                              capture_output=True, text=True, check=False, timeout=400, env=env)

    run = tmp_path / "run"
    proc = cli("run", str(path), "--output", str(run))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "preparing the factory:byo_signals:kws task" in proc.stdout + proc.stderr
    rows = list(csv.DictReader((run / "pareto.csv").open()))
    assert rows and all(float(r["latency_ms_measured"]) > 0 for r in rows)
    table = json.loads((run / "latency_table.json").read_text())["entries"]
    assert any(k.startswith("conv_b1_i2_") and "_h32x1_" in k and k.endswith("_d1")
               for k in table), sorted(table)[:5]
    info = json.loads((run / "models" / f"{rows[0]['id']}.json").read_text())
    assert info["recipe"]["input_shape"] == [2, 32]
    out = tmp_path / "kws.onnx"
    proc = cli("export", str(run), "--pick", "knee", "--out", str(out), "--format", "onnx")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "reloaded in onnxruntime" in proc.stdout
    import onnxruntime as ort

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name:
                                   np.zeros((3, 2, 32), dtype=np.float32)})
    assert logits.shape == (3, 2)

    # Attention distillation takes the Conv1d network's (N, C, L) maps.
    proc = cli("finetune", str(run), "--pick", "knee", "--epochs", "1", "--distill", "attention")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert (run / "finetuned.csv").is_file()

    # CLAD with the same factories passes the checks made before a run starts (it used to
    # look model.name up in the registry: "model.name 'None' is not a known model").
    from prunesearch.cluster.config import load_config
    from prunesearch.methods.clad.trial import validate_clad_config

    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    clad = load_config(path, overrides=["method=clad"])
    validate_clad_config(clad)


def test_attention_distillation_is_refused_for_a_network_of_feature_vectors(tmp_path):
    from prunesearch.cluster.finetune import _check_feature_maps
    from prunesearch.methods.errors import UsageError

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "3.json").write_text(json.dumps({"recipe": {"input_shape": [64]}}))
    with pytest.raises(UsageError, match="feature vectors \\(64,\\); use kd or none"):
        _check_feature_maps(tmp_path, [{"id": 3}])
    (tmp_path / "models" / "3.json").write_text(json.dumps({"recipe": {"input_shape": [2, 32]}}))
    _check_feature_maps(tmp_path, [{"id": 3}])
