"""The ``prunesearch`` command line (also ``python -m prunesearch``).

Exit codes: 0 success, 2 bad input (one line on stderr, nothing lost), 1 a failed run,
130 interrupted (state saved; ``prunesearch resume`` continues).

Why one module of ~410 lines: argparse definitions plus one small handler per command; the
work each command does lives in the runner modules it calls.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
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
    resume.add_argument("--retime-table", action="store_true",
                        help="build the latency table again (when latency_table.json is missing "
                        "or changed; without this flag such a resume is refused)")

    report = sub.add_parser("report", help="re-render pareto.csv, pareto.png, summary.json and "
                            "report.html; print the front",
                            description="Re-render a run directory's report from its journal.")
    report.add_argument("run_dir", help="any run directory (a search, HALP, CLAD, ICPG)")

    export = sub.add_parser("export", help="write one front member as a real, smaller network",
                            description="Write a front member as a torch nn.Module file (or TorchScript, "
                            "ONNX) plus its replayable recipe (FILE.recipe.json).")
    export.add_argument("run_dir", help="a search, HALP or CLAD run directory")
    export.add_argument("--pick", default="knee",
                        help="'knee' (closest to the ideal point, normalised), 'fastest', "
                        "'smallest', 'best' (lowest error), or a candidate id from pareto.csv")
    _budget_arguments(export)
    export.add_argument("--out", required=True, help="output file, e.g. model.pt")
    from prunesearch.methods.export_formats import FORMATS

    export.add_argument("--format", default=FORMATS[0], choices=FORMATS,
                        help="pt (torch.save of the module), torchscript, or onnx; each is "
                        "reloaded in its runtime and checked against PyTorch before it is kept")

    finetune = sub.add_parser("finetune", help="fully fine-tune chosen front members",
                              description="Fine-tune front members (cosine schedule, "
                              "augmentation, optional distillation from the dense model) in "
                              "parallel on Ray; writes finetuned.csv and finetuned/. Running it "
                              "again resumes unfinished members from their last epoch.")
    finetune.add_argument("run_dir", help="a search, HALP or CLAD run directory")
    finetune.add_argument("--pick", default="knee",
                          help="'knee', 'best', 'fastest', 'smallest', 'front' (every member), "
                          "a candidate id from pareto.csv, or several joined by commas")
    _budget_arguments(finetune)
    finetune.add_argument("--epochs", type=int, help="epochs (default: finetune.epochs)")
    finetune.add_argument("--distill", choices=("none", "kd", "attention"),
                          help="distillation from the dense model (default: finetune.distill)")
    finetune.add_argument("--address", help="Ray cluster to join (default: $RAY_ADDRESS, else a "
                          "private local instance)")
    return parser


def _budget_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "device budget", "pick among the front members that meet these (e.g. --pick best "
        "--max-latency-ms 2: the most accurate network that runs in 2 ms); latency is the "
        "member's end-to-end measurement where the run re-timed it, else its table latency")
    group.add_argument("--max-latency-ms", type=float, metavar="MS")
    group.add_argument("--max-memory-mb", type=float, metavar="MB")
    group.add_argument("--max-error", type=float, metavar="E", help="error rate in (0, 1]")


def _budget(args: argparse.Namespace) -> Any:
    from prunesearch.cluster.export import Budget

    return Budget(latency_ms=args.max_latency_ms, memory_mb=args.max_memory_mb,
                  error=args.max_error)


def _version() -> str:
    from prunesearch import __version__

    return f"prunesearch {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script. Returns the process exit code."""
    args = _build_parser().parse_args(argv)
    # Workers' progress lines (HALP's steps per target, one line each) differ only in their
    # numbers, which Ray's log deduplication folds into "[repeated Nx]"; read before Ray is
    # imported, and a user's own setting wins.
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    handlers = {"run": _cmd_run, "resume": _cmd_resume, "report": _cmd_report,
                "export": _cmd_export, "finetune": _cmd_finetune}
    from prunesearch.cluster.runlog import sigterm_as_interrupt

    try:
        # SIGTERM (``kill``, ``ray job stop``, a scheduler) is handled like Ctrl-C at every
        # moment of a command, task preparation included: state saved, exit 130, resumable.
        with sigterm_as_interrupt():
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
    return isinstance(exc, PrunesearchError) and exc.exit_code == 2


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, KeyError):
        text = text.strip("'\"")
    return " ".join(text.split())


# ------------------------------------------------------------------------------------- run
def _cmd_run(args: argparse.Namespace) -> int:
    from prunesearch.cluster.config import dump_config, load_config
    from prunesearch.cluster.rundir import new_run_dir

    config_path = Path(args.config)
    config = load_config(config_path, args.overrides)
    _preflight(config, address=args.address)
    new = new_run_dir(args.output, config_path.stem, overwrite=args.overwrite)
    try:
        dump_config(config, new.run_dir / "config.yaml")
        code = _run(config, new.run_dir, address=args.address, resume=False)
    except KeyboardInterrupt:
        if new.aside is not None and not new.started():
            new.rollback()
            print("prunesearch: interrupted before the new run started; the old run directory "
                  "is kept as it was", file=sys.stderr)
            return 130
        new.commit()
        _mark_interrupted(new.run_dir, config.method)
        raise
    except BaseException as exc:
        # Bad input found while building the task (e.g. data missing under data.root): the
        # old run comes back and the same command can be run again once the input is fixed.
        new.settle(exc)
        raise
    else:
        new.settle(None)
        return code
    finally:
        new.lock.release()


