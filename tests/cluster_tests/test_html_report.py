"""``prunesearch report`` writes ``report.html``: a static page of the front, plots, hypervolume,
operators, hardware and config, for a search run (a real HAMP run on the synthetic evaluator,
through the CLI), a Tune-trial method's directory and a HALP-style one; it opens in headless
Chromium (skipped where Chromium is absent) and the front is printed in the terminal."""

from __future__ import annotations

import csv
import html.parser
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from prunesearch.cluster.html_report import format_front_table, load_run_view, write_html_report

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prunesearch", *args], cwd=REPO, check=False,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def search_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A HAMP search (synthetic evaluator: no training) of four generations, then ``report``."""
    run_dir = tmp_path_factory.mktemp("report") / "hamp-run"
    proc = _cli("run", "configs/synthetic-small.yaml", "--output", str(run_dir),
                "--set", "method=hamp", "--set", "search.budget=24", "--set", "search.pop_size=6")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = _cli("report", str(run_dir), timeout=120)
    assert report.returncode == 0, report.stderr[-3000:]
    return run_dir, report


class _Page(html.parser.HTMLParser):
    """Collects what a reader sees: front row ids, headings, inline svgs, external refs."""

    def __init__(self) -> None:
        super().__init__()
        self.front_ids: list[int] = []
        self.headings: list[str] = []
        self.svgs = 0
        self.external: list[str] = []
        self._in_heading = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "tr" and attributes.get("data-id") is not None:
            self.front_ids.append(int(attributes["data-id"]))
        if tag == "svg":
            self.svgs += 1
        if tag in ("script", "link", "iframe", "img"):
            self.external.append(tag)
        for key in ("src", "href"):
            value = attributes.get(key) or ""
            if value.startswith(("http:", "https:", "//")):
                self.external.append(value)
        self._in_heading = tag == "h2"

    def handle_data(self, data: str) -> None:
        if self._in_heading and data.strip():
            self.headings.append(data.strip())
            self._in_heading = False


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text())
    return page


def _pareto_ids(run_dir: Path) -> list[int]:
    with (run_dir / "pareto.csv").open() as fh:
        return [int(row["id"]) for row in csv.DictReader(fh)]


def test_search_report_shows_the_front_plots_and_operators(search_run) -> None:
    run_dir, _ = search_run
    path = run_dir / "report.html"
    assert path.exists()
    page = _parse(path)
    ids = _pareto_ids(run_dir)
    assert ids and sorted(page.front_ids) == sorted(ids), "every front member, nothing else"
    # error vs latency, error vs memory, hypervolume over evaluations, operators per generation
    assert page.svgs == 4
    assert not page.external, f"the page must open offline: {page.external}"
    for heading in ("Pareto front", "Selection operator per generation", "Hardware", "Config"):
        assert heading in page.headings
    view = load_run_view(run_dir)
    assert [g for g, _ in view.operators] == list(range(1, len(view.operators) + 1))
    assert len(view.operators) == json.loads((run_dir / "summary.json").read_text())["generations"]
    # The curve ends at the run's hypervolume and never goes down.
    hv = [v for _, v in view.hv_curve]
    assert view.hv_curve[-1][0] == 24 and np.all(np.diff(hv) >= -1e-12)
    assert hv[-1] == pytest.approx(json.loads((run_dir / "summary.json").read_text())
                                   ["hypervolume"], rel=1e-9)
    # Widths per layer come from the journal's channels.
    journal = {r["id"]: r for r in map(json.loads, (run_dir / "journal.jsonl").open())}
    member = view.front[0]
    assert list(member.widths) == journal[member.id]["channels"]


