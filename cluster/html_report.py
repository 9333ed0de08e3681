"""``report.html``: one static page per run directory, and the front as a terminal table.

The page is self-contained: inline CSS, plots as inline SVG drawn by matplotlib, no script, no
server and no network, so it opens from disk (or from a mirrored bucket) anywhere. It is built
from the run directory's files alone and shows what that run has:

==========================  ===============================================================
``pareto.csv``              the front: error, latency (table and measured end to end),
                            memory, MACs, params, genome as kept widths per layer
``journal.jsonl``           every evaluated candidate (grey in the plots), widths per layer,
                            hypervolume over evaluations
``state/meta.json``         the dense model (marked in the plots), hardware, HV settings
``driver.log``              the selection operator chosen per generation (``op ...``)
``latency_table.json``      how latency was timed (device, threads, calibration)
``finetuned.csv``           fine-tuned front members (marked in the plots)
``baselines.csv``           optional comparison points (``label,error,latency_ms,memory_mb``)
``trials.json``,            a Tune-trial method's trials and their ranking metric per step
``results.csv``
``summary.json``            a round-based method's accuracy per round and baseline (ICPG:
(``method_summary``)        ``baselines.NAME.rounds``), its last matching round, comparisons
``summary.json``,           status, evaluations, hypervolume, wall time; the resolved config
``config.yaml``
==========================  ===============================================================

The selection operator per generation is read from ``driver.log`` rather than from
``state/driver.pkl``: reading a report must run nothing, and unpickling would.

Why one module of ~810 lines: it is one page, most of it HTML/SVG rendering of sections that
each read one file of the run directory; nothing else imports its parts.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import html
import io
import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from prunesearch.cluster.journal import atomic_write_text, read_journal
from prunesearch.search.indicators import non_dominated, normalized_hypervolume

__all__ = [
    "REPORT_FILE",
    "FrontRow",
    "HtmlReport",
    "RunView",
    "format_front_table",
    "format_rounds_table",
    "format_terminal",
    "load_run_view",
    "render_html",
    "write_html_report",
]

REPORT_FILE = "report.html"
#: Most points on the hypervolume curve (evenly spread over the evaluations): keeps a long
#: run's report to seconds.
MAX_HV_POINTS = 400
_GEN_LINE = re.compile(r"\bgen (\d+) \|.*\| op ([^|\s]+) \|")


@dataclasses.dataclass(frozen=True)
class FrontRow:
    """One member of the front, as ``pareto.csv`` holds it plus its widths.

    Attributes:
        id: Candidate id (a Tune-trial method: the trial's index).
        error: Validation error.
        latency_ms: Latency from the calibrated table (the search's objective).
        latency_ms_measured: End-to-end re-timing (NaN where not measured).
        memory_mb: Memory objective.
        macs: Multiply-accumulates of one forward pass (``pareto.csv``'s ``flops`` column in
            older runs).
        params: Parameter count.
        genome: Granules kept per prunable group.
        widths: Channels kept per group (``None`` where the run does not record them).
    """

    id: int
    error: float
    latency_ms: float
    latency_ms_measured: float
    memory_mb: float
    macs: float
    params: float
    genome: tuple[int, ...]
    widths: tuple[int, ...] | None = None


@dataclasses.dataclass
class RunView:
    """Everything the page shows, read from one run directory (missing parts stay empty)."""

    run_dir: Path
    method: str = "?"
    config_text: str = ""
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    front: list[FrontRow] = dataclasses.field(default_factory=list)
    group_names: list[str] = dataclasses.field(default_factory=list)
    evaluated: np.ndarray = dataclasses.field(default_factory=lambda: np.empty((0, 3)))
    failed: int = 0
    dense: dict[str, float] | None = None
    hv_curve: list[tuple[int, float]] = dataclasses.field(default_factory=list)
    operators: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    finetuned: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    baselines: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    trials: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    results: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    latency_table: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: A round-based method's per-baseline summaries with rounds (ICPG's ``method_summary``).
    rounds: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    @property
    def hardware(self) -> dict[str, Any]:
        """The run's hardware: the journal's record of it, else the config's section."""
        return dict(self.meta.get("hardware") or self.config.get("hardware") or {})


@dataclasses.dataclass(frozen=True)
class HtmlReport:
    """What :func:`write_html_report` wrote.

    Attributes:
        path: ``RUN_DIR/report.html``.
        front_table: The front as plain text.
        view: The data shown.
        terminal: What the CLI prints (:func:`format_terminal`): the front; for a run without
            one, its accuracy per round or its trials.
    """

    path: Path
    front_table: str
    view: RunView
    terminal: str = ""


# ------------------------------------------------------------------------------ reading
def _read_json(path: Path) -> Any:
    with contextlib.suppress(OSError, ValueError):
        return json.loads(path.read_text())
    return None


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with contextlib.suppress(OSError, csv.Error, UnicodeDecodeError), path.open(newline="") as fh:
        return list(csv.DictReader(fh))
    return []


def _float(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return number


def _ints(text: Any) -> tuple[int, ...]:
    if isinstance(text, (list, tuple)):
        return tuple(int(v) for v in text)
    with contextlib.suppress(TypeError, ValueError):
        return tuple(int(v) for v in str(text).replace(",", " ").split())
    return ()


def load_run_view(run_dir: str | Path) -> RunView:
    """Read everything the report shows from ``run_dir`` (any method's run directory)."""
    run_dir = Path(run_dir)
    view = RunView(run_dir=run_dir)
    config_path = run_dir / "config.yaml"
    if config_path.exists():
        import yaml

        view.config_text = config_path.read_text(errors="replace")
        with contextlib.suppress(yaml.YAMLError):
            loaded = yaml.safe_load(view.config_text)
            if isinstance(loaded, dict):
                view.config = loaded
    view.summary = _read_json(run_dir / "summary.json") or {}
    view.rounds = _round_baselines(view.summary)
    view.meta = _read_json(run_dir / "state" / "meta.json") or {}
    view.method = str(view.summary.get("method") or view.meta.get("method")
                      or view.config.get("method") or "?")
    view.dense = view.meta.get("dense") or view.summary.get("dense") or None
    view.latency_table = {k: v for k, v in (_read_json(run_dir / "latency_table.json") or {}
                                            ).items() if k != "entries"}

    records: list[Mapping[str, Any]] = []
    if (run_dir / "journal.jsonl").exists():
        records = read_journal(run_dir / "journal.jsonl", repair=False)
    widths_by_id = {int(r["id"]): tuple(int(c) for c in r["channels"])
                    for r in records if r.get("channels")}
    ok = [r for r in records if _objectives(r) is not None]
    view.failed = len(records) - len(ok)
    if ok:
        view.evaluated = np.stack([_objectives(r) for r in ok])
    view.hv_curve = _hv_curve(records, view.dense,
                              float(view.meta.get("hv_max_error_increase", 0.10)))
    view.operators = _operators(run_dir / "driver.log")

    view.trials = _read_json(run_dir / "trials.json") or []
    view.results = _read_csv(run_dir / "results.csv")
    if not records and view.trials:
        # A Tune-trial method: every trial's final network is an evaluated point, and pareto.csv
        # ids are indices into trials.json.
        finals = [t.get("final") or {} for t in view.trials]
        points = [[_float(f.get(k)) for k in ("error", "latency_ms", "memory_mb")] for f in finals]
        finite = [p for p in points if all(math.isfinite(v) for v in p)]
        if finite:
            view.evaluated = np.asarray(finite, dtype=float)
        for index, final in enumerate(finals):
            if final.get("channels"):
                widths_by_id[index] = _ints(final["channels"])

    for path in sorted((run_dir / "models").glob("*.json")) if (run_dir / "models").is_dir() else []:
        info = _read_json(path) or {}
        if isinstance(info.get("id"), int) and info.get("channels"):
            widths_by_id.setdefault(int(info["id"]), _ints(info["channels"]))
        groups = (info.get("recipe") or {}).get("groups")
        if groups and not view.group_names:
            view.group_names = [str(g) for g in groups]

    for row in _read_csv(run_dir / "pareto.csv"):
        with contextlib.suppress(KeyError, ValueError):
            cid = int(row["id"])
            view.front.append(FrontRow(
                id=cid, error=_float(row.get("error")), latency_ms=_float(row.get("latency_ms")),
                latency_ms_measured=_float(row.get("latency_ms_measured")),
                memory_mb=_float(row.get("memory_mb")),
                macs=_float(row.get("macs", row.get("flops"))), params=_float(row.get("params")),
                genome=_ints(row.get("genome")), widths=widths_by_id.get(cid)))

    for row in _read_csv(run_dir / "finetuned.csv"):
        accuracy = _float(row.get("val_acc"))
        if not math.isfinite(accuracy):
            accuracy = _float(row.get("test_acc"))
        member = next((m for m in view.front if str(m.id) == row.get("id")), None)
        view.finetuned.append({**row, "error": 1.0 - accuracy,
                               "latency_ms": _float(row.get("latency_ms")),
                               "memory_mb": member.memory_mb if member else float("nan")})
    for row in _read_csv(run_dir / "baselines.csv"):
        view.baselines.append({**row, **{k: _float(row.get(k))
                                         for k in ("error", "latency_ms", "memory_mb")}})
    return view


def _objectives(record: Mapping[str, Any]) -> np.ndarray | None:
    if record.get("status") != "ok":
        return None
    objectives = record.get("objectives") or {}
    values = [_float(objectives.get(k)) for k in ("error", "latency_ms", "memory_mb")]
    return np.asarray(values) if all(math.isfinite(v) for v in values) else None


def _hv_curve(records: Sequence[Mapping[str, Any]], dense: Mapping[str, float] | None,
              max_error_increase: float) -> list[tuple[int, float]]:
    """Hypervolume of the front of the first n evaluations, in candidate-id (ask) order."""
    if not dense or not records:
        return []
    ordered = sorted(records, key=lambda r: int(r["id"]))
    n = len(ordered)
    marks = set(np.unique(np.linspace(1, n, num=min(n, MAX_HV_POINTS)).round().astype(int)))
    front = np.empty((0, 3))
    curve: list[tuple[int, float]] = []
    hv = 0.0
    changed = False
    for count, record in enumerate(ordered, start=1):
        f = _objectives(record)
        if f is not None and not np.any(np.all(front <= f, axis=1)):
            merged = np.vstack([front, f])
            front = merged[non_dominated(merged)]
            changed = True
        if count in marks:
            if changed:
                hv = float(normalized_hypervolume(front, dense, max_error_increase))
                changed = False
            curve.append((count, hv))
    return curve


def _operators(log_path: Path) -> list[tuple[int, str]]:
    """(generation, selection operator) from the driver's progress lines; a resumed run logs a
    generation again, and its last line wins."""
    if not log_path.exists():
        return []
    chosen: dict[int, str] = {}
    with contextlib.suppress(OSError):
        for line in log_path.read_text(errors="replace").splitlines():
            match = _GEN_LINE.search(line)
            if match:
                chosen[int(match.group(1))] = match.group(2)
    return sorted(chosen.items())


# ------------------------------------------------------------------------ the front table
_TABLE_COLUMNS = ("id", "error", "latency_ms", "measured_ms", "memory_mb", "MACs", "params",
                  "widths")


def _fmt(value: float, digits: int = 4) -> str:
    return "-" if not math.isfinite(value) else f"{value:.{digits}f}"


def _count(value: float) -> str:
    if not math.isfinite(value):
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}"


def _widths_text(row: FrontRow) -> str:
    if row.widths:
        return " ".join(str(w) for w in row.widths)
    return ("granules " + " ".join(str(g) for g in row.genome)) if row.genome else "-"


def _front_cells(row: FrontRow) -> list[str]:
    return [str(row.id), _fmt(row.error), _fmt(row.latency_ms, 3),
            _fmt(row.latency_ms_measured, 3), _fmt(row.memory_mb, 3), _count(row.macs),
            _count(row.params), _widths_text(row)]


def format_front_table(front: Sequence[FrontRow]) -> str:
    """The front as an aligned plain-text table, fastest first (what ``report`` prints)."""
    if not front:
        return "front: empty (no successful candidate yet)"
    rows = [list(_TABLE_COLUMNS)] + [_front_cells(r) for r in _sorted_front(front)]
    return "\n".join(_aligned(rows, right=True, free_last=True))


def _aligned(rows: Sequence[Sequence[str]], *, right: bool, free_last: bool) -> list[str]:
    """Plain-text table lines: columns padded to their widest cell (right- or left-aligned),
    two spaces apart; with ``free_last`` the last column (widths, params) is left unpadded."""
    padded = len(rows[0]) - 1 if free_last else len(rows[0])
    widths = [max(len(r[i]) for r in rows) for i in range(padded)]
    lines = []
    for cells in rows:
        line = "  ".join(c.rjust(w) if right else c.ljust(w)
                         for c, w in zip(cells[:padded], widths, strict=True))
        lines.append(f"{line}  {cells[-1]}" if free_last else line)
    return lines


def _sorted_front(front: Sequence[FrontRow]) -> list[FrontRow]:
    return sorted(front, key=lambda r: (r.latency_ms if math.isfinite(r.latency_ms) else math.inf,
                                        r.id))


def _round_baselines(summary: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A round-based method's per-baseline summaries that hold rounds (ICPG), else {}."""
    method_summary = summary.get("method_summary") or {}
    baselines = method_summary.get("baselines") if isinstance(method_summary, dict) else None
    if not isinstance(baselines, dict):
        return {}
    return {str(name): info for name, info in baselines.items()
            if isinstance(info, dict) and isinstance(info.get("rounds"), list) and info["rounds"]}


def _acc(entry: Mapping[str, Any] | None) -> str:
    if not entry or not isinstance(entry.get("test_acc_mean"), (int, float)):
        return "-"
    std = entry.get("test_acc_std")
    return (f"{entry['test_acc_mean']:.3f} +- {std:.3f}" if isinstance(std, (int, float))
            else f"{entry['test_acc_mean']:.3f}")


def _sparsity(entry: Mapping[str, Any] | None, name: str) -> str:
    if not entry:
        return "-"
    nominal, realised = entry.get(f"{name}_nominal_mean"), entry.get(f"{name}_mean")
    if not isinstance(realised, (int, float)):
        return "-"
    if isinstance(nominal, (int, float)):
        return f"{nominal:.3f} / {realised:.3f}"
    return f"{realised:.3f}"


def _rounds_rows(view: RunView) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-round table: sparsities (ICPG's where it ran, else the first
    baseline's) and each baseline's test accuracy, mean +- std over folds."""
    per = view.rounds
    if not per:
        return [], []
    names = list(per)
    by_round = {b: {int(r["round"]): r for r in per[b]["rounds"] if "round" in r} for b in names}
    shown = by_round.get("icpg") or by_round[names[0]]
    header = ["round", "graph sp. nominal / realised", "weight sp. nominal / realised",
              *(f"{b} test acc" for b in names)]
    rows = []
    for index in sorted({i for rounds in by_round.values() for i in rounds}):
        sparsity_of = shown.get(index) or next(
            (by_round[b][index] for b in names if index in by_round[b]), None)
        rows.append([str(index), _sparsity(sparsity_of, "graph_sparsity"),
                     _sparsity(sparsity_of, "weight_sparsity"),
                     *(_acc(by_round[b].get(index)) for b in names)])
    return header, rows


def _rounds_notes(view: RunView) -> list[str]:
    notes = []
    for name, info in view.rounds.items():
        dense = _acc({"test_acc_mean": info.get("dense_acc_mean"),
                      "test_acc_std": info.get("dense_acc_std")})
        notes.append(f"{name}: dense {dense}, last matching round "
                     f"{info.get('last_matching_round')}")
    method_summary = view.summary.get("method_summary") or {}
    for other, cmp in (method_summary.get("icpg_vs") or {}).items():
        if not isinstance(cmp, dict) or not isinstance(cmp.get("mean_diff"), (int, float)):
            continue
        p = cmp.get("wilcoxon_p_greater")
        p_text = f"{p:.4f}" if isinstance(p, (int, float)) else "n/a"
        notes.append(f"icpg - {other} over rounds {cmp.get('rounds')}: {cmp['mean_diff']:+.4f} "
                     f"({cmp.get('pairs')} pairs, one-sided Wilcoxon p = {p_text})")
    selection = method_summary.get("selection")
    if selection:
        note = method_summary.get("selection_note")
        notes.append(f"epoch selection: {selection}" + (f" ({note})" if note else ""))
    return notes


def format_rounds_table(view: RunView) -> str:
    """A round-based method's accuracy per round and baseline as plain text ("" if none)."""
    header, rows = _rounds_rows(view)
    if not rows:
        return ""
    return "\n".join(_aligned([header, *rows], right=True, free_last=False)
                     + _rounds_notes(view))


def _trials_text(view: RunView) -> str:
    metric = view.summary.get("metric")
    rows = [["trial", "status", "steps", str(metric or "metric"), "params"]]
    for trial in view.trials:
        final = trial.get("final") or {}
        value = final.get(metric) if metric else None
        rows.append([str(trial.get("trial_id")), str(trial.get("status")),
                     str(trial.get("steps")), _short(value) if value is not None else "-",
                     json.dumps(trial.get("params") or {}, default=str)])
    return "\n".join(_aligned(rows, right=False, free_last=True))


def format_terminal(view: RunView) -> str:
    """What ``prunesearch report`` prints: the front where the run has one; else the accuracy
    per round of a round-based method (ICPG); else its trials; else that the front is empty."""
    if view.front:
        budget = _budget_text(view)
        return (f"device budget: {budget}\n" if budget else "") + format_front_table(view.front)
    rounds = format_rounds_table(view)
    if rounds:
        return rounds
    if view.trials:
        return _trials_text(view)
    return format_front_table(view.front)


# -------------------------------------------------------------------------------- plots
def _svg(fig: Any) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    text = buffer.getvalue()
    # Keep only the <svg> element: the XML prolog and DOCTYPE (a DTD URL) are not needed inline.
    return text[text.find("<svg"):]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _objective_plot(view: RunView, axis: int, xlabel: str) -> str | None:
    """Error vs objective ``axis`` (1 latency, 2 memory) with everything the run has marked."""
    key = ("error", "latency_ms", "memory_mb")[axis]
    front = np.array([[r.error, r.latency_ms, r.memory_mb] for r in view.front]).reshape(-1, 3)
    if not len(view.evaluated) and not len(front):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 4.0), dpi=100)
    try:
        if len(view.evaluated):
            ax.scatter(view.evaluated[:, axis], view.evaluated[:, 0], s=10, c="0.75",
                       label=f"evaluated ({len(view.evaluated)})")
        if len(front):
            order = np.argsort(front[:, axis])
            ax.plot(front[order, axis], front[order, 0], "-o", color="tab:blue", ms=5, lw=1,
                    zorder=3, label=f"front ({len(front)})")
            measured = np.array([r.latency_ms_measured for r in view.front])
            if axis == 1 and np.isfinite(measured).any():
                ax.scatter(measured, front[:, 0], s=34, facecolors="none",
                           edgecolors="tab:blue", zorder=3, label="front, measured end to end")
        if view.dense and all(isinstance(view.dense.get(k), (int, float))
                              for k in ("error", key)):
            ax.scatter([view.dense[key]], [view.dense["error"]], marker="*", s=160, c="tab:red",
                       edgecolors="k", linewidths=0.5, zorder=4, label="dense model")
        tuned = [(t[key], t["error"]) for t in view.finetuned
                 if math.isfinite(t[key]) and math.isfinite(t["error"])]
        if tuned:
            xs, ys = zip(*tuned, strict=True)
            ax.scatter(xs, ys, marker="^", s=50, c="tab:green", edgecolors="k", linewidths=0.5,
                       zorder=4, label=f"fine-tuned ({len(tuned)})")
        for base in view.baselines:
            if math.isfinite(base[key]) and math.isfinite(base["error"]):
                ax.scatter([base[key]], [base["error"]], marker="s", s=40, c="tab:orange",
                           edgecolors="k", linewidths=0.5, zorder=4)
                ax.annotate(str(base.get("label") or "baseline"), (base[key], base["error"]),
                            fontsize=7, xytext=(4, 4), textcoords="offset points")
        budget = view.summary.get("device_budget")
        for name, (budget_axis, _, unit) in _BUDGET_AXES.items():
            limit = budget.get(name) if isinstance(budget, Mapping) else None
            if budget_axis == axis and isinstance(limit, (int, float)):
                ax.axvline(limit, ls="--", lw=1, color="tab:purple",
                           label=f"device budget ({limit:.4g} {unit.split()[0]})")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation error")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        return _svg(fig)
    finally:
        plt.close(fig)


def _hv_plot(view: RunView) -> str | None:
    if len(view.hv_curve) < 2:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.4), dpi=100)
    try:
        xs, ys = zip(*view.hv_curve, strict=True)
        ax.step(xs, ys, where="post", color="tab:purple")
        ax.set_xlabel("evaluations")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel("hypervolume (normalised)")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        return _svg(fig)
    finally:
        plt.close(fig)


