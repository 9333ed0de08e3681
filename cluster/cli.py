"""The ``prunesearch`` command line (also ``python -m prunesearch``).

Exit codes: 0 success, 2 bad input (one line on stderr, nothing lost), 1 a failed run,
130 interrupted (state saved; ``prunesearch resume`` continues).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prunesearch.methods.errors import PrunesearchError, UsageError

__all__ = ["main", "UsageError"]

_EPILOG = """\
examples:
  prunesearch run configs/quickstart.yaml
  prunesearch run configs/hamp-resnet56-cifar10.yaml --set search.budget=200 --output runs/r56
  prunesearch resume runs/r56
  prunesearch report runs/r56
  prunesearch finetune runs/r56 --pick knee --epochs 30 --distill kd
  prunesearch export runs/r56 --pick knee --out r56-knee.pt

Data: data.root defaults to $PRUNESEARCH_DATA, else ~/.cache/prunesearch/data.
Cluster: without --address (or RAY_ADDRESS) a private local Ray instance is started.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        self.exit(2, f"prunesearch: error: {message} (see 'prunesearch {self._cmd()}--help')\n")

    def _cmd(self) -> str:
        parts = self.prog.split()[1:]
        return (" ".join(parts) + " ") if parts else ""


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="prunesearch",
        description="Find pruned versions of a trained network that are faster and smaller on "
        "real hardware while staying accurate (HAMP multi-objective search on Ray).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    run = sub.add_parser("run", help="start a search from a YAML job file",
                         description="Start a search from a YAML job file.")
    run.add_argument("config", help="YAML job file, e.g. configs/quickstart.yaml")
    run.add_argument("--output", "-o", help="run directory (default runs/<config-stem>-<timestamp>/)")
    run.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    run.add_argument("--address", help="Ray cluster to join (default: $RAY_ADDRESS, else a private "
                     "local instance)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config key, e.g. --set search.budget=100 (repeatable)")

    resume = sub.add_parser("resume", help="continue an interrupted search",
                            description="Continue a search from its run directory or storage URI. "
                            "Only cluster.* keys may change.")
    resume.add_argument("run_dir", help="run directory or storage URI (file://, s3://, gs://)")
    resume.add_argument("--output", "-o", help="local directory for a URI (default runs/<name>-resumed/)")
    resume.add_argument("--address", help="Ray cluster to join")
    resume.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override cluster.* keys (search-defining keys are refused)")

    report = sub.add_parser("report", help="re-render pareto.csv, pareto.png and summary.json",
                            description="Re-render a run directory's report from its journal.")
    report.add_argument("run_dir")

    export = sub.add_parser("export", help="write one front member as a real, smaller network",
                            description="Write a front member as a torch nn.Module file plus its "
                            "replayable recipe (FILE.recipe.json).")
    export.add_argument("run_dir")
    export.add_argument("--pick", default="knee",
                        help="'knee' (closest to the ideal point, normalised), 'fastest', "
                        "'smallest', 'best' (lowest error), or a candidate id from pareto.csv")
    export.add_argument("--out", required=True, help="output file, e.g. model.pt")

    finetune = sub.add_parser("finetune", help="fully fine-tune chosen front members",
                              description="Fine-tune front members (cosine schedule, "
                              "augmentation, optional distillation from the dense model) in "
                              "parallel on Ray; writes finetuned.csv and finetuned/. Running it "
                              "again resumes unfinished members from their last epoch.")
    finetune.add_argument("run_dir")
    finetune.add_argument("--pick", default="knee",
                          help="'knee', 'best', 'fastest', 'smallest', 'front' (every member), "
                          "a candidate id from pareto.csv, or several joined by commas")
    finetune.add_argument("--epochs", type=int, help="epochs (default: finetune.epochs)")
    finetune.add_argument("--distill", choices=("none", "kd", "attention"),
                          help="distillation from the dense model (default: finetune.distill)")
    finetune.add_argument("--address", help="Ray cluster to join (default: $RAY_ADDRESS, else a "
                          "private local instance)")
    return parser