def test_report_prints_the_front_as_a_table(search_run) -> None:
    run_dir, report = search_run
    lines = report.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["id", "error",
                                                                             "latency_ms"])
    rows = lines[header + 1: header + 1 + len(_pareto_ids(run_dir))]
    assert sorted(int(r.split()[0]) for r in rows) == sorted(_pareto_ids(run_dir))
    assert f"wrote {run_dir / 'report.html'}" in report.stdout


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium is not installed")
def test_report_renders_in_headless_chromium(search_run, tmp_path) -> None:
    run_dir, _ = search_run
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
         "--window-size=1200,900", (run_dir / "report.html").as_uri()],
        check=False, capture_output=True, text=True, timeout=120)
    assert shot.exists(), proc.stderr[-2000:]
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (900, 1200)
    assert pixels.std() > 10, "blank screenshot"
    # Text and table lines, not one flat colour with a speck: many rows carry ink.
    assert (pixels < 128).any(axis=1).mean() > 0.2


def _write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


_PARETO = [{"id": 0, "genome": "2 3", "error": 0.12, "latency_ms": 4.0, "latency_ms_measured": 4.4,
            "memory_mb": 2.0, "macs": 1.5e6, "params": 1200},
           {"id": 2, "genome": "4 4", "error": 0.08, "latency_ms": 7.0, "latency_ms_measured": "",
            "memory_mb": 3.0, "macs": 3.0e6, "params": 2400}]


def test_trial_method_directory(tmp_path) -> None:
    """What the Tune runner writes: results.csv, trials.json, summary.json, pareto.csv."""
    run = tmp_path / "clad-run"
    run.mkdir()
    (run / "config.yaml").write_text("method: clad\nseed: 0\n")
    trials = [{"trial_id": f"t{i}", "params": {"keep_ratio": r}, "status": s, "error": e,
               "steps": 2, "final": f}
              for i, (r, s, e, f) in enumerate([
                  (0.3, "complete", None, {"error": 0.12, "latency_ms": 4.0, "memory_mb": 2.0,
                                           "macs": 1.5e6, "params": 1200, "genome": [2, 3],
                                           "channels": [8, 12]}),
                  (0.5, "failed", "RuntimeError: out of memory", None),
                  (0.7, "complete", None, {"error": 0.08, "latency_ms": 7.0, "memory_mb": 3.0,
                                           "macs": 3.0e6, "params": 2400, "genome": [4, 4],
                                           "channels": [16, 16]})])]
    (run / "trials.json").write_text(json.dumps(trials))
    _write_csv(run / "results.csv", [{"trial_id": t, "keep_ratio": r, "step": s, "val_acc": a}
                                     for t, r in (("t0", 0.3), ("t2", 0.7))
                                     for s, a in ((1, 0.8), (2, 0.9))])
    (run / "summary.json").write_text(json.dumps({
        "method": "clad", "status": "complete", "wall_s": 12.5, "metric": "val_acc",
        "mode": "max", "trials": {"total": 3, "complete": 2, "failed": 1, "unfinished": 0},
        "best_trial": {"trial_id": "t2", "val_acc": 0.9}, "front_size": 2}))
    _write_csv(run / "pareto.csv", _PARETO)
    page = write_html_report(run)
    parsed = _parse(page.path)
    assert sorted(parsed.front_ids) == [0, 2]
    assert "Trials" in parsed.headings and "Selection operator per generation" not in \
        parsed.headings
    text = page.path.read_text()
    assert "RuntimeError: out of memory" in text and "t2" in text
    assert parsed.svgs == 3  # error vs latency, error vs memory, the metric per step
    # Widths from the trials' final networks; the missing measurement shows as '-'.
    assert "16 16" in page.front_table and " - " in page.front_table