def _operator_plot(view: RunView) -> str | None:
    if not view.operators:
        return None
    names = sorted({name for _, name in view.operators})
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 1.1 + 0.35 * len(names)), dpi=100)
    try:
        gens = [g for g, _ in view.operators]
        rows = [names.index(name) for _, name in view.operators]
        ax.scatter(gens, rows, marker="s", s=30, c=rows, cmap="tab10", vmin=0, vmax=9)
        ax.set_yticks(range(len(names)), names)
        ax.set_ylim(-0.6, len(names) - 0.4)
        ax.set_xlabel("generation")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3, axis="x")
        fig.tight_layout()
        return _svg(fig)
    finally:
        plt.close(fig)


def _trials_plot(view: RunView) -> str | None:
    metric = view.summary.get("metric")
    if not metric or not view.results:
        return None
    curves: dict[str, list[tuple[float, float]]] = {}
    for row in view.results:
        step, value = _float(row.get("step")), _float(row.get(metric))
        if math.isfinite(step) and math.isfinite(value):
            curves.setdefault(str(row.get("trial_id")), []).append((step, value))
    if not curves:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.6), dpi=100)
    try:
        for trial_id, points in sorted(curves.items()):
            xs, ys = zip(*sorted(points), strict=True)
            ax.plot(xs, ys, "-o", ms=3, lw=1, label=trial_id)
        ax.set_xlabel("step")
        ax.set_ylabel(str(metric))
        ax.grid(alpha=0.3)
        if len(curves) <= 12:
            ax.legend(fontsize=6, loc="best")
        fig.tight_layout()
        return _svg(fig)
    finally:
        plt.close(fig)


