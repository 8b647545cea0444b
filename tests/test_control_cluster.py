"""The rollout plan and the guard across processes sharing a real Redis, on one injected clock."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from flask import Flask

from tests.helpers.app import FakeTimer
from tests.helpers.control import break_v2, control, plan_percent, probes, send, serve, tick
from tests.helpers.redis_server import listening, wait_for

PLAN = [(1, 60), (5, 60), (25, 60), (50, 60), (100, 60)]
SETTINGS = {"TENANT_CACHE_GUARD_MIN_SAMPLES": 10, "TENANT_CACHE_USE_V2": False}


def two(redis_apps: Any, shared_redis: Any, clock: FakeTimer, **config: Any) -> list[Flask]:
    apps = [
        redis_apps(
            shared_redis, clock=clock, **{"TENANT_CACHE_ROLLOUT_PLAN": PLAN, **SETTINGS, **config}
        )
        for _ in range(2)
    ]
    listening(*apps)
    return apps


def ticks_at_once(apps: list[Flask]) -> None:
    """Both processes tick at the same instant, from two threads."""
    barrier = threading.Barrier(len(apps))

    def run(app: Flask) -> None:
        barrier.wait()
        app.extensions["tenant_cache"].control.tick()

    threads = [threading.Thread(target=run, args=(app,)) for app in apps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_two_processes_follow_one_plan_from_1_to_100_percent(
    redis_apps: Any, shared_redis: Any
) -> None:
    clock = FakeTimer()
    apps = two(redis_apps, shared_redis, clock)
    on_v2 = probes(below=1)  # on v2 at every step
    seen = []
    for _ in PLAN[1:]:
        clock.advance(61)
        for app in apps:
            send(app, on_v2, 10)  # each process has the samples to vouch for the step
        ticks_at_once(apps)
        percents = {plan_percent(app) for app in apps}
        assert len(percents) == 1, percents  # one decision, applied by both
        seen.append(percents.pop())
    assert seen == [5.0, 25.0, 50.0, 100.0]
    # Two processes ticked together at each step, and each step was taken once.
    assert sum(control(app)["advances"] for app in apps) == 4
    state = control(apps[0])["plan"]
    assert (state["step"], state["version"]) == (4, 5)  # created, then four advances
    assert control(apps[1])["scope"] == "cluster"

    # A process started now (a restart, a new worker) joins at 100 %, not at the first step.
    late = redis_apps(shared_redis, clock=clock, TENANT_CACHE_ROLLOUT_PLAN=PLAN, **SETTINGS)
    assert plan_percent(late) == 1.0  # until it has read the shared state
    assert serve(late, "acme").json["version"] == "v2"
    assert plan_percent(late) == 100.0


def test_a_pause_from_one_process_holds_every_process(redis_apps: Any, shared_redis: Any) -> None:
    clock = FakeTimer()
    first, second = two(redis_apps, shared_redis, clock)
    with first.app_context():
        first.extensions["test"]["ext"].rollout_pause()
    clock.advance(120)
    send(second, probes(below=1), 10)
    tick(second, clock)
    assert control(second)["plan"]["paused"] is True
    assert plan_percent(second) == 1.0


SIGNALS = {"slow": "p99_ratio", "fail": "error_ratio", "other": "mismatch_ratio"}


@pytest.mark.parametrize("mode", sorted(SIGNALS))
def test_the_guard_trips_every_process_to_v1_within_a_second_and_it_stays(
    redis_apps: Any, shared_redis: Any, mode: str
) -> None:
    clock = FakeTimer()
    shadow = {"TENANT_CACHE_SHADOW_PERCENT": 100} if mode == "other" else {}
    first, second = two(
        redis_apps, shared_redis, clock, TENANT_CACHE_ROLLOUT_PLAN=[(50, 600), (100, 600)], **shadow
    )
    for app in (first, second):
        assert serve(app, "acme").json["version"] == "v2"  # bucket 201: on v2 at 50 %
    break_v2(first, clock, mode)
    if mode == "other":
        statuses = [serve(first, "acme").status_code for _ in range(12)]
        assert statuses == [200] * 12
        first.extensions["tenant_cache"].shadow.close()  # every comparison made
    else:
        send(first, probes(at_least=50), 12)  # v1's side of the comparison
        send(first, probes(below=50), 12)
    tick(first, clock)
    tripped_at = time.monotonic()
    trip = control(first)["guard"]["tripped"]
    assert trip is not None
    assert trip["signal"] == SIGNALS[mode]
    assert trip["scope"] == "cluster"
    if mode == "other":  # the records are shared: the other process reads them
        with second.app_context():
            records = second.extensions["test"]["ext"].rollout_mismatches()
        assert records["scope"] == "cluster"
        assert len(records["mismatches"]) == 12
        newest = records["mismatches"][0]
        assert (newest["key"], newest["primary"]) == ("slug:acme", "v2")
        assert newest["fields"]["slug"] == {"v1": "acme", "v2": "globex"}
        assert newest["fields"]["name"] == {"v1": "(hidden)", "v2": "(hidden)"}

    # The other process follows through the bus, within a second.
    wait_for(
        lambda: second.extensions["tenant_cache"].rollout.override == "v1",
        timeout=1.0,
        what="the other process to go to v1",
    )
    assert time.monotonic() - tripped_at < 1.0
    for app in (first, second):
        assert serve(app, "acme").json["version"] == "v1"

    # And they stay there: v2 healthy again, an hour later, ticks on both.
    first.extensions["tenant_cache"].resolvers["v2"].loader = first.extensions["test"]["loader"]
    clock.advance(3600)
    for app in (first, second):
        send(app, probes(below=50), 12)
        tick(app, clock)
        assert serve(app, "acme").json["version"] == "v1"
        assert control(app)["guard"]["tripped"]["signal"] == SIGNALS[mode]
        assert control(app)["plan"]["step"] == 0
    assert control(first)["trips"] == 1
    assert control(second)["trips"] == 0

    # Until an operator resumes, from any process: both go back to the plan's 50 %.
    with second.app_context():
        second.extensions["test"]["ext"].rollout_resume()
    wait_for(
        lambda: first.extensions["tenant_cache"].rollout.override is None,
        timeout=1.0,
        what="the override to be lifted everywhere",
    )
    tick(first, clock)
    assert serve(first, "acme").json["version"] == "v2"


def test_a_trip_while_redis_is_down_holds_here_and_is_recorded_when_it_returns(
    redis_apps: Any, private_redis: Any
) -> None:
    clock = FakeTimer()
    app = redis_apps(
        private_redis.config,
        clock=clock,
        TENANT_CACHE_ROLLOUT_PLAN=[(50, 600), (100, 600)],
        TENANT_CACHE_REDIS_SOCKET_TIMEOUT=0.2,
        **SETTINGS,
    )
    listening(app)
    private_redis.kill()
    break_v2(app, clock, "fail")
    send(app, probes(at_least=50), 12)
    send(app, probes(below=50), 12)
    tick(app, clock)  # Redis is down (or resting after a failure): the trip holds here
    status = control(app)
    assert status["trips"] == 1
    assert status["store_errors"] >= 1
    assert app.extensions["tenant_cache"].rollout.override == "v1"
    assert serve(app, "acme").json["version"] == "v1"

    # Redis comes back empty (a restart without persistence): the trip is written again.
    private_redis.start()

    def recorded() -> Any:
        tick(app, clock)  # the connection rests a real second after a failure: poll
        return _stored_trip(private_redis)

    wait_for(recorded, what="the trip to be recorded in Redis")
    assert _stored_trip(private_redis)["signal"] == "error_ratio"
    assert serve(app, "acme").json["version"] == "v1"


def _stored_trip(server: Any) -> Any:
    import json

    import redis

    client = redis.Redis.from_url(server.url)
    try:
        raw = client.get("{tenant-cache}:plan")
    finally:
        client.close()
    return None if raw is None else json.loads(raw)["tripped"]


def test_a_plan_state_redis_lost_is_written_back_by_the_process_that_knew_it(
    redis_apps: Any, shared_redis: Any
) -> None:
    clock = FakeTimer()
    first, second = two(
        redis_apps, shared_redis, clock, TENANT_CACHE_ROLLOUT_PLAN=[(25, 60), (50, 60), (100, 60)]
    )
    clock.advance(61)
    send(first, probes(below=1), 10)
    tick(first, clock)
    assert control(first)["plan"]["step"] == 1
    break_v2(first, clock, "fail")
    send(first, probes(below=50), 10)
    tick(first, clock)
    assert control(first)["guard"]["tripped"] is not None

    shared_redis["client"].delete("{" + shared_redis["TENANT_CACHE_REDIS_PREFIX"] + "}:plan")
    # The other process finds nothing stored and writes back its own copy, an older one; the
    # process that tripped sees the version go backwards and writes back its newer copy.
    tick(second, clock)
    tick(first, clock)
    tick(second, clock)
    for app in (first, second):
        state = control(app)
        assert state["plan"]["step"] == 1
        assert state["guard"]["tripped"]["signal"] == "error_ratio"
        assert plan_percent(app) == 0.0
