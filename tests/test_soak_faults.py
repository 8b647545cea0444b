"""The soak under faults, short form: worker processes serving while Redis is killed."""

from __future__ import annotations

import shutil

import pytest

from benchmarks.soak import SoakConfig, run_soak
from tests.helpers.app import need_service

pytestmark = [pytest.mark.redis, pytest.mark.soak]


def test_redis_killed_and_restarted_loses_no_request_and_serves_nothing_stale() -> None:
    if shutil.which("redis-server") is None:
        need_service("redis-server", "the binary is not installed")
    result = run_soak(SoakConfig(seconds=8, workers=3, restarts=2, readers=1))
    print("\nSOAK-FAULTS:", {k: v for k, v in result.items() if k != "failures"})
    assert result["failed"] == 0, result["failures"]
    assert result["late_stale"] == 0, result
    assert [r["aof"] for r in result["restarts"]] == [True, False]
    # The restart without persistence was noticed as lost writes by every worker.
    assert result["lost_writes_noticed"] >= 3
    assert result["writer_pending_at_end"] == 0  # every queued invalidation was delivered
    assert min(result["requests"], result["renames"]) >= 1