# --------------------------------------------------------------------------------- page
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;
max-width:1180px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right;vertical-align:top}
th{background:#f3f3f3}td.text,th.text{text-align:left}
td.widths{font-family:ui-monospace,Menlo,Consolas,monospace;text-align:left;font-size:12px}
.plots{display:flex;flex-wrap:wrap;gap:12px}.plots figure{margin:0}
figcaption{font-size:12px;color:#555;text-align:center}
pre{background:#f7f7f7;border:1px solid #e3e3e3;padding:8px;font-size:12px;overflow:auto}
.muted{color:#777}.status-complete{color:#1a7f37}.status-failed{color:#c62828}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _kv_table(items: Sequence[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><th class='text'>{_e(k)}</th><td class='text'>{_e(v)}</td></tr>"
                   for k, v in items if v not in (None, "", {}))
    return f"<table>{rows}</table>" if rows else "<p class='muted'>not recorded</p>"


def _figure(svg: str | None, caption: str) -> str:
    if svg is None:
        return ""
    return f"<figure>{svg}<figcaption>{_e(caption)}</figcaption></figure>"


def _front_html(view: RunView) -> str:
    if not view.front:
        return "<p class='muted'>no front yet (no successful candidate, or no pareto.csv)</p>"
    groups = f" ({', '.join(view.group_names)})" if view.group_names else ""
    head = ("<tr><th>id</th><th>error</th><th>latency ms (table)</th>"
            "<th>latency ms (measured)</th><th>memory MB</th><th>MACs</th><th>params</th>"
            f"<th class='text'>widths per layer{_e(groups)}</th></tr>")
    body = []
    for row in _sorted_front(view.front):
        cells = _front_cells(row)
        tds = "".join(f"<td>{_e(c)}</td>" for c in cells[:-1])
        body.append(f"<tr data-id='{row.id}'>{tds}<td class='widths'>{_e(cells[-1])}</td></tr>")
    return f"<table id='front'>{head}{''.join(body)}</table>"


def _dict_rows_html(rows: Sequence[Mapping[str, Any]], columns: Sequence[str],
                    table_id: str) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_e(_short(r.get(c, '')))}</td>" for c in columns)
                   + "</tr>" for r in rows)
    return f"<table id='{table_id}'><tr>{head}</tr>{body}</table>"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return str(value)


def _trials_html(view: RunView) -> str:
    if not view.trials:
        return ""
    rows = []
    for trial in view.trials:
        final = trial.get("final") or {}
        rows.append({"trial": trial.get("trial_id"), "status": trial.get("status"),
                     "params": trial.get("params"), "steps": trial.get("steps"),
                     **{k: final.get(k) for k in ("error", "latency_ms", "memory_mb", "macs",
                                                   "params") if k in final},
                     "error message": trial.get("error") or ""})
    columns = list(dict.fromkeys(k for r in rows for k in r))
    best = view.summary.get("best_trial") or {}
    metric = view.summary.get("metric")
    best_line = ""
    if best:
        best_line = (f"<p>best trial <b>{_e(best.get('trial_id'))}</b>: {_e(metric)} = "
                     f"{_e(_short(best.get(metric)))} ({_e(view.summary.get('mode', ''))})</p>")
    plot = _figure(_trials_plot(view), f"{metric} per step, one line per trial")
    return (f"<h2>Trials</h2>{best_line}{_dict_rows_html(rows, columns, 'trials')}"
            f"<div class='plots'>{plot}</div>")


def _rounds_html(view: RunView) -> str:
    header, rows = _rounds_rows(view)
    if not rows:
        return ""
    head = "".join(f"<th>{_e(c)}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    notes = "".join(f"<li>{_e(n)}</li>" for n in _rounds_notes(view))
    return ("<h2>Accuracy per round</h2><p class='muted'>test accuracy, mean +- std over folds; "
            "round 0 is the dense network</p>"
            f"<table id='rounds'><tr>{head}</tr>{body}</table><ul>{notes}</ul>")


def _operators_html(view: RunView) -> str:
    if not view.operators:
        return ""
    counts: dict[str, int] = {}
    for _, name in view.operators:
        counts[name] = counts.get(name, 0) + 1
    count_text = ", ".join(f"{name} {n}" for name, n in sorted(counts.items()))
    listing = " ".join(f"{g}:{name}" for g, name in view.operators)
    plot = _figure(_operator_plot(view), "operator chosen after each generation (driver.log)")
    return ("<h2>Selection operator per generation</h2>"
            f"<div class='plots'>{plot}</div>"
            f"<p>generations per operator: {_e(count_text)}</p>"
            f"<details><summary>every generation</summary><pre>{_e(listing)}</pre></details>")


#: summary.json's device_budget keys: (objective axis, text before the value, unit).
_BUDGET_AXES = {"max_latency_ms": (1, "latency <=", "ms (table)"),
                "max_memory_mb": (2, "memory <=", "MB")}


def _budget_text(view: RunView) -> str | None:
    """The search's device budget (``search.max_latency_ms`` / ``max_memory_mb``), if any."""
    budget = view.summary.get("device_budget")
    if not isinstance(budget, Mapping):
        return None
    parts = [f"{text} {budget[key]:.4g} {unit}" for key, (_, text, unit) in _BUDGET_AXES.items()
             if isinstance(budget.get(key), (int, float))]
    over = budget.get("measured_over")
    if parts and isinstance(over, Mapping) and over:
        parts.append("front members measured end to end above it: "
                     + ", ".join(f"{k} ({v:.3f} ms)" for k, v in over.items()))
    return ", ".join(parts) or None


def _overview(view: RunView) -> list[tuple[str, Any]]:
    s = view.summary
    hv = s.get("hypervolume")
    wall = s.get("wall_s")
    evaluations = s.get("evaluations")
    if evaluations is None and isinstance(s.get("trials"), dict):
        evaluations = f"{s['trials'].get('total')} trials ({s['trials'].get('complete')} complete, " \
                      f"{s['trials'].get('failed')} failed)"
    elif evaluations is not None:
        evaluations = f"{evaluations} ({s.get('failed', view.failed)} failed)"
    dense = view.dense or {}
    return [
        ("method", view.method),
        ("status", s.get("status")),
        ("evaluations", evaluations),
        ("budget", s.get("budget")),
        ("device budget", _budget_text(view)),
        ("generations", s.get("generations") or None),
        ("front size", len(view.front) if view.front or not view.rounds else None),
        ("hypervolume", f"{hv:.4f}" if isinstance(hv, (int, float)) else None),
        ("wall time", f"{wall:.0f} s ({wall / 60:.1f} min)" if isinstance(wall, (int, float))
         else None),
        ("dense model", ", ".join(f"{k} {v:.4g}" for k, v in dense.items()
                                  if isinstance(v, (int, float))) or None),
        ("headline", s.get("headline")),
        ("storage", s.get("storage_uri")),
    ]


def _hardware(view: RunView) -> list[tuple[str, Any]]:
    items = [(k, v) for k, v in view.hardware.items()]
    table = view.latency_table
    key = table.get("key") if isinstance(table.get("key"), dict) else {}
    for name in ("device", "threads", "torch_version"):
        if name in key:
            items.append((f"latency table: {name}", key[name]))
    for name in ("calibration", "scale", "offset_ms", "warmup", "repeats"):
        if name in table:
            value = table[name]
            items.append((f"latency table: {name}",
                          f"{value:.4g}" if isinstance(value, float) else value))
    return items


def render_html(view: RunView) -> str:
    """The page for ``view`` (a complete HTML document with everything inline)."""
    status = str(view.summary.get("status", ""))
    plots = "".join([
        _figure(_objective_plot(view, 1, "latency (ms, calibrated table)"),
                "error vs latency"),
        _figure(_objective_plot(view, 2, "memory (MB)"), "error vs memory"),
        _figure(_hv_plot(view), "hypervolume of the front over evaluations"),
    ])
    sections = [
        f"<h1>prunesearch report: {_e(view.run_dir.name)}</h1>",
        (f"<p class='muted'>{_e(view.run_dir)} &middot; method {_e(view.method)} &middot; "
         f"<span class='status-{_e(status)}'>{_e(status or 'unknown status')}</span> &middot; "
         f"rendered {_e(time.strftime('%Y-%m-%d %H:%M:%S'))}</p>"),
        "<h2>Overview</h2>", _kv_table(_overview(view)),
    ]
    if view.front or not (view.trials or view.rounds):
        sections += [
            "<h2>Pareto front</h2>",
            ("<p class='muted'>fastest first; latency (table) is the search's objective, "
             "(measured) the end-to-end re-timing on the idle device</p>"),
            _front_html(view),
            f"<div class='plots'>{plots}</div>" if plots else "",
        ]
    sections.append(_rounds_html(view))
    if view.finetuned:
        columns = [c for c in view.finetuned[0] if c not in ("error", "memory_mb")]
        sections += ["<h2>Fine-tuned members</h2>",
                     _dict_rows_html(view.finetuned, columns, "finetuned")]
    if view.baselines:
        sections += ["<h2>Baselines</h2>",
                     _dict_rows_html(view.baselines, list(view.baselines[0]), "baselines")]
    # A round-based method (ICPG) times nothing: the config's hardware section is only defaults.
    timed = bool(view.front or view.latency_table or not view.rounds)
    sections += [_trials_html(view), _operators_html(view),
                 *(["<h2>Hardware</h2>", _kv_table(_hardware(view))] if timed else []),
                 "<h2>Config</h2>",
                 f"<pre>{_e(view.config_text)}</pre>" if view.config_text
                 else "<p class='muted'>no config.yaml</p>"]
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>prunesearch: {_e(view.run_dir.name)}</title><style>{_CSS}</style></head>"
            f"<body>{''.join(sections)}</body></html>\n")


def write_html_report(run_dir: str | Path) -> HtmlReport:
    """Write ``RUN_DIR/report.html`` (atomically) from the run directory's files.

    Call it after the method's reporter has re-rendered ``pareto.csv`` and ``summary.json``.

    Returns:
        The path written, the front as a terminal table, and the data shown.
    """
    run_dir = Path(run_dir)
    view = load_run_view(run_dir)
    path = run_dir / REPORT_FILE
    atomic_write_text(path, render_html(view))
    return HtmlReport(path=path, front_table=format_front_table(view.front), view=view,
                      terminal=format_terminal(view))
