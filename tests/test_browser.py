"""The example's admin page in a real headless chromium: sign in, edit, rollout, screenshot."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from example_app import create_app, db
from example_app.models import INITECH_ID
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


@pytest.fixture
def base_url(tmp_path: Path) -> Iterator[str]:
    """The example app served for real on 127.0.0.1, on a free port, from a background thread."""
    # A file, not ":memory:": every server thread must see the same database.
    app = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'example.sqlite3'}",
            "EXAMPLE_ADMIN_TOKEN": TOKEN,
        }
    )
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="example-app", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()
        with app.app_context():
            db.engine.dispose()


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
