"""In-memory tenants and loaders, so that no benchmark measures a database."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from flask_tenant_cache import Tenant, TenantIdentifier

__all__ = [
    "ACME",
    "MemoryLoader",
    "SleepyLoader",
    "in_fresh_process",
    "make_tenants",
    "rss",
    "stampede",
]

ROOT = Path(__file__).resolve().parent.parent

ACME = Tenant(
    id=uuid.UUID("5f0c4f2a-1b2c-4d3e-8f9a-0b1c2d3e4f5a"),
    slug="acme",
    name="Acme Corp",
    domains=("acme.test",),
)


def make_tenants(count: int) -> list[Tenant]:
    """``acme`` and ``count - 1`` more tenants with deterministic ids and slugs."""
    others = [
        Tenant(id=uuid.UUID(int=i + 1), slug=f"tenant-{i:05d}", name=f"Tenant {i}")
        for i in range(count - 1)
    ]
    return [ACME, *others]


class MemoryLoader:
    """A loader reading a dict of tenants by every alias; it counts its calls."""

    def __init__(self, tenants: list[Tenant]) -> None:
        self.tenants = tenants
        self._by_key = {a.cache_key: t for t in tenants for a in t.aliases}
        self.calls = 0

    def load(self, identifier: TenantIdentifier) -> Tenant | None:
        self.calls += 1
        return self._by_key.get(identifier.cache_key)

    def iter_tenants(self) -> Iterator[Tenant]:
        return iter(self.tenants)


class SleepyLoader:
    """A loader that takes ``delay`` seconds (a slow database), counting calls thread-safely."""

    def __init__(self, tenant: Tenant, delay: float) -> None:
        self.tenant = tenant
        self.delay = delay
        self.calls = 0
        self._lock = threading.Lock()

    def load(self, identifier: TenantIdentifier) -> Tenant | None:
        with self._lock:
            self.calls += 1
        time.sleep(self.delay)
        return self.tenant if identifier.value in (self.tenant.slug, str(self.tenant.id)) else None


def stampede(
    threads: int, call: Callable[[], Tenant | None], context: Callable[[], Any] | None = None
) -> tuple[list[Tenant | None], list[BaseException], float]:
    """Run ``call`` in ``threads`` threads released at once by a barrier.

    :param context: a context manager factory each thread enters first (an app context).
    :returns: every result, the errors, and the seconds from release to the last finish.
    """
    started: list[float] = []
    finished = [0.0] * threads
    results: list[Tenant | None] = [None] * threads
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads, action=lambda: started.append(time.perf_counter()))

    def worker(index: int) -> None:
        with context() if context is not None else contextlib.nullcontext():
            barrier.wait()
            try:
                results[index] = call()
            except Exception as exc:
                errors.append(exc)
            finished[index] = time.perf_counter()

    old_stack = threading.stack_size(512 * 1024)  # a thousand threads of 8 MiB each is a lot
    try:
        pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
        for thread in pool:
            thread.start()
    finally:
        threading.stack_size(old_stack)
    for thread in pool:
        thread.join()
    return results, errors, max(finished) - started[0]


def rss(field: str = "VmRSS") -> int:
    """This process's resident set size in bytes (``VmHWM``: its peak so far)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def in_fresh_process(module: str, function: str, *args: Any) -> Any:
    """``module.function(*args)`` in a new interpreter; its JSON-able result.

    A fresh process for each figure, so memory freed by an earlier case is not reused by a
    later one and a large heap does not slow the cases after it.
    """
    code = f"import json, {module} as m; print(json.dumps(m.{function}(*{args!r})))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{module}.{function}{args} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
