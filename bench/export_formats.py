"""What ``prunesearch export --format`` costs and how close each file is (issue 16, item 1).

For the dense and a pruned CIFAR ResNet-56 (inner and stage widths halved; the pretrained
weights under ``$PRUNESEARCH_DATA/weights/cifar10-resnet/`` where present, else randomly
initialised, whose logits are orders of magnitude larger, so compare ``max |diff|`` with
``max |out|``),
every format of :data:`prunesearch.methods.export_formats.FORMATS` is written and checked
exactly as the CLI does (:func:`export_network`: write, reload in its runtime, compare at the
capped run batch and at batch 1). Printed per model and format: seconds for write + check, the
largest ``|exported - torch|`` over the two batches, the largest PyTorch output, and the file
size.

Usage::

    .venv/bin/python bench/export_formats.py                  # batch 256 run, checked at 64 and 1
    .venv/bin/python bench/export_formats.py --batch-size 1 --threads 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import torch

from prunesearch.methods.export_formats import FORMATS, export_network
from prunesearch.methods.models import build_model, load_state_dict_file, pretrained_path
from prunesearch.methods.pruning import apply_genome, genome_space


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet56")
    parser.add_argument("--batch-size", type=int, default=256, help="the run's batch size")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", FutureWarning)
    torch.manual_seed(0)
    base = build_model(args.model).eval()
    weights = pretrained_path(args.model, os.environ.get("PRUNESEARCH_DATA", "/nonexistent"))
    if weights is not None:
        base.load_state_dict(load_state_dict_file(weights))
    space = genome_space(base, args.model, granularity=4)
    half = [max(1, (hi + 1) // 2) for hi in space.upper()]
    models = {"dense": base, "pruned (widths halved)": apply_genome(base, space, half).module}
    print(f"{args.model} ({weights.name if weights else 'random init'}), run batch "
          f"{args.batch_size}, torch threads {args.threads}")
    print(f"{'model':<24} {'format':<12} {'write+check s':>13} {'max |diff|':>11} "
          f"{'max |out|':>10} {'file KB':>8}")
    with tempfile.TemporaryDirectory() as folder:
        for label, module in models.items():
            with torch.no_grad():
                example = torch.randn((min(args.batch_size, 64), 3, 32, 32),
                                      generator=torch.Generator().manual_seed(0))
                largest = float(module(example).abs().max())
            for fmt in FORMATS:
                out = Path(folder) / f"net.{fmt}"
                start = time.perf_counter()
                check = export_network(module, out, format=fmt, input_shape=(3, 32, 32),
                                       batch_size=args.batch_size)
                seconds = time.perf_counter() - start
                print(f"{label:<24} {fmt:<12} {seconds:>13.2f} {check.max_abs_diff:>11.2e} "
                      f"{largest:>10.3g} {out.stat().st_size / 1024:>8.0f}")


if __name__ == "__main__":
    main()