def _mark_interrupted(run_dir: Path, method: str) -> None:
    """An interrupt before the runner wrote its summary (e.g. while the task was being
    built) still leaves a resumable directory that says so."""
    path = run_dir / "summary.json"
    with contextlib.suppress(OSError, ValueError):
        if path.exists() and json.loads(path.read_text()).get("status") != "running":
            return
    if run_dir.is_dir():
        from prunesearch.cluster.journal import atomic_write_text

        atomic_write_text(path, json.dumps({"method": method, "status": "interrupted"}) + "\n")


def _run(config: Any, run_dir: Path, *, address: str | None, resume: bool,
         retime_table: bool = False) -> int:
    from prunesearch.cluster.registry import method_entry

    summary = method_entry(config.method).run(config, run_dir, address=address, resume=resume,
                                              retime_table=retime_table)
    status = summary.get("status")
    if summary.get("headline"):
        print(f"{status}: {summary['headline']}; results in {run_dir}")
    else:
        hv = summary.get("hypervolume")
        hv_text = f", hypervolume {hv:.4f}" if isinstance(hv, (int, float)) else ""
        print(f"{status}: {summary.get('evaluations')} evaluations "
              f"({summary.get('failed', 0)} failed), front of {summary.get('front_size')}"
              f"{hv_text}; results in {run_dir}")
    if status == "interrupted":
        return 130
    return 0 if status == "complete" else 1


def _preflight(config: Any, *, address: str | None) -> None:
    """Refuse bad input (unknown names, missing files, a device this machine lacks) before Ray
    starts or a directory is created: the method's own check, from the method registry."""
    from prunesearch.cluster.preflight import check_device
    from prunesearch.cluster.registry import method_entry

    method_entry(config.method).preflight(config)
    check_device(config, address=address or os.environ.get("RAY_ADDRESS"))


# ---------------------------------------------------------------------------------- resume
def _cmd_resume(args: argparse.Namespace) -> int:
    from prunesearch.cluster.storage import is_uri

    source = args.run_dir
    if is_uri(source):
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
    from prunesearch.cluster.rundir import lock_existing

    with lock_existing(run_dir):
        return _resume_locked(args, run_dir, saved_path)


def _read_saved_config(saved_path: Path) -> dict[str, Any]:
    import yaml

    try:
        raw = yaml.safe_load(saved_path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
        raise UsageError(f"{saved_path} is not readable ({type(exc).__name__}): the run "
                         "directory is damaged; start again with 'prunesearch run CONFIG "
                         "--overwrite'") from None
    if not isinstance(raw, dict):
        raise UsageError(f"{saved_path} does not hold a config mapping: the run directory is "
                         "damaged")
    return raw


def _resume_locked(args: argparse.Namespace, run_dir: Path, saved_path: Path) -> int:
    from prunesearch.cluster.config import config_to_dict, dump_config, load_config
    from prunesearch.cluster.resume_rule import RELOCATABLE_KEYS, refused_resume_keys
    from prunesearch.search.settings import ConfigError

    saved_raw = _read_saved_config(saved_path)
    try:
        saved = load_config(saved_raw)
    except ConfigError as exc:
        raise UsageError(f"{saved_path} is not a valid config ({exc}): the run directory is "
                         "damaged or from another prunesearch version") from None
    config = load_config(saved_raw, args.overrides) if args.overrides else saved
    _preflight(config, address=args.address)
    before, after = config_to_dict(saved), config_to_dict(config)
    changed = before != after
    refused = refused_resume_keys(before, after)
    if refused:
        raise UsageError("resume refuses to change keys that alter the search: "
                         + ", ".join(refused) + " (only cluster.*, storage and the paths "
                         + ", ".join(RELOCATABLE_KEYS) + " may change)")
    if changed:
        dump_config(config, saved_path)
    summary: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        summary = json.loads((run_dir / "summary.json").read_text())
    if isinstance(summary, dict):
        if summary.get("status") == "complete":
            print(f"{run_dir} is already complete ({summary.get('evaluations')} evaluations); "
                  "nothing to resume")
            return 0
    return _run(config, run_dir, address=args.address, resume=True,
                retime_table=args.retime_table)


# ---------------------------------------------------------------------------------- report
def _existing_run_dir(path: str) -> Path:
    run_dir = Path(path).expanduser().resolve()
    if not run_dir.is_dir():
        raise UsageError(f"run directory '{run_dir}' does not exist")
    if not (run_dir / "journal.jsonl").exists():
        raise UsageError(f"'{run_dir}' has no journal.jsonl: not a search run directory")
    return run_dir


def _networks_run_dir(path: str) -> Path:
    """A run directory whose networks ``export`` and ``finetune`` can take: a search's or
    HALP's (a journal), or a Tune-trial method's that prunes (its front under ``models/``)."""
    run_dir = Path(path).expanduser().resolve()
    if not run_dir.is_dir():
        raise UsageError(f"run directory '{run_dir}' does not exist")
    if (run_dir / "journal.jsonl").exists():
        return run_dir
    if not (run_dir / "config.yaml").exists():
        raise UsageError(f"'{run_dir}' is not a prunesearch run directory (no config.yaml)")
    from prunesearch.cluster.registry import method_entry

    method = _run_method(run_dir)
    entry = method_entry(method)
    if entry.kind != "trials":
        return _existing_run_dir(path)
    from prunesearch.cluster.registry import resolve

    spec = resolve(entry.trial_method)
    if not spec.pruning or spec.network is None:
        raise UsageError(f"'{run_dir}' is a {method} run: its trials report figures, not "
                         "networks to export or fine-tune")
    if not (run_dir / "pareto.csv").exists():
        raise UsageError(f"'{run_dir}' has no pareto.csv yet (no trial has finished); "
                         f"'prunesearch report {run_dir}' writes it from the finished trials")
    return run_dir


def _run_method(run_dir: Path) -> str:
    """The ``method`` of a run directory, from its ``config.yaml`` (``hamp`` if absent in an
    old search directory that has a journal)."""
    import yaml

    path = run_dir / "config.yaml"
    if not path.exists():
        if (run_dir / "journal.jsonl").exists():
            return "hamp"
        raise UsageError(f"'{run_dir}' is not a prunesearch run directory (no config.yaml)")
    try:
        raw = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not readable YAML ({type(exc).__name__}); the run "
                         "directory is damaged") from None
    if not isinstance(raw, dict):
        raise UsageError(f"{path} does not hold a config mapping; the run directory is damaged")
    return str(raw.get("method", "hamp"))


