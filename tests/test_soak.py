"""A bounded soak: readers, a renaming writer and an invalidator, against each resolver.

Set ``TENANT_CACHE_SOAK_SECONDS`` to run longer than the default 4 s per resolver.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from tests.helpers.app import build_app

SOAK_SECONDS = float(os.environ.get("TENANT_CACHE_SOAK_SECONDS", "4"))
READERS = 6
TENANTS = 20
#: The least work a soak does, whatever the machine's speed (it runs on past its time for it).
MIN_WORK = {"reads": int(100 * SOAK_SECONDS), "writes": int(10 * SOAK_SECONDS)}


class World:
    """What the writer has made true, shared with the readers under one lock."""

    def __init__(self, slugs: dict[uuid.UUID, str]) -> None:
        self.lock = threading.Lock()
        self.slug_of = dict(slugs)
        self.owner = {slug: tid for tid, slug in slugs.items()}
        #: Every slug a tenant has had, added before the row is committed.
        self.history = {tid: {slug} for tid, slug in slugs.items()}
        self.counts: Counter[str] = Counter()
        self.violations: list[str] = []
        self.stop = threading.Event()

    def count(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counts[name] += n

    def violation(self, message: str) -> None:
        with self.lock:
            self.counts["violations"] += 1
            if len(self.violations) < 20:
                self.violations.append(message)

    def has_done(self, minimum: dict[str, int]) -> bool:
        with self.lock:
            return all(self.counts[name] >= n for name, n in minimum.items())

    def had_slug(self, tid: uuid.UUID, slug: str) -> bool:
        with self.lock:
            return slug in self.history.get(tid, ())


def soak_app(tmp_path: Path, version: str) -> Flask:
    # A file, so threads use connections of their own (WAL: readers never block the writer).
    app = build_app(
        database_uri=f"sqlite:///{tmp_path}/t.db",
        TENANT_CACHE_USE_V2=version == "v2",
        TENANT_CACHE_LOAD_TIMEOUT=10,
    )
    db, model = app.extensions["test"]["db"], app.extensions["test"]["model"]
    with app.app_context():
        with db.engine.connect() as conn:
            mode = conn.exec_driver_sql("PRAGMA journal_mode=WAL").scalar()
        assert mode == "wal"
        for i in range(4, TENANTS + 1):
            db.session.add(model(id=uuid.uuid4(), slug=f"t{i:02d}", name=f"Tenant {i}"))
        db.session.commit()
    return app


def current_slugs(app: Flask) -> dict[uuid.UUID, str]:
    db, model = app.extensions["test"]["db"], app.extensions["test"]["model"]
    with app.app_context():
        return {row.id: row.slug for row in db.session.scalars(sa.select(model))}


def reader(app: Flask, world: World, seed: int) -> None:
    rnd = random.Random(seed)
    client = app.test_client()
    ids = list(world.slug_of)
    while not world.stop.is_set():
        tid = rnd.choice(ids)
        way = rnd.random()
        with world.lock:
            slug = world.slug_of[tid] if way < 0.8 else rnd.choice(sorted(world.history[tid]))
        if way < 0.3:
            r = client.get("/whoami", headers={"X-Tenant-ID": rnd.choice([str(tid), tid.hex])})
            asked = None
        elif way < 0.55:
            r = client.get("/whoami", headers={"Host": f"{slug}.example.com"})
            asked = slug
        else:
            r = client.get("/whoami", headers={"X-Tenant-ID": slug})
            asked = slug
        world.count("reads")
        world.count("checks")
        if r.status_code >= 500:
            world.count("errors_5xx")
            world.violation(f"read {asked or tid}: {r.status_code} {r.data[:120]!r}")
            continue
        if r.status_code == 404:
            world.count("not_found")
            if asked is None:
                world.violation(f"read by id {tid}: 404 for a tenant that always exists")
            continue
        if r.status_code != 200:
            world.violation(f"read {asked or tid}: unexpected {r.status_code}")
            continue
        data = r.json
        served = uuid.UUID(data["id"])
        if asked is None:
            if served != tid:
                world.violation(f"asked id {tid}, served tenant {served}")
            elif not world.had_slug(tid, data["slug"]):
                world.violation(f"id {tid} served slug {data['slug']!r} it never had")
        elif data["slug"] != asked or not world.had_slug(served, asked):
            world.violation(f"asked slug {asked!r}, served {served} as {data['slug']!r}")


def writer(app: Flask, world: World, seed: int) -> None:
    rnd = random.Random(seed)
    client = app.test_client()
    ext, db, model = (app.extensions["test"][k] for k in ("ext", "db", "model"))
    ids = list(world.slug_of)
    base = dict(world.slug_of)
    n = 0
    while not world.stop.is_set():
        n += 1
        tid = rnd.choice(ids)
        with world.lock:
            old = world.slug_of[tid]
            free = sorted(s for h in world.history.values() for s in h if s not in world.owner)
            # A third of the renames take a slug another tenant gave up.
            new = rnd.choice(free) if free and rnd.random() < 0.33 else f"{base[tid]}-{n}"
            world.history[tid].add(new)
        with app.app_context():
            db.session.get(model, tid).slug = new
            db.session.commit()
        with world.lock:
            del world.owner[old]
            world.owner[new] = tid
            world.slug_of[tid] = new
        with app.app_context():
            ext.invalidate(str(tid))
        world.count("writes")
        world.count("invalidations")

        # invalidate() has returned: this process must see the new state at once.
        checks: list[tuple[dict[str, str], int, str | None]] = [
            ({"X-Tenant-ID": new}, 200, new),
            ({"Host": f"{new}.example.com"}, 200, new),
            ({"X-Tenant-ID": str(tid)}, 200, new),
            ({"X-Tenant-ID": old}, 404, None),  # nobody owns the old slug any more
        ]
        for headers, status, slug in checks:
            r = client.get("/whoami", headers=headers)
            world.count("checks")
            if r.status_code >= 500:
                world.count("errors_5xx")
            if r.status_code != status or (
                slug is not None and (r.json["slug"], r.json["id"]) != (slug, str(tid))
            ):
                world.count("stale_after_invalidate")
                world.violation(
                    f"after renaming {old!r} -> {new!r} and invalidate(): {headers} gave "
                    f"{r.status_code} {r.data[:120]!r}"
                )
        time.sleep(rnd.uniform(0, 0.004))


def invalidator(app: Flask, world: World, seed: int) -> None:
    rnd = random.Random(seed)
    ext = app.extensions["test"]["ext"]
    ids = list(world.slug_of)
    while not world.stop.is_set():
        with app.app_context():
            if rnd.random() < 0.1:
                ext.invalidate_all()
            else:
                tid = rnd.choice(ids)
                with world.lock:
                    name = rnd.choice(
                        [str(tid), world.slug_of[tid], f"{world.slug_of[tid]}.example.com"]
                    )
                ext.invalidate(name)
        world.count("invalidations")
        time.sleep(rnd.uniform(0, 0.01))


def run_threads(world: World, workers: list[Callable[[], None]], seconds: float) -> list[str]:
    errors: list[str] = []

    def guarded(work: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                work()
            except BaseException as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                world.stop.set()

        return run

    threads = [threading.Thread(target=guarded(w), daemon=True) for w in workers]
    for t in threads:
        t.start()
    world.stop.wait(seconds)
    # A loaded machine does less per second: soak on (bounded) until the minimum work is
    # done, so the test asserts amounts of work, never a rate.
    deadline = time.monotonic() + 10 * seconds
    while not (world.stop.is_set() or world.has_done(MIN_WORK) or time.monotonic() > deadline):
        world.stop.wait(0.05)
    world.stop.set()
    for t in threads:
        t.join(30)
        assert not t.is_alive(), "a soak thread hung"
    return errors


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_soak_isolation_and_invalidation(tmp_path: Path, version: str) -> None:
    app = soak_app(tmp_path, version)
    world = World(current_slugs(app))
    assert len(world.slug_of) == TENANTS
    workers: list[Callable[[], None]] = [
        lambda i=i: reader(app, world, seed=i) for i in range(READERS)
    ]
    workers.append(lambda: writer(app, world, seed=100))
    workers.append(lambda: invalidator(app, world, seed=200))
    started = time.monotonic()
    errors = run_threads(world, workers, SOAK_SECONDS)
    elapsed = time.monotonic() - started

    # After the storm, the database and every alias agree.
    assert current_slugs(app) == world.slug_of
    client = app.test_client()
    for tid, slug in world.slug_of.items():
        for headers in ({"X-Tenant-ID": slug}, {"X-Tenant-ID": str(tid)}):
            r = client.get("/whoami", headers=headers)
            world.count("checks")
            if r.status_code != 200 or (r.json["id"], r.json["slug"]) != (str(tid), slug):
                world.violation(f"final: {headers} gave {r.status_code} {r.data[:120]!r}")

    with app.app_context():
        stats: dict[str, Any] = app.extensions["test"]["ext"].stats()[version]
    c = world.counts
    print(
        f"\nSOAK-FIGURES: resolver={version} seconds={elapsed:.1f} readers={READERS} "
        f"tenants={TENANTS} reads={c['reads']} writes={c['writes']} "
        f"invalidations={c['invalidations']} checks={c['checks']} "
        f"violations={c['violations']} stale_after_invalidate={c['stale_after_invalidate']} "
        f"errors_5xx={c['errors_5xx']} not_found={c['not_found']} "
        f"loads={stats['load']['loads']} coalesced={stats['load']['coalesced']} "
        f"stale_loads_discarded={stats['load']['stale_loads_discarded']}"
    )
    assert errors == []
    assert c["violations"] == 0, world.violations
    assert c["errors_5xx"] == 0
    # Every kind of work happened (how much depends on the machine, and is not asserted).
    assert min(c["reads"], c["writes"], c["invalidations"], stats["load"]["loads"]) >= 1
