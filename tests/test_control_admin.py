"""The plan and the guard through the CLI and the admin routes."""

from __future__ import annotations

import json
from typing import Any

from tests.helpers.app import ADMIN_TOKEN, FakeTimer, build_app
from tests.helpers.control import break_v2, probes, send, tick

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PLAN = [(1, 600), (50, 3600), (100, 3600)]


def cli(app: Any, *args: str) -> Any:
    return app.test_cli_runner().invoke(args=["tenant-cache", "rollout", *args])


def test_the_cli_shows_and_steers_the_shared_plan(redis_apps: Any, shared_redis: Any) -> None:
    clock = FakeTimer()
    server = redis_apps(shared_redis, clock=clock, TENANT_CACHE_ROLLOUT_PLAN=PLAN)
    send(server, probes(), 1)  # the server creates the shared state
    command = redis_apps(shared_redis, clock=clock, TENANT_CACHE_ROLLOUT_PLAN=PLAN)

    result = cli(command, "plan")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "plan (cluster): 1% 10m → 50% 1h → 100% 1h"
    assert lines[1] == "step 1 of 3: 1% on v2, running"
    assert lines[2] == "since: 1970-01-01 00:16:40 UTC"
    assert lines[3] == "waiting for: 600 s more of bake time at 1%"

    result = cli(command, "pause")
    assert (result.exit_code, result.output) == (0, "rollout plan paused at step 1\n")
    tick(server, clock)
    status = json.loads(cli(command, "status").output)
    assert status["plan"]["paused"] is True
    assert status["scope"] == "cluster"
    assert status["rollout"]["mode"] == "plan"
    assert "paused" in cli(command, "plan").output
    assert cli(command, "resume").output == "rollout plan resumed at step 1\n"

    # The override still works as before, next to the subcommands.
    result = cli(command, "v1")
    assert result.exit_code == 0, result.output
    assert "set to v1 (cluster)" in result.output
    assert json.loads(cli(command, "mismatches").output) == {"scope": "cluster", "mismatches": []}


def test_the_cli_refuses_to_steer_a_plan_it_cannot_share() -> None:
    app = build_app(TENANT_CACHE_ROLLOUT_PLAN=PLAN)
    result = cli(app, "pause")
    assert result.exit_code == 1
    assert "without Redis the plan runs per process" in result.output
    assert "no rollout plan" in cli(build_app(), "plan").output


def test_the_admin_routes_show_and_steer_the_plan_and_clear_a_trip() -> None:
    clock = FakeTimer()
    app = build_app(
        clock=clock,
        TENANT_CACHE_ROLLOUT_PLAN=[(50, 60), (100, 60)],
        TENANT_CACHE_GUARD_MIN_SAMPLES=10,
        TENANT_CACHE_USE_V2=False,
    )
    client = app.test_client()
    assert client.get("/_tenant-cache/rollout/plan").status_code == 401
    assert client.post("/_tenant-cache/rollout/pause").status_code == 401

    plan = client.get("/_tenant-cache/rollout/plan", headers=ADMIN).json
    assert plan["scope"] == "process"
    assert plan["plan"]["percent"] == 50.0
    assert client.post("/_tenant-cache/rollout/pause", headers=ADMIN).json["paused"] is True
    resumed = client.post("/_tenant-cache/rollout/resume", headers=ADMIN).json
    assert (resumed["scope"], resumed["paused"]) == ("process", False)

    break_v2(app, clock, "fail")
    send(app, probes(below=50), 10)
    tick(app, clock)
    plan = client.get("/_tenant-cache/rollout/plan", headers=ADMIN).json
    assert plan["guard"]["tripped"]["signal"] == "error_ratio"
    assert plan["plan"]["waiting_for"].startswith("an operator: the guard tripped")
    assert client.post("/_tenant-cache/rollout/resume", headers=ADMIN).json["tripped"] is None
    assert app.extensions["tenant_cache"].rollout.override is None
    restarted = client.post("/_tenant-cache/rollout/restart", headers=ADMIN).json
    assert (restarted["step"], restarted["generation"]) == (0, 3)
    assert client.get("/_tenant-cache/rollout/mismatches", headers=ADMIN).json == {
        "scope": "process",
        "mismatches": [],
    }


def test_steering_without_a_plan_is_a_400_and_redis_down_a_503() -> None:
    client = build_app().test_client()
    response = client.post("/_tenant-cache/rollout/pause", headers=ADMIN)
    assert response.status_code == 400
    assert "no rollout plan" in response.json["message"]
    assert client.post("/_tenant-cache/rollout/resume", headers=ADMIN).status_code == 400

    down = build_app(
        TENANT_CACHE_ROLLOUT_PLAN=PLAN,
        TENANT_CACHE_REDIS_URL="redis://127.0.0.1:1/0",
        TENANT_CACHE_REDIS_SOCKET_TIMEOUT=0.2,
    ).test_client()
    response = down.post("/_tenant-cache/rollout/pause", headers=ADMIN)
    assert response.status_code == 503
    assert response.json["error"] == "rollout_state_unavailable"
