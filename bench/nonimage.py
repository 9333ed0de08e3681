"""HAMP on networks that do not take images: a Conv1d network on (C, L) signals and an MLP on
(F,) feature vectors, through the Python API (``prunesearch.prune_search``) on local Ray.

Data: scikit-learn's digits (no download). Signals: each 8x8 image read row by row as a 64-step
signal, linearly resampled to ``--length`` steps (one channel). Features: the 64 pixels. Each
network is trained here (Adam, ``--pretrain-epochs``), then searched with ``--budget``
evaluations. Printed per network: dense error and latency, the front (table latency and MACs as
shares of dense, error), the lowest error within 50% and 75% of the dense table latency, the
table's median error against the re-timed front, and the wall time. One run; figures depend on how busy the machine is.

    .venv/bin/python bench/nonimage.py [--budget 60] [--length 256] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time

import numpy as np
import torch
from torch import nn


def _signals(length: int) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32).div(16.0).unsqueeze(1)
    x = nn.functional.interpolate(x, size=length, mode="linear", align_corners=False)
    return x, torch.tensor(digits.target)


def keyword_net(num_classes: int = 10) -> nn.Module:
    """A keyword-spotting style Conv1d network (strided stem, depthwise-separable blocks)."""
    def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv1d(cin, cin, 9, stride, 4, groups=cin, bias=False), nn.BatchNorm1d(cin),
                nn.ReLU(), nn.Conv1d(cin, cout, 1, bias=False), nn.BatchNorm1d(cout), nn.ReLU()]

    return nn.Sequential(nn.Conv1d(1, 64, 9, 2, 4, bias=False), nn.BatchNorm1d(64), nn.ReLU(),
                         *block(64, 128, 2), *block(128, 128, 1), *block(128, 256, 2),
                         *block(256, 256, 1), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
                         nn.Linear(256, num_classes))


def mlp(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Linear(64, 512), nn.BatchNorm1d(512), nn.ReLU(),
                         nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(),
                         nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, num_classes))


def _train(net: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int) -> None:
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=gen)
        for start in range(0, len(y), 64):
            idx = order[start:start + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    net.eval()


def _run(name: str, net: nn.Module, x: torch.Tensor, y: torch.Tensor, args) -> dict:
    import prunesearch

    perm = np.random.default_rng(0).permutation(len(y))
    train, val = perm[:1300], perm[1300:]
    _train(net, x[train], y[train], args.pretrain_epochs)
    ds = torch.utils.data.TensorDataset
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        result = prunesearch.prune_search(
            net, train=ds(x[train], y[train]), val=ds(x[val], y[val]), num_classes=10,
            example_input=x[:1], search={"budget": args.budget, "pop_size": args.pop_size},
            hardware={"device": "cpu", "batch_size": 1, "granularity": 8},
            evaluator={"finetune_steps": args.finetune_steps, "batch_size": 64},
            cluster={"num_evaluators": args.evaluators}, output=f"{out}/{name}")
        wall = time.perf_counter() - start
        summary = result.summary
        dense = summary["dense"]
        check = summary.get("latency_table", {}).get("check", {})
        front = sorted(result.front, key=lambda m: m.latency_ms)
        dense_ms = dense["latency_ms"]
    row = {
        "network": name, "input": list(x.shape[1:]), "dense_error": dense["error"],
        "dense_latency_ms_table": dense["latency_ms"], "evaluations": summary["evaluations"],
        "front": len(front),
        # The front as (table latency / dense table latency, MACs / dense MACs, error).
        "front_latency_macs_error": [
            (round(m.latency_ms / dense_ms, 3), round(m.macs / max(f.macs for f in front), 3),
             round(m.error, 4)) for m in front],
        "best_error_within": {
            str(share): min((m.error for m in front if m.latency_ms <= share * dense_ms),
                            default=None) for share in (0.5, 0.75)},
        "table_error_median": check.get("table_error_median"),
        "recalibrated_error_median": check.get("recalibrated_error_median"),
        "hypervolume": summary.get("hypervolume"), "wall_s": round(wall, 1)}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=60)
    parser.add_argument("--pop-size", type=int, default=12)
    parser.add_argument("--finetune-steps", type=int, default=60)
    parser.add_argument("--pretrain-epochs", type=int, default=15)
    parser.add_argument("--length", type=int, default=256, help="signal length (steps)")
    parser.add_argument("--evaluators", type=int, default=2)
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread", flush=True)
    signals, labels = _signals(args.length)
    rows = [_run("conv1d-kws", keyword_net(), signals, labels, args),
            _run("mlp", mlp(), _signals(64)[0].flatten(1), labels, args)]
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
