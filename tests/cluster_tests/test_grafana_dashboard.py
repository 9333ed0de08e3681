"""``cluster/deploy/grafana-prunesearch.json``: every panel queries a metric that
``cluster/metrics.py`` really exports (``ray_`` prefix, ``_total`` on counters only, tags it
sets), filtered by the ``run`` template variable; every exported metric has a panel; the
dashboard does not collide with Ray's own."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import ClassVar

import pytest

from prunesearch.cluster import metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "cluster" / "deploy" / "grafana-prunesearch.json"

# Copied from cluster/metrics.py on purpose: a rename there must be a conscious dashboard change.
EXPECTED_NAMES = {
    "prunesearch_generation", "prunesearch_evaluations", "prunesearch_evaluations_failed",
    "prunesearch_hypervolume", "prunesearch_front_size", "prunesearch_evals_per_s",
    "prunesearch_portfolio_operator",
    "prunesearch_trials_running", "prunesearch_trials_done", "prunesearch_trials_failed",
    "prunesearch_best_metric",
}
#: Labels Ray adds to every application metric (usable in queries besides the metric's tags).
RAY_LABELS = {"SessionName", "NodeAddress", "Component", "WorkerId", "JobId", "instance", "job"}


class _Recorder:
    """Stands in for ``ray.util.metrics`` classes: records what the publishers declare."""

    declared: ClassVar[dict[str, tuple[str, tuple[str, ...]]]] = {}

    def __init__(self, name: str, description: str = "", tag_keys: tuple[str, ...] = ()) -> None:
        self.declared[name] = (self.kind, tuple(tag_keys))

    def set(self, *args: object, **kwargs: object) -> None: ...

    def inc(self, *args: object, **kwargs: object) -> None: ...


class _Gauge(_Recorder):
    kind = "gauge"


class _Counter(_Recorder):
    kind = "counter"


@pytest.fixture(scope="module")
def declared() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Each metric's kind and tag keys, as RunMetrics and TrialMetrics declare them."""
    patch = pytest.MonkeyPatch()
    patch.setattr(metrics, "Gauge", _Gauge)
    patch.setattr(metrics, "Counter", _Counter)
    try:
        _Recorder.declared = {}
        metrics.RunMetrics("r")
        metrics.TrialMetrics("r")
        return dict(_Recorder.declared)
    finally:
        patch.undo()


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _targets(dashboard: dict) -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"]
            if panel.get("type") != "row" for target in panel["targets"]]


def test_the_metric_names_are_the_ones_metrics_py_exports(declared) -> None:
    assert set(metrics.METRIC_NAMES) | set(metrics.TRIAL_METRIC_NAMES) == EXPECTED_NAMES
    assert set(declared) == EXPECTED_NAMES


def test_every_query_names_an_exported_metric_its_way(dashboard, declared) -> None:
    for title, expr in _targets(dashboard):
        names = re.findall(r"\b(ray_prunesearch_\w+?)(?=\{)", expr)
        assert names, f"panel {title!r}: no prunesearch metric in {expr!r}"
        for name in names:
            base = name.removeprefix("ray_")
            kind = "counter" if base.endswith("_total") else "gauge"
            base = base.removesuffix("_total")
            assert base in declared, f"panel {title!r} queries unknown metric {name}"
            assert declared[base][0] == kind, \
                f"panel {title!r}: {name} (a {declared[base][0]} is exported as " \
                f"ray_{base}{'_total' if declared[base][0] == 'counter' else ''})"
            assert 'run=~"$run"' in expr, f"panel {title!r} is not filtered by $run"
        for labels in re.findall(r"\bby \(([^)]*)\)", expr):
            for label in (x.strip() for x in labels.split(",")):
                tags = {t for n in names for t in declared[n.removeprefix("ray_")
                                                           .removesuffix("_total")][1]}
                assert label in tags | RAY_LABELS, f"panel {title!r} groups by unknown {label}"


def test_every_exported_metric_has_a_panel(dashboard) -> None:
    shown = {re.sub(r"_total$", "", n.removeprefix("ray_"))
             for _, expr in _targets(dashboard)
             for n in re.findall(r"\bray_prunesearch_\w+?(?=\{)", expr)}
    assert shown == EXPECTED_NAMES


def test_dashboard_is_importable_beside_rays(dashboard) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["run"]["type"] == "query" and "run)" in variables["run"]["definition"]
    assert variables["run"]["includeAll"] and variables["run"]["multi"]
    # Ray provisions rayDefaultDashboard, rayServeDashboard, ...: ours must not replace one.
    assert not dashboard["uid"].startswith("ray") and dashboard["title"] == "prunesearch"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == "${datasource}"
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
        assert [t["refId"] for t in panel["targets"]] == \
            [chr(65 + i) for i in range(len(panel["targets"]))]
