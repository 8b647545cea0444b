"""Per-version figures: buckets, quantiles, the sliding window, exact counts under threads."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import pytest
from flask import Flask

from flask_tenant_cache.figures import BOUNDS, Figures, quantile
from tests.helpers import forks_with_threads
from tests.helpers.app import FakeTimer, build_app


def test_bounds_run_from_a_microsecond_to_ten_seconds() -> None:
    assert BOUNDS[0] == 1e-6
    assert BOUNDS[-1] == 10.0
    assert list(BOUNDS) == sorted(set(BOUNDS))


def test_quantiles_interpolate_within_the_bucket() -> None:
    buckets = [0] * (len(BOUNDS) + 1)
    one_ms = BOUNDS.index(0.001)
    buckets[one_ms] = 100  # all in (500 µs, 1 ms]
    assert quantile(0.5, buckets) == pytest.approx(0.00075)
    assert quantile(0.99, buckets) == pytest.approx(0.000995)
    assert quantile(0.5, [0] * len(buckets)) is None
    buckets[-1] = 1000  # past the last bound: reported as the last bound
    assert quantile(0.99, buckets) == 10.0


def test_a_request_lands_in_its_version_and_the_window_slides() -> None:
    timer = FakeTimer()
    figures = Figures(timer=timer)
    for _ in range(98):
        figures.record("v2", 2e-6, 1e-4, error=False, unavailable=False, now=timer())
    figures.record("v2", 0.2, 0.3, error=False, unavailable=False, now=timer())
    figures.record("v2", 0.2, 0.3, error=True, unavailable=True, now=timer())
    figures.record("v1", 3e-6, 1e-4, error=False, unavailable=False, now=timer())
    window = figures.window()
    v2 = window["v2"]
    assert (v2["requests"], v2["errors"], v2["unavailable"]) == (100, 1, 1)
    assert v2["error_ratio"] == 0.01
    assert 1e-6 < v2["resolve_seconds"]["p50"] <= 2.5e-6
    assert 0.1 < v2["resolve_seconds"]["p99"] <= 0.25
    assert window["v1"]["requests"] == 1
    assert window["v1"]["error_ratio"] == 0.0

    timer.advance(50)  # still inside the 60 s window
    assert figures.window()["v2"]["requests"] == 100
    timer.advance(11)
    assert figures.window()["v2"]["requests"] == 0
    assert figures.window()["v2"]["resolve_seconds"]["p99"] is None
    # The since-start totals keep what left the window, including after the ring reuses it.
    figures.record("v2", 2e-6, 1e-4, error=False, unavailable=False, now=timer())
    totals = figures.histograms()["v2"]
    assert (totals["requests"], totals["errors"], totals["unavailable"]) == (101, 1, 1)
    assert sum(totals["resolve"][0]) == 101
    assert totals["resolve"][1] == pytest.approx(99 * 2e-6 + 0.4)


def test_records_from_many_threads_are_all_counted() -> None:
    timer = FakeTimer()
    figures = Figures(timer=timer)
    threads, each = 8, 2000
    barrier = threading.Barrier(threads)

    def work(index: int) -> None:
        barrier.wait()
        for _ in range(each):
            figures.record(
                "v1" if index % 2 else "v2", 1e-5, 1e-4, error=False, unavailable=False, now=timer()
            )
            figures.record_shadow(mismatched=index == 0)

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    window = figures.window()
    assert window["v1"]["requests"] == window["v2"]["requests"] == threads // 2 * each
    assert window["shadow"]["compared"] == threads * each
    assert window["shadow"]["mismatched"] == each


def _figures(app: Flask) -> dict[str, Any]:
    with app.app_context():
        result: dict[str, Any] = app.extensions["test"]["ext"].stats()["figures"]
        return result


def test_requests_are_counted_per_version_with_their_errors_and_503s() -> None:
    clock = FakeTimer()
    app = build_app(clock=clock, TENANT_CACHE_USE_V2=False)
    client = app.test_client()
    loader = app.extensions["test"]["loader"]
    assert client.get("/whoami", headers={"X-Tenant-ID": "acme"}).status_code == 200
    assert client.get("/whoami", headers={"X-Tenant-ID": "nobody"}).status_code == 404
    loader.fail = ConnectionError("database down")
    assert client.get("/whoami", headers={"X-Tenant-ID": "globex"}).status_code == 503
    assert client.get("/health").status_code == 200  # exempt: nothing resolved, not counted
    assert client.get("/whoami", headers={"X-Tenant-ID": "-bad-"}).status_code == 400
    app.config["TENANT_CACHE_USE_V2"] = True
    loader.fail = None
    assert client.get("/whoami", headers={"X-Tenant-ID": "acme"}).status_code == 200

    figures = _figures(app)
    assert (figures["v1"]["requests"], figures["v1"]["errors"], figures["v1"]["unavailable"]) == (
        3,
        1,
        1,
    )
    assert figures["v1"]["error_ratio"] == pytest.approx(1 / 3)
    assert (figures["v2"]["requests"], figures["v2"]["errors"]) == (1, 0)
    # The fake clock did not move: every time is zero, in the first bucket.
    assert figures["v2"]["request_seconds"]["p99"] == pytest.approx(0.99e-6)


@pytest.mark.parametrize("propagate", [False, True], ids=["answered 500", "propagated"])
def test_a_request_whose_view_raises_is_counted_as_a_500(propagate: bool) -> None:
    app = build_app(clock=FakeTimer(), TENANT_CACHE_USE_V2=False, PROPAGATE_EXCEPTIONS=propagate)

    @app.route("/boom")
    def boom() -> str:
        raise RuntimeError("the view failed")

    client = app.test_client()
    if propagate:
        with pytest.raises(RuntimeError, match="the view failed"):
            client.get("/boom", headers={"X-Tenant-ID": "acme"})
    else:
        assert client.get("/boom", headers={"X-Tenant-ID": "acme"}).status_code == 500
    v1 = _figures(app)["v1"]
    # Counted, and not as the resolver's error: its lookup succeeded.
    assert (v1["requests"], v1["errors"], v1["unavailable"]) == (1, 0, 0)


def test_the_request_time_spans_what_flask_runs_before_the_extension() -> None:
    clock = FakeTimer()
    app = build_app(clock=clock, TENANT_CACHE_USE_V2=False)
    # Flask runs URL value preprocessors before every before_request function.
    app.url_value_preprocessor(lambda endpoint, values: clock.advance(0.3))
    assert app.test_client().get("/whoami", headers={"X-Tenant-ID": "acme"}).status_code == 200
    v1 = _figures(app)["v1"]
    assert 0.25 < v1["request_seconds"]["p50"] <= 0.5
    assert v1["resolve_seconds"]["p50"] <= 1e-6


def test_prometheus_exports_real_histograms_per_version() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    app = build_app(clock=FakeTimer(), TENANT_CACHE_USE_V2=False)
    client = app.test_client()
    for tenant in ("acme", "globex", "nobody"):
        client.get("/whoami", headers={"X-Tenant-ID": tenant})
    response = client.get(
        "/_tenant-cache/metrics", headers={"Authorization": "Bearer test-admin-token-0123456789"}
    )
    assert response.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(response.get_data(as_text=True))}
    histogram = families["tenant_cache_resolve_seconds"]
    assert histogram.type == "histogram"
    samples = {
        (s.name, s.labels.get("version"), s.labels.get("le")): s.value for s in histogram.samples
    }
    assert samples[("tenant_cache_resolve_seconds_count", "v1", None)] == 3
    assert samples[("tenant_cache_resolve_seconds_bucket", "v1", "1e-06")] == 3
    assert samples[("tenant_cache_resolve_seconds_bucket", "v1", "+Inf")] == 3
    assert samples[("tenant_cache_resolve_seconds_count", "v2", None)] == 0
    assert families["tenant_cache_request_seconds"].type == "histogram"
    errors = {s.labels["version"]: s.value for s in families["tenant_cache_request_errors"].samples}
    assert errors == {"v1": 0, "v2": 0}


@forks_with_threads
def test_a_forked_child_counts_on_its_own_even_if_a_lock_was_held_at_the_fork() -> None:
    import os

    clock = FakeTimer()
    app = build_app(clock=clock, TENANT_CACHE_GUARD=True, TENANT_CACHE_USE_V2=False)
    client = app.test_client()
    assert client.get("/whoami", headers={"X-Tenant-ID": "acme"}).status_code == 200
    state = app.extensions["tenant_cache"]
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with state.figures._lock, state.control._lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(10)
    pid = os.fork()
    if pid == 0:  # the child: the holder thread does not exist here
        try:
            ok = client.get("/whoami", headers={"X-Tenant-ID": "acme"}).status_code == 200
            with app.app_context():
                figures = app.extensions["test"]["ext"].stats()["figures"]
            ok = ok and figures["v1"]["requests"] == 1  # its own request, not the parent's
            ok = ok and state.control.counters["ticks"] >= 1
        finally:
            os._exit(0 if ok else 1)
    release.set()
    holder.join()
    deadline = time.monotonic() + 10
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the child hung on a lock held at the fork")
    assert os.waitstatus_to_exitcode(done[1]) == 0


def test_a_thread_that_ends_leaves_its_counts_and_not_its_memory() -> None:
    timer = FakeTimer()
    figures = Figures(timer=timer)

    def work() -> None:
        for _ in range(10):
            figures.record("v2", 1e-5, 1e-4, False, True, timer())

    for _ in range(50):  # a thread per request, as a threaded development server has
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
    assert len(figures._rings) <= 1  # the ended threads' rings were merged
    window = figures.window()
    assert (window["v2"]["requests"], window["v2"]["unavailable"]) == (500, 500)
    timer.advance(61)
    assert figures.window()["v2"]["requests"] == 0
    assert figures.histograms()["v2"]["requests"] == 500


def test_a_reset_forgets_the_window_at_once_and_keeps_the_totals() -> None:
    timer = FakeTimer()
    figures = Figures(timer=timer)
    for _ in range(5):
        figures.record("v2", 1e-5, 1e-4, True, True, timer())
    figures.reset_window()
    assert figures.window()["v2"]["requests"] == 0
    figures.record("v2", 1e-5, 1e-4, False, False, timer())  # same slice of time, counted
    window = figures.window()["v2"]
    assert (window["requests"], window["errors"]) == (1, 0)
    totals = figures.histograms()["v2"]
    assert (totals["requests"], totals["errors"]) == (6, 5)


def test_each_record_lands_in_the_slice_its_time_falls_in() -> None:
    clock = [0.0]
    figures = Figures(timer=lambda: clock[0], slice_seconds=10.0, slices=6)
    for at in (9.999, 10.0, 19.999, 20.0, 69.999):
        figures.record("v2", 1e-5, 1e-4, False, False, at)
    clock[0] = 69.999  # the window is the slices from 10 s to 70 s: not the one before 10 s
    assert figures.window()["v2"]["requests"] == 4
    clock[0] = 70.0  # now from 20 s: the slice of 10.0 and 19.999 has left
    assert figures.window()["v2"]["requests"] == 2


def test_a_reset_while_a_thread_moves_to_its_next_slice_reaches_that_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A record keeps its slice until the slice ends; a reset_window that lands while a
    thread is picking its new slice must still make that thread's next record start afresh."""
    from flask_tenant_cache import figures as module

    timer = FakeTimer()
    figures = Figures(timer=timer)
    roll = module._Ring.roll
    resets = []

    def roll_then_reset(ring: Any, index: int, epoch: int) -> list[Any]:
        fresh = roll(ring, index, epoch)
        if not resets:
            resets.append(epoch)
            figures.reset_window()  # between the new slice and the mark of its end
        return fresh

    monkeypatch.setattr(module._Ring, "roll", roll_then_reset)
    figures.record("v2", 1e-5, 1e-4, False, False, timer())  # counted before the reset
    figures.record("v2", 1e-5, 1e-4, False, False, timer())  # after it: in the window
    assert resets
    assert figures.window()["v2"]["requests"] == 1
    assert figures.histograms()["v2"]["requests"] == 2