def _version() -> str:
    from prunesearch import __version__

    return f"prunesearch {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script. Returns the process exit code."""
    args = _build_parser().parse_args(argv)
    handlers = {"run": _cmd_run, "resume": _cmd_resume, "report": _cmd_report,
                "export": _cmd_export, "finetune": _cmd_finetune}
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print("prunesearch: interrupted; resume with 'prunesearch resume RUN_DIR'", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - classify into bad input vs failure
        if _is_bad_input(exc):
            print(f"prunesearch: error: {_one_line(exc)}", file=sys.stderr)
            return 2
        raise


def _is_bad_input(exc: BaseException) -> bool:
    from prunesearch.search.settings import ConfigError

    return isinstance(exc, (PrunesearchError, ConfigError))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, KeyError):
        text = text.strip("'\"")
    return " ".join(text.split())


# ------------------------------------------------------------------------------------- run
def _cmd_run(args: argparse.Namespace) -> int:
    from prunesearch.cluster.config import dump_config, load_config

    config_path = Path(args.config)
    config = load_config(config_path, args.overrides)
    _preflight(config)
    run_dir = _prepare_run_dir(args.output, config_path.stem, overwrite=args.overwrite)
    dump_config(config, run_dir / "config.yaml")
    try:
        return _run(config, run_dir, address=args.address, resume=False)
    except Exception as exc:
        # Bad input found while building the task (e.g. data missing under data.root): the run
        # directory we just created holds nothing worth keeping, so the same command can be
        # run again once the input is fixed.
        journal = run_dir / "journal.jsonl"
        if _is_bad_input(exc) and (not journal.exists() or journal.stat().st_size == 0):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _run(config: Any, run_dir: Path, *, address: str | None, resume: bool) -> int:
    if config.method == "halp":
        from prunesearch.cluster.halp_runner import run_halp as run_search
    else:
        from prunesearch.cluster.driver import run_search

    summary = run_search(config, run_dir, address=address, resume=resume)
    status = summary.get("status")
    hv = summary.get("hypervolume")
    hv_text = f", hypervolume {hv:.4f}" if isinstance(hv, (int, float)) else ""
    print(f"{status}: {summary.get('evaluations')} evaluations ({summary.get('failed', 0)} failed), "
          f"front of {summary.get('front_size')}{hv_text}; results in {run_dir}")
    if status == "interrupted":
        return 130
    return 0 if status == "complete" else 1


def _preflight(config: Any) -> None:
    """Refuse unknown dataset/model names before Ray starts or a directory is created."""
    if config.evaluator.kind == "synthetic":
        return
    from prunesearch.methods.data import dataset_info
    from prunesearch.methods.models import model_info

    dataset_info(config.data.name)
    model_info(config.model.name)
    if config.model.checkpoint and not Path(config.model.checkpoint).is_file():
        raise UsageError(f"model.checkpoint '{config.model.checkpoint}' does not exist")


def _default_run_dir(stem: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stem}-{stamp}"


def _prepare_run_dir(output: str | None, stem: str, *, overwrite: bool) -> Path:
    run_dir = Path(output) if output else _default_run_dir(stem)
    run_dir = run_dir.expanduser().resolve()
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"output '{run_dir}' exists and is not a directory")
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise UsageError(f"run directory '{run_dir}' already exists; pass --overwrite to replace "
                             f"it or 'prunesearch resume {run_dir}' to continue it")
        shutil.rmtree(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=run_dir, prefix=".write-test-", delete=True)
        probe.close()
    except OSError as exc:
        raise UsageError(f"output directory '{run_dir}' is not writable: {exc.strerror or exc}") from None
    return run_dir


