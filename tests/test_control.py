"""The rollout plan and the guard in one process (no Redis), moved by an injected clock."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from flask import Flask

from flask_tenant_cache import signals
from tests.helpers.app import FakeTimer, Recorder, build_app
from tests.helpers.control import break_v2, control, plan_percent, probes, send, serve, tick

PLAN = [(1, 60), (5, 60), (100, 60)]
GUARDED = {"TENANT_CACHE_GUARD_MIN_SAMPLES": 10, "TENANT_CACHE_USE_V2": False}


def make(clock: FakeTimer, **config: Any) -> Flask:
    return build_app(clock=clock, **{"TENANT_CACHE_ROLLOUT_PLAN": PLAN, **GUARDED, **config})


def ext(app: Flask) -> Any:
    return app.extensions["test"]["ext"]


def test_the_plan_advances_after_a_healthy_bake_with_enough_samples() -> None:
    clock = FakeTimer()
    app = make(clock)
    on_v2 = probes(below=1)
    assert send(app, on_v2, 10) == [404] * 10  # the first request ticked: step 1 began
    plan = control(app)["plan"]
    assert (plan["step"], plan["percent"], plan["started_at"]) == (0, 1.0, 1000.0)
    assert control(app)["scope"] == "process"

    tick(app, clock, 30)  # half the bake time
    assert control(app)["plan"]["step"] == 0
    assert control(app)["plan"]["waiting_for"] == "30 s more of bake time at 1%"
    tick(app, clock, 31)  # baked, but the 10 v2 requests have left the 60 s window
    assert control(app)["plan"]["step"] == 0
    assert control(app)["plan"]["waiting_for"] == "10 v2 requests in the window"

    send(app, on_v2, 10)
    tick(app, clock)
    plan = control(app)["plan"]
    assert (plan["step"], plan["percent"], plan["started_at"]) == (1, 5.0, clock.now)
    assert plan_percent(app) == 5.0
    response = serve(app, next(probes(below=5, at_least=1)))
    assert response.status_code == 404
    with app.test_request_context():
        stats = ext(app).stats()
    assert stats["rollout"]["mode"] == "plan"
    assert stats["rollout"]["plan_percent"] == 5.0

    clock.advance(60)
    send(app, on_v2, 10)
    tick(app, clock)
    assert control(app)["plan"]["percent"] == 100.0
    assert control(app)["plan"]["waiting_for"] == "nothing: the plan is at its last step"
    assert control(app)["advances"] == 2
    assert serve(app, "acme").json["version"] == "v2"


def test_a_paused_plan_stays_and_resuming_bakes_the_step_again() -> None:
    clock = FakeTimer()
    app = make(clock)
    on_v2 = probes(below=1)
    send(app, on_v2, 1)
    with app.app_context():
        assert ext(app).rollout_pause()["paused"] is True
    clock.advance(120)
    send(app, on_v2, 10)
    tick(app, clock)
    assert control(app)["plan"]["step"] == 0
    assert control(app)["plan"]["waiting_for"].startswith("an operator: the plan is paused")
    with app.app_context():
        resumed = ext(app).rollout_resume()
    assert (resumed["paused"], resumed["started_at"]) == (False, clock.now)
    send(app, on_v2, 10)
    tick(app, clock)
    assert control(app)["plan"]["step"] == 0  # the bake starts again from the resume
    clock.advance(60)
    send(app, on_v2, 10)
    tick(app, clock)
    assert control(app)["plan"]["step"] == 1


def test_without_redis_the_guard_trips_this_process_and_holds_until_resumed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeTimer()
    app = make(clock, TENANT_CACHE_ROLLOUT_PLAN=[(50, 60), (100, 60)])
    on_v1, on_v2 = probes(at_least=50), probes(below=50)
    send(app, on_v1, 10)
    break_v2(app, clock, "fail")
    recorder = Recorder()
    with signals.rollout_tripped.connected_to(recorder, sender=app), caplog.at_level(logging.ERROR):
        assert send(app, on_v2, 9) == [503] * 9
        tick(app, clock)  # 9 samples: below the minimum, no trip
        assert control(app)["guard"]["tripped"] is None
        assert control(app)["guard"]["checks"]["error_ratio"]["state"] == "waiting"
        send(app, on_v2, 1)
        tick(app, clock)
    trip = control(app)["guard"]["tripped"]
    assert trip["signal"] == "error_ratio"
    assert (trip["value"], trip["samples"], trip["scope"]) == (1.0, 10, "process")
    assert [e[1]["reason"]["signal"] for e in recorder.events] == ["error_ratio"]
    assert any("guard tripped on error_ratio" in r.getMessage() for r in caplog.records)
    assert control(app)["trips"] == 1
    assert app.extensions["tenant_cache"].rollout.override == "v1"
    assert serve(app, "acme").json["version"] == "v1"

    # It holds: hours later, with v2 healthy again, and the override lifted by hand.
    app.extensions["tenant_cache"].resolvers["v2"].loader = app.extensions["test"]["loader"]
    with app.app_context():
        ext(app).set_rollout(None)
    for _ in range(3):
        clock.advance(3600)
        send(app, on_v2, 10)
        tick(app, clock)
    assert serve(app, "acme").json["version"] == "v1"
    assert control(app)["guard"]["tripped"]["signal"] == "error_ratio"
    assert control(app)["plan"]["step"] == 0
    assert control(app)["trips"] == 1

    with app.app_context():
        assert ext(app).rollout_resume()["tripped"] is None
    assert serve(app, "acme").json["version"] == "v2"  # bucket 201: on v2 at 50 %
    send(app, on_v2, 10)
    tick(app, clock)  # the window was forgotten at the resume: the old errors do not trip it
    assert control(app)["guard"]["tripped"] is None


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        ([], "non-empty list"),
        ([(5, 60), (1, 60)], "rise"),
        ([(0, 60)], "above 0"),
        ([(101, 60)], "at most 100"),
        ([(5, 0)], "bake time"),
        ([(5, "1h")], "finite numbers"),
        ([{"percent": 5}], "a step is"),
        ("1,5,100", "non-empty list"),
    ],
)
def test_an_invalid_plan_fails_at_init_app(plan: Any, message: str) -> None:
    with pytest.raises(ValueError, match=f"TENANT_CACHE_ROLLOUT_PLAN: .*{message}"):
        build_app(TENANT_CACHE_ROLLOUT_PLAN=plan)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("TENANT_CACHE_GUARD", "yes"),
        ("TENANT_CACHE_GUARD_MAX_MISMATCH_RATIO", 1.5),
        ("TENANT_CACHE_GUARD_MAX_ERROR_RATIO", -0.1),
        ("TENANT_CACHE_GUARD_MAX_P99_RATIO", 0.5),
        ("TENANT_CACHE_GUARD_P99_FLOOR", float("nan")),
        ("TENANT_CACHE_GUARD_MIN_SAMPLES", 0),
        ("TENANT_CACHE_CONTROL_INTERVAL", 0),
        ("TENANT_CACHE_MISMATCH_RECORDS", 0),
    ],
)
def test_invalid_guard_settings_fail_at_init_app(key: str, value: Any) -> None:
    with pytest.raises(ValueError, match=key):
        build_app(**{key: value})


def test_a_plan_and_a_flag_provider_cannot_both_decide() -> None:
    with pytest.raises(ValueError, match="choose one"):
        build_app(TENANT_CACHE_ROLLOUT_PLAN=PLAN, flag_provider=lambda context: "v1")


def test_without_redis_the_plan_says_it_runs_per_process(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="flask_tenant_cache"):
        app = make(FakeTimer())
    assert any("run in each process on its own" in r.getMessage() for r in caplog.records)
    with app.app_context():
        assert ext(app).rollout_control()["scope"] == "process"


def test_no_plan_and_no_guard_means_no_control_section() -> None:
    app = build_app()
    with app.app_context():
        assert "control" not in ext(app).stats()
    guarded = build_app(TENANT_CACHE_GUARD=True)
    with guarded.app_context():
        status = ext(guarded).stats()["control"]
    assert status["plan"] is None
    assert status["guard"]["limits"]["min_samples"] == 100


def test_prometheus_shows_the_plan_the_trip_and_its_count() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    clock = FakeTimer()
    app = make(clock, TENANT_CACHE_ROLLOUT_PLAN=[(50, 60), (100, 60)])

    def scrape() -> dict[str, float]:
        response = app.test_client().get(
            "/_tenant-cache/metrics",
            headers={"Authorization": "Bearer test-admin-token-0123456789"},
        )
        text = response.get_data(as_text=True)
        return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}

    send(app, probes(), 1)
    before = scrape()
    assert before["tenant_cache_rollout_plan_percent"] == 50.0
    assert before["tenant_cache_rollout_tripped"] == 0
    break_v2(app, clock, "fail")
    send(app, probes(below=50), 10)
    tick(app, clock)
    after = scrape()
    assert after["tenant_cache_rollout_tripped"] == 1
    assert after["tenant_cache_rollout_trips_total"] == 1
