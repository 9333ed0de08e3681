"""Every torchvision classification CNN through genome_space + apply_genome (issue 15).

For each model of ``torchvision.models.list_models(module=torchvision.models)`` except the
vit/swin/maxvit transformers and models over 100 M parameters, built offline with
``num_classes=10`` (``torchvision:NAME``): find its smallest valid input size (the first of
``SIZES`` its forward pass accepts), build its genome space (granularity 4), prune it at keep
0.5 and 0.25, run the pruned network and count its MACs with Torch-Pruning's own counter
(independent of our cost model). A model passes when both pruned networks run and have fewer
MACs than the dense one; anything else is a refusal with its one-line reason.

    .venv/bin/python bench/torchvision_sweep.py [--only resnet18,densenet121] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

SIZES = (32, 48, 64, 75, 96, 128, 160, 224)
EXCLUDED_PREFIXES = ("vit_", "swin_", "maxvit_")
MAX_PARAMS = 100_000_000
KEEPS = (0.5, 0.25)


def smallest_size(model: torch.nn.Module) -> int | None:
    for size in SIZES:
        try:
            with torch.no_grad():
                model(torch.zeros(1, 3, size, size))
            return size
        except Exception:  # noqa: BLE001 - too small for this network: try the next size
            continue
    return None


def sweep_one(name: str) -> dict:
    import torch_pruning as tp

    from prunesearch.methods.models import build_model
    from prunesearch.methods.pruning import apply_genome, genome_space

    start = time.perf_counter()
    row: dict = {"model": name}
    model = build_model(f"torchvision:{name}", 10).eval()
    params = sum(p.numel() for p in model.parameters())
    row["params_m"] = round(params / 1e6, 2)
    if params > MAX_PARAMS:
        row["status"] = "excluded (over 100 M parameters)"
        return row
    size = smallest_size(model)
    if size is None:
        row.update(status="refused", reason=f"no input size in {SIZES} runs")
        return row
    row["size"] = size
    example = torch.zeros(1, 3, size, size)
    try:
        space = genome_space(model, input_shape=(3, size, size), granularity=4)
        row["groups"] = len(space)
        row["grouped_conv_groups"] = sum(g.multiple > 1 for g in space.groups)
        dense_macs, _ = tp.utils.count_ops_and_params(model, example)
        for keep in KEEPS:
            pruned = apply_genome(model, space, space.uniform_genome(keep)).module.eval()
            with torch.no_grad():
                out = pruned(example)
            if tuple(out.shape) != (1, 10):
                raise RuntimeError(f"pruned output shape {tuple(out.shape)}")
            macs, _ = tp.utils.count_ops_and_params(pruned, example)
            row[f"macs_ratio_{keep}"] = round(macs / dense_macs, 4)
            if macs >= dense_macs:
                raise RuntimeError(f"keep {keep}: MACs not reduced ({macs:.3g} >= {dense_macs:.3g})")
        row["status"] = "ok"
    except Exception as exc:  # noqa: BLE001 - a refusal is a result, reported in one line
        row.update(status="refused", reason=f"{type(exc).__name__}: "
                                            f"{str(exc).splitlines()[0] if str(exc) else ''}")
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


def main() -> None:
    import torchvision

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated model names")
    parser.add_argument("--json", default="", help="write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = [n for n in torchvision.models.list_models(module=torchvision.models)
             if not n.startswith(EXCLUDED_PREFIXES)]
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    rows = []
    for name in names:
        row = sweep_one(name)
        rows.append(row)
        print(json.dumps(row), flush=True)
    counts: dict[str, int] = {}
    for row in rows:
        key = row["status"].split(" ")[0]
        counts[key] = counts.get(key, 0) + 1
    print(f"SUMMARY {json.dumps(counts)} of {len(rows)} models "
          f"(transformers left out: {EXCLUDED_PREFIXES})", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