# ---------------------------------------------------------------------------------- resume
def _cmd_resume(args: argparse.Namespace) -> int:
    from prunesearch.cluster.config import config_to_dict, dump_config, load_config
    from prunesearch.cluster.driver import diff_search_keys

    source = args.run_dir
    if "://" in source:
        from prunesearch.cluster.storage import fetch_run

        name = source.rstrip("/").rsplit("/", 1)[-1] or "run"
        local = Path(args.output or Path("runs") / f"{name}-resumed").expanduser().resolve()
        if local.exists() and any(local.iterdir()):
            # Never replace a local copy that may be newer than the mirror.
            raise UsageError(f"local directory '{local}' already exists: continue it with "
                             f"'prunesearch resume {local}', or pass another --output")
        try:
            fetch_run(source, local)
        except (FileNotFoundError, ValueError) as exc:
            raise UsageError(f"cannot resume from '{source}': {_one_line(exc)}") from None
        run_dir = local
    else:
        run_dir = Path(source).expanduser().resolve()
    saved_path = run_dir / "config.yaml"
    if not run_dir.is_dir():
        raise UsageError(f"run directory '{run_dir}' does not exist")
    if not saved_path.exists():
        raise UsageError(f"'{run_dir}' is not a prunesearch run directory (no config.yaml)")
    import yaml

    saved_raw = yaml.safe_load(saved_path.read_text())
    saved = load_config(saved_raw)
    config = load_config(saved_raw, args.overrides) if args.overrides else saved
    before, after = config_to_dict(saved), config_to_dict(config)
    changed = before != after
    refused = [k for k in diff_search_keys(before, after) if k not in RELOCATABLE_KEYS]
    if refused:
        raise UsageError("resume refuses to change keys that alter the search: "
                         + ", ".join(refused) + " (only cluster.*, storage and the paths "
                         + ", ".join(RELOCATABLE_KEYS) + " may change)")
    if changed:
        dump_config(config, saved_path)
    if (run_dir / "summary.json").exists():
        summary = json.loads((run_dir / "summary.json").read_text())
        if summary.get("status") == "complete":
            print(f"{run_dir} is already complete ({summary.get('evaluations')} evaluations); "
                  "nothing to resume")
            return 0
    return _run(config, run_dir, address=args.address, resume=True)


#: Paths that may move between machines when a run is resumed elsewhere (same files, new place).
RELOCATABLE_KEYS = ("data.root", "model.checkpoint")


# ---------------------------------------------------------------------------------- report
def _existing_run_dir(path: str) -> Path:
    run_dir = Path(path).expanduser().resolve()
    if not run_dir.is_dir():
        raise UsageError(f"run directory '{run_dir}' does not exist")
    if not (run_dir / "journal.jsonl").exists():
        raise UsageError(f"'{run_dir}' has no journal.jsonl: not a search run directory")
    return run_dir


def _cmd_report(args: argparse.Namespace) -> int:
    run_dir = _existing_run_dir(args.run_dir)
    from prunesearch.cluster.report import write_report

    summary = write_report(run_dir)
    print(f"report of {run_dir}: {summary.get('evaluations')} evaluations, front of "
          f"{summary.get('front_size')}; wrote pareto.csv, pareto.png, summary.json")
    return 0


# ---------------------------------------------------------------------------------- export
def _cmd_export(args: argparse.Namespace) -> int:
    run_dir = _existing_run_dir(args.run_dir)
    out = Path(args.out).expanduser().resolve()
    if not out.parent.exists():
        raise UsageError(f"--out '{out}': directory '{out.parent}' does not exist")
    from prunesearch.cluster.export import export_member

    info = export_member(run_dir, args.pick, out)
    print(f"exported candidate {info['id']} (error {info['error']:.4f}, latency "
          f"{info['latency_ms']:.3f} ms, {info['params']:.0f} params) to {out} "
          f"and {info['recipe_path']}")
    print(f"weights: {info['weights']}")
    return 0


# -------------------------------------------------------------------------------- finetune
def _cmd_finetune(args: argparse.Namespace) -> int:
    run_dir = _existing_run_dir(args.run_dir)
    from prunesearch.cluster.finetune import run_finetune

    entries = run_finetune(run_dir, args.pick, epochs=args.epochs, distill=args.distill,
                           address=args.address)
    print(f"fine-tuned {len(entries)} member(s); wrote {run_dir / 'finetuned.csv'} and "
          f"{run_dir / 'finetuned'}/")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

