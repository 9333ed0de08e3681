"""The end-of-run re-timing and the table calibration resist a slow spell of the machine
(issue 16, item 3): one network timed while the machine was slowed does not tilt the fit, and
one slowed timing does not become a front member's figure."""

from __future__ import annotations

import json

import pytest

from prunesearch.cluster.retime import retime_front
from prunesearch.methods.cost.table import fit_calibration


def test_the_robust_calibration_ignores_one_network_timed_in_a_slow_spell():
    raw = [2.0, 3.0, 4.0, 5.0, 6.0]
    measured = [1.1 * r + 0.2 for r in raw]
    measured[-1] *= 1.3  # the largest network timed while a neighbour ran
    scale, offset = fit_calibration(raw, measured, "robust")
    assert scale == pytest.approx(1.1, rel=1e-6) and offset == pytest.approx(0.2, abs=1e-6)
    # Least squares is tilted by it: a small network is predicted well off.
    ls_scale, ls_offset = fit_calibration(raw, measured, "linear")
    assert abs(ls_scale * 2.0 + ls_offset - 2.4) / 2.4 > 0.1


class _Models:
    def load_weights(self, cid):
        return {"cid": cid}


class _Interrupt(Exception):
    pass


def test_retiming_takes_the_median_of_passes_and_resumes_an_interrupted_pass(tmp_path):
    (tmp_path / "state").mkdir()
    by_id = {cid: {"genome": [cid]} for cid in (1, 2, 3)}
    true_ms = {1: 2.0, 2: 3.0, 3: 4.0}
    calls: list[int] = []

    def measure(genome, weights, slow_call=1, stop_at=None):
        calls.append(genome[0])
        if stop_at is not None and len(calls) == stop_at:
            raise _Interrupt
        factor = 1.5 if len(calls) == slow_call else 1.0  # one timing in a slow spell
        return {"latency_ms_measured": true_ms[genome[0]] * factor}

    with pytest.raises(_Interrupt):  # killed during the second pass
        retime_front(tmp_path, [1, 2, 3], by_id, models=_Models(),
                     measure=lambda g, w: measure(g, w, stop_at=5), where="test",
                     log=lambda line: None, rounds=3)
    partial = json.loads((tmp_path / "state" / "measured.json").read_text())
    assert {k: len(v["rounds"]) for k, v in partial.items()} == {"1": 1, "2": 1, "3": 2}
    calls.clear()
    measured = retime_front(tmp_path, [1, 2, 3], by_id, models=_Models(),
                            measure=lambda g, w: measure(g, w, slow_call=0), where="test",
                            log=lambda line: None, rounds=3)
    # Second pass runs backwards (3 was done there before the stop), third forwards.
    assert calls == [2, 1, 1, 2, 3]
    for cid, ms in true_ms.items():
        entry = measured[str(cid)]
        assert len(entry["rounds"]) == 3
        assert entry["latency_ms_measured"] == pytest.approx(ms)  # the slow first pass of 1 is out
    assert measured["1"]["rounds"][0]["latency_ms_measured"] == pytest.approx(3.0)
    # Complete: nothing left to time; an entry from before passes counts as complete.
    assert retime_front(tmp_path, [1, 2, 3], by_id, models=_Models(), measure=measure,
                        where="test", log=lambda line: None, rounds=3) is None
    old = {"7": {"latency_ms_measured": 1.0}}
    (tmp_path / "state" / "measured.json").write_text(json.dumps(old))
    assert retime_front(tmp_path, [7], {7: {"genome": [7]}}, models=_Models(), measure=measure,
                        where="test", log=lambda line: None, rounds=3) is None


def test_retiming_with_min_keeps_the_fastest_pass(tmp_path):
    (tmp_path / "state").mkdir()
    by_id = {1: {"genome": [1]}}
    for how, expected in (("min", 2.0), ("median", 3.0)):
        (tmp_path / "state" / "measured.json").unlink(missing_ok=True)
        spells = iter([1.6, 1.0, 1.5])  # two of three passes in a slow spell: median is slow
        measured = retime_front(
            tmp_path, [1], by_id, models=_Models(),
            measure=lambda g, w: {"latency_ms_measured": 2.0 * next(spells)}, where="test",
            log=lambda line: None, rounds=3, statistic=how)
        assert measured["1"]["latency_ms_measured"] == pytest.approx(expected)
        assert len(measured["1"]["rounds"]) == 3