def test_halp_style_directory_with_finetuned_members(tmp_path) -> None:
    """pareto.csv + summary.json only (no journal), plus finetuned.csv and baselines.csv."""
    run = tmp_path / "halp-run"
    run.mkdir()
    _write_csv(run / "pareto.csv", _PARETO)
    (run / "summary.json").write_text(json.dumps({
        "method": "halp", "status": "complete", "evaluations": 2, "failed": 0, "wall_s": 30.0,
        "dense": {"error": 0.07, "latency_ms": 10.0, "memory_mb": 4.0}, "targets_ms": [4, 7]}))
    _write_csv(run / "finetuned.csv", [{"id": 2, "genome": "4 4", "test_acc": 0.93,
                                        "val_acc": 0.94, "search_val_acc": 0.92, "macs": 3e6,
                                        "params": 2400, "latency_ms": 7.0,
                                        "latency_ms_measured": 7.2, "epochs": 5,
                                        "distill": "true"}])
    _write_csv(run / "baselines.csv", [{"label": "uniform 50%", "error": 0.1,
                                        "latency_ms": 5.5, "memory_mb": 2.5}])
    page = write_html_report(run)
    parsed = _parse(page.path)
    assert sorted(parsed.front_ids) == [0, 2]
    assert {"Fine-tuned members", "Baselines"} <= set(parsed.headings)
    assert parsed.svgs == 2  # no journal: no hypervolume curve
    view = page.view
    assert view.finetuned[0]["error"] == pytest.approx(0.06)
    assert view.finetuned[0]["memory_mb"] == 3.0, "memory taken from the front member"
    assert view.dense["latency_ms"] == 10.0


def test_an_empty_run_directory_still_gets_a_page(tmp_path) -> None:
    page = write_html_report(tmp_path)
    assert page.path.exists() and _parse(page.path).front_ids == []
    assert format_front_table([]).startswith("front: empty")


def test_round_based_trial_method_shows_accuracy_per_round(tmp_path) -> None:
    """An ICPG run has trials and rounds but no front: the page and the terminal show the
    accuracy per round and baseline (from the method's own summary), not an empty front."""
    from prunesearch.methods.icpg import ICPG_METHOD

    rows = [{"trial_id": f"{b}-{fold}", "baseline": b, "fold": fold, "round": r,
             "test_acc": acc - 0.01 * r * (b == "random") + (0.02 if fold else -0.02),
             "val_acc": acc,
             "weight_sparsity": 1 - 0.8 ** r, "weight_sparsity_nominal": 1 - 0.8 ** r,
             "graph_sparsity": 0.04 * r, "graph_sparsity_nominal": 1 - 0.95 ** r,
             "selection": "val"}
            for b in ("icpg", "random") for fold in range(2) for r, acc in enumerate((0.8, 0.79))]
    run = tmp_path / "icpg-run"
    run.mkdir()
    (run / "config.yaml").write_text("method: icpg\nseed: 0\n")
    (run / "trials.json").write_text(json.dumps(
        [{"trial_id": f"{b}-{f}", "params": {"icpg.baseline": b, "icpg.fold": f},
          "status": "complete", "steps": 2, "final": {"val_acc": 0.79}}
         for b in ("icpg", "random") for f in range(2)]))
    _write_csv(run / "results.csv", rows)
    (run / "summary.json").write_text(json.dumps({
        "method": "icpg", "status": "complete", "metric": "val_acc", "mode": "max",
        "trials": {"total": 4, "complete": 4, "failed": 0, "unfinished": 0},
        "method_summary": ICPG_METHOD.summarize(rows)}))
    page = write_html_report(run)
    parsed = _parse(page.path)
    assert "Accuracy per round" in parsed.headings and "Trials" in parsed.headings
    assert "Pareto front" not in parsed.headings  # no front to show
    assert "Hardware" not in parsed.headings  # nothing was timed: only the config's defaults
    lines = page.terminal.splitlines()
    assert "icpg test acc" in lines[0] and "random test acc" in lines[0]
    # Round 1: ICPG 0.79 +- 0.02 over the two folds, random 0.01 lower; sparsities nominal /
    # realised.
    round_1 = next(line for line in lines if line.split()[0] == "1")
    assert "0.200 / 0.200" in round_1 and "0.050 / 0.040" in round_1
    assert "0.790 +- 0.020" in round_1 and "0.780 +- 0.020" in round_1
    assert any(line.startswith("icpg: dense 0.800") for line in lines)
    assert "front: empty" not in page.terminal
    assert "0.780 +- 0.020" in page.path.read_text()
