"""RunMetrics: the search's progress reaches Ray's Prometheus endpoint, tagged by run."""

from __future__ import annotations

import re
import time
import urllib.request

import pytest

ray = pytest.importorskip("ray")

from prunesearch.cluster.metrics import METRIC_NAMES, RunMetrics  # noqa: E402


def _scrape(port: int) -> dict[str, float]:
    """Series of prunesearch metrics on the endpoint, keyed by ``name{run=..,operator=..}``."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    series: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or "prunesearch_" not in line:
            continue
        match = re.match(r"^(\w+)\{(.*)\}\s+(\S+)$", line)
        if not match:
            continue
        name, labels, value = match.groups()
        tags = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        key = name + "{" + ",".join(
            f"{k}={tags[k]}" for k in ("run", "operator") if k in tags
        ) + "}"
        series[key] = float(value)
    return series


@pytest.fixture(scope="module")
def local_ray():
    # A private instance (never a head left on the machine); token auth stays on.
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.nodes()[0]["MetricsExportPort"]
    finally:
        ray.shutdown()


def test_metrics_appear_on_the_prometheus_endpoint_with_run_tag(local_ray):
    port = local_ray
    metrics = RunMetrics("metrics-test-run")
    metrics.update(generation=1, evaluations=8, failed=1, hypervolume=0.25, front_size=3,
                   evals_per_s=4.0, operator="sbx")
    metrics.update(generation=2, evaluations=16, failed=3, hypervolume=0.5, front_size=5,
                   evals_per_s=6.5, operator="de")
    expected = {
        "ray_prunesearch_generation{run=metrics-test-run}": 2.0,
        # Counters were fed running totals; they must show the totals, not their sum.
        "ray_prunesearch_evaluations_total{run=metrics-test-run}": 16.0,
        "ray_prunesearch_evaluations_failed_total{run=metrics-test-run}": 3.0,
        "ray_prunesearch_hypervolume{run=metrics-test-run}": 0.5,
        "ray_prunesearch_front_size{run=metrics-test-run}": 5.0,
        "ray_prunesearch_evals_per_s{run=metrics-test-run}": 6.5,
        "ray_prunesearch_portfolio_operator{run=metrics-test-run,operator=de}": 1.0,
        "ray_prunesearch_portfolio_operator{run=metrics-test-run,operator=sbx}": 0.0,
    }
    # The metrics agent exports on a timer (several seconds): poll.
    deadline = time.monotonic() + 30.0
    series: dict[str, float] = {}
    while time.monotonic() < deadline:
        series = _scrape(port)
        if all(series.get(k) == v for k, v in expected.items()):
            break
        time.sleep(0.5)
    assert {k: series.get(k) for k in expected} == expected
    exported = {key.split("{")[0] for key in series}
    for name in METRIC_NAMES:
        assert any(e in (f"ray_{name}", f"ray_{name}_total") for e in exported), name


def test_invalid_arguments_are_refused():
    with pytest.raises(ValueError, match="run_name"):
        RunMetrics("")
    metrics = RunMetrics("refusals")
    metrics.update(generation=1, evaluations=5, failed=0, hypervolume=None, front_size=1,
                   evals_per_s=1.0, operator=None)
    with pytest.raises(ValueError, match="must not decrease"):
        metrics.update(generation=2, evaluations=4, failed=0, hypervolume=None, front_size=1,
                       evals_per_s=1.0, operator=None)
    with pytest.raises(ValueError, match="front_size"):
        metrics.update(generation=2, evaluations=6, failed=0, hypervolume=None, front_size=-1,
                       evals_per_s=1.0, operator=None)
