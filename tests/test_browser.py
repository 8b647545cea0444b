"""The example's admin page in a real headless chromium: sign in, edit, rollout, screenshot."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

from example_app import create_app, db
from example_app.models import INITECH_ID
from flask_tenant_cache import TenantIdentifier
from tests.helpers.app import need_service

try:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # the dev extra is not installed
    sync_playwright = None

TOKEN = "browser-test-token-0123456789"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Quiet, offline chromium: no sandbox (CI runs as root), no GPU, no calls home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@contextlib.contextmanager
def served(tmp_path: Path, **config: Any) -> Iterator[tuple[str, Flask]]:
    """The example app served for real on 127.0.0.1, on a free port, from a background thread."""
    # A file, not ":memory:": every server thread must see the same database.
    app = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'example.sqlite3'}",
            "EXAMPLE_ADMIN_TOKEN": TOKEN,
            **config,
        }
    )
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="example-app", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", app
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()
        with app.app_context():
            db.engine.dispose()


@pytest.fixture
def base_url(tmp_path: Path) -> Iterator[str]:
    """The example app, served (see :func:`served`)."""
    with served(tmp_path) as (url, _):
        yield url


@pytest.fixture
def browser() -> Iterator[Any]:
    """Debian's chromium driven by Playwright; never a browser Playwright downloads."""
    if sync_playwright is None:
        need_service("chromium", "the playwright package is not installed (pip install -e .[dev])")
    if not os.access(CHROMIUM, os.X_OK):
        need_service("chromium", f"no browser at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
        except PlaywrightError as exc:
            need_service("chromium", f"{CHROMIUM} did not start: {exc.message.splitlines()[0]}")
        try:
            yield browser
        finally:
            browser.close()


def tenant_json(page: Any, base_url: str, tenant: str) -> tuple[int, Any]:
    """GET / for ``tenant`` (X-Tenant-ID) from the browser context: (status, JSON or None)."""
    r = page.request.get(
        base_url + "/", headers={"X-Tenant-ID": tenant, "Accept": "application/json"}
    )
    return r.status, r.json() if r.ok else None


def test_admin_page_in_a_browser(base_url: str, browser: Any, tmp_path: Path) -> None:
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()

    # Warm the cache: initech found by slug, "initrode" cached as not found.
    assert tenant_json(page, base_url, "initech")[1]["tenant"]["name"] == "Initech"
    assert tenant_json(page, base_url, "initrode")[0] == 404

    # Signed out, the admin page sends the browser to the sign-in form and back.
    page.goto(base_url + "/admin/tenants")
    expect(page).to_have_url(base_url + "/admin/login?next=/admin/tenants")
    page.get_by_label("Admin token").fill("wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("wrong token")
    page.get_by_label("Admin token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(base_url + "/admin/tenants")
    expect(page.locator("#tenants tbody tr")).to_have_count(3)

    # Edit initech through its form: the commit invalidates its old and new aliases.
    page.locator("tr[data-slug=initech]").get_by_role("link", name="Edit").click()
    expect(page).to_have_url(f"{base_url}/admin/tenants/{INITECH_ID}")
    page.get_by_label("Name").fill("Initrode")
    page.get_by_label("Slug").fill("initrode")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_contain_text("Saved")
    expect(page.get_by_role("heading", level=1)).to_have_text("Initrode")

    status, body = tenant_json(page, base_url, "initrode")
    assert status == 200
    assert (body["tenant"]["id"], body["tenant"]["name"]) == (str(INITECH_ID), "Initrode")
    assert tenant_json(page, base_url, "initech")[0] == 404
    # And as a page, rendered by the browser itself.
    tenant_page = context.new_page()
    tenant_page.set_extra_http_headers({"X-Tenant-ID": "initrode"})
    tenant_page.goto(base_url + "/")
    expect(tenant_page.get_by_role("heading", level=1)).to_have_text("Initrode")
    tenant_page.close()

    # The kill switch: force v1, see it shown and served.
    page.get_by_role("link", name="All tenants").click()
    expect(page.locator("tr[data-slug=initrode]")).to_contain_text("Initrode")
    page.get_by_role("button", name="Force v1").click()
    expect(page.get_by_role("status")).to_have_text("Rollout override set on this process.")
    expect(page.locator("#rollout-effective")).to_have_text("every request on v1 (forced)")
    assert tenant_json(page, base_url, "initrode")[1]["resolver"] == "v1"
    page.reload()
    expect(page.locator("#stats")).to_contain_text("Requests served")

    shot = tmp_path / "admin.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes().startswith(PNG_SIGNATURE)
    if os.environ.get("BROWSER_TEST_SCREENSHOT"):  # to look at it: a path to copy it to
        shutil.copyfile(shot, os.environ["BROWSER_TEST_SCREENSHOT"])
    context.close()


def sign_in(page: Any, base_url: str) -> None:
    page.goto(base_url + "/admin/login?next=/admin/tenants")
    page.get_by_label("Admin token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(base_url + "/admin/tenants")


def test_the_migration_section_in_a_browser(browser: Any, tmp_path: Path) -> None:
    config = {
        "TENANT_CACHE_ROLLOUT_PLAN": [[50, 600], [100, 3600]],
        "TENANT_CACHE_SHADOW_PERCENT": 100,
        "TENANT_CACHE_GUARD_MIN_SAMPLES": 5,
        # Every request ticks: the guard acts on the next request, with no wait for a clock.
        "TENANT_CACHE_CONTROL_INTERVAL": 1e-9,
    }
    with served(tmp_path, **config) as (base_url, app):
        context = browser.new_context(viewport={"width": 1100, "height": 900})
        page = context.new_page()
        sign_in(page, base_url)
        expect(page.locator("#plan-summary")).to_have_text("step 1 of 2: 50% on v2, running")
        expect(page.locator("#plan-waiting")).to_contain_text("s more of bake time at 50%")
        expect(page.locator("#guard-state")).to_contain_text("Watching")
        expect(page.locator("#mismatches")).to_contain_text("None recorded.")

        # v2 holds a stale snapshot of acme (bucket 8362 by UUID, 201 by slug: on v2 at 50 %).
        state = app.extensions["tenant_cache"]
        with app.app_context():
            fresh = state.resolvers["v1"].resolve(TenantIdentifier.slug("acme"))
        assert fresh is not None
        state.resolvers["v2"].warm([dataclasses.replace(fresh, name="Acme (old name)")])
        for _ in range(6):
            assert tenant_json(page, base_url, "acme")[0] == 200
        state.shadow.close()  # every comparison made
        assert tenant_json(page, base_url, "globex")[0] == 200  # this request ticks

        page.reload()
        expect(page.locator("#guard-state")).to_contain_text("Tripped at ")
        expect(page.locator("#guard-state")).to_contain_text("shadow mismatch ratio")
        expect(page.locator("#plan-summary")).to_have_text("step 1 of 2: 50% on v2, tripped")
        expect(page.locator("#rollout-effective")).to_have_text("every request on v1 (forced)")
        expect(page.locator("#mismatches tbody tr").first).to_contain_text("slug:acme")
        expect(page.locator("#mismatches")).to_contain_text("name: v1 '(hidden)', v2 '(hidden)'")
        expect(page.locator("#mismatches")).not_to_contain_text("old name")
        expect(page.locator("#figures")).to_contain_text("Resolution p99")
        assert tenant_json(page, base_url, "acme")[1]["resolver"] == "v1"

        shot = tmp_path / "migration.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.read_bytes().startswith(PNG_SIGNATURE)
        if os.environ.get("BROWSER_TEST_MIGRATION_SCREENSHOT"):
            shutil.copyfile(shot, os.environ["BROWSER_TEST_MIGRATION_SCREENSHOT"])

        state.resolvers["v2"].invalidate_all()
        page.get_by_role("button", name="Resume").first.click()
        expect(page.get_by_role("status")).to_have_text("Rollout plan resumed.")
        expect(page.locator("#plan-summary")).to_have_text("step 1 of 2: 50% on v2, running")
        expect(page.locator("#guard-state")).to_contain_text("Watching")
        assert tenant_json(page, base_url, "acme")[1]["resolver"] == "v2"
        context.close()