def _cmd_report(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir).expanduser().resolve()
    if not run_dir.is_dir():
        raise UsageError(f"run directory '{run_dir}' does not exist")
    from prunesearch.cluster.registry import method_entry

    entry = method_entry(_run_method(run_dir))
    if entry.kind == "search":
        run_dir = _existing_run_dir(args.run_dir)
    from prunesearch.cluster.html_report import write_html_report
    from prunesearch.cluster.rundir import lock_existing

    with lock_existing(run_dir):
        summary = entry.report(run_dir)
        page = write_html_report(run_dir)
    if summary.get("headline"):
        print(f"report of {run_dir}: {summary['headline']}")
    else:
        print(f"report of {run_dir}: {summary.get('evaluations')} evaluations, front of "
              f"{summary.get('front_size')}; wrote pareto.csv, pareto.png, summary.json")
    print(page.terminal)
    print(f"wrote {page.path}")
    return 0


# ---------------------------------------------------------------------------------- export
def _cmd_export(args: argparse.Namespace) -> int:
    run_dir = _networks_run_dir(args.run_dir)
    out = Path(args.out).expanduser().resolve()
    if out.is_dir():
        raise UsageError(f"--out '{out}' is a directory; give a file name such as "
                         f"{out / 'model.pt'}")
    if not out.parent.is_dir():
        raise UsageError(f"--out '{out}': directory '{out.parent}' does not exist")
    if not os.access(out.parent, os.W_OK):
        raise UsageError(f"--out '{out}': directory '{out.parent}' is not writable")
    from prunesearch.cluster.export import export_member

    budget = _budget(args)
    info = export_member(run_dir, args.pick, out, format=args.format, budget=budget)
    print(f"exported candidate {info['id']} (error {info['error']:.4f}, latency "
          f"{info['latency_ms']:.3f} ms, {info['params']:.0f} params) to {out} "
          f"and {info['recipe_path']}")
    if budget:
        from prunesearch.cluster.export import member_latency

        latency, source = member_latency(info)
        print(f"meets {budget.describe()}: latency {latency:.3f} ms ({source}), memory "
              f"{info['memory_mb']:.3f} MB, error {info['error']:.4f}")
    print(f"checked: {info['check'].describe()}")
    print(f"weights: {info['weights']}")
    return 0


# -------------------------------------------------------------------------------- finetune
def _cmd_finetune(args: argparse.Namespace) -> int:
    run_dir = _networks_run_dir(args.run_dir)
    from prunesearch.cluster.finetune import run_finetune
    from prunesearch.cluster.rundir import lock_existing

    with lock_existing(run_dir):
        entries = run_finetune(run_dir, args.pick, epochs=args.epochs, distill=args.distill,
                               address=args.address, budget=_budget(args))
    print(f"fine-tuned {len(entries)} member(s); wrote {run_dir / 'finetuned.csv'} and "
          f"{run_dir / 'finetuned'}/")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

