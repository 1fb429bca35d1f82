"""The FERPlus study's runner (experiments/_common.py): scheduling, dependencies, the run lock."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import _common as c


def test_tasks_wait_for_what_they_need_and_failures_skip_dependants():
    order: list[str] = []
    lock = threading.Lock()

    def job(name: str, fail: bool = False, pause: float = 0.0):
        def run():
            time.sleep(pause)
            with lock:
                order.append(name)
            if fail:
                raise RuntimeError("boom")
            return name.upper()
        return run

    tasks = [c.Task("teacher", job("teacher", pause=0.2)), c.Task("a", job("a")),
             c.Task("ldl", job("ldl"), ("teacher",)), c.Task("bad", job("bad", fail=True)),
             c.Task("after-bad", job("after-bad"), ("bad",)), c.Task("b", job("b"))]
    done = c.run_tasks(tasks, jobs=2)
    assert done == {"teacher": "TEACHER", "a": "A", "ldl": "LDL", "b": "B"}
    assert order.index("ldl") > order.index("teacher") and "after-bad" not in order
    assert order.index("a") < order.index("teacher")  # the second thread did not wait for the teacher


def test_exclusive_makes_a_second_process_wait_and_takes_over_stale_locks(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(c, "WS", tmp_path)
    events: list[str] = []
    with c.exclusive("run"):
        t = threading.Thread(target=lambda: (c.exclusive("run", poll=0.05).__enter__(), events.append("second in")))
        # the same pid holds it, so the thread sees a live holder and waits
        t.start()
        time.sleep(0.3)
        events.append("first out")
    t.join(2)
    assert events == ["first out", "second in"]
    (tmp_path / "locks" / "run.lock").write_text("999999999 1")  # a dead process's lock
    with c.exclusive("run", poll=0.05):
        assert (tmp_path / "locks" / "run.lock").read_text().split()[0] == str(os.getpid())
    (tmp_path / "locks" / "run.lock").write_text(f"{os.getpid()} 1")  # our pid, but another start time: reused
    with c.exclusive("run", poll=0.05):
        assert (tmp_path / "locks" / "run.lock").read_text() == c._process_id(os.getpid())


def test_mean_std():
    assert c.mean_std([0.7]) == (0.7, 0.0)
    m, sd = c.mean_std([0.70, 0.72, 0.74])
    assert m == pytest.approx(0.72) and sd == pytest.approx(0.02)


def test_budget_fit_recovers_a_known_curve_and_refuses_to_invent_an_asymptote():
    import report

    true = lambda e: 0.88 - 0.9 * e ** -0.6  # noqa: E731 - a saturating curve with a known asymptote
    fit = report.fit_budget([20, 40, 60], [true(e) for e in (20, 40, 60)])
    sat = fit["saturating"]
    assert sat["asymptote"] == pytest.approx(0.88, abs=2e-3) and sat["c"] == pytest.approx(0.6, abs=0.02)
    assert sat["epochs_to_target"] == pytest.approx((0.9 / 0.04) ** (1 / 0.6), rel=0.05)
    # a concave curve: the log-linear reading is the optimistic one
    assert fit["loglinear"]["epochs_to_target"] < sat["epochs_to_target"]
    # points that do not bend over (gains growing per doubling) give no asymptote at all
    convex = report.fit_budget([20, 40, 60], [0.77, 0.78, 0.80])
    assert "saturating" not in convex and convex["loglinear"]["epochs_to_target"] > 60
    assert "saturating" not in report.fit_budget([20, 40, 60], [0.7386, 0.7788, 0.8004])  # asymptote > 100%
    # an asymptote below the target: never reached; falling accuracy: never reached either
    low = report.fit_budget([20, 40, 60], [0.80 - 0.5 * e ** -0.5 for e in (20, 40, 60)])
    assert low["saturating"]["epochs_to_target"] is None
    assert report.fit_budget([20, 60], [0.78, 0.77])["loglinear"]["epochs_to_target"] is None
