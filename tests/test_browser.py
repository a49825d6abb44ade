"""Real-browser tests: Playwright driving Debian's chromium against the app served on 127.0.0.1.

Screenshots of every page go to test-artifacts/. Skipped, saying why, where chromium is not installed
(.ci/run installs it with apt-get).
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from conftest import PASSWORD, _make_app, make_user

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="chromium is not installed (apt-get install chromium)"
)


@pytest.fixture
def server(tmp_path, clock):
    """The app on 127.0.0.1 on a free port, in a thread; yields its base URL."""
    app = _make_app(tmp_path, f"sqlite:///{tmp_path / 'browser.sqlite3'}", clock, TESTING=False)
    make_user(app, "alice")
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    thread.join(timeout=5)
    app.extensions["engine"].dispose()


@pytest.fixture
def browser_page():
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        problems: list[str] = []
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if counts(m) else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("dialog", lambda d: (problems.append(f"dialog opened: {d.message}"), d.dismiss()))
        page.problems = problems
        yield page
        browser.close()


def counts(message) -> bool:
    """Console errors and warnings count as problems, except Chrome's note on the 422 a rejected form gets."""
    if message.type not in ("error", "warning"):
        return False
    return "status of 422" not in message.text


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def submit_job(page, base: str, **fields) -> None:
    page.goto(f"{base}/jobs/new")
    for field, value in fields.items():
        page.fill(f"#{field}", value)
    page.click("button[type=submit]:has-text('Plan and submit')")
    page.wait_for_load_state("networkidle")


def test_operator_journey_in_a_real_browser(server, browser_page):
    page, base = browser_page, server
    page.goto(f"{base}/jobs")
    assert "/login" in page.url  # pages need an account
    shot(page, "login")
    page.fill("#login-name", "alice")
    page.fill("#login-password", PASSWORD)
    page.click("button:has-text('Log in')")
    page.wait_for_url(f"{base}/jobs")
    assert page.inner_text(".who").startswith("alice")

    submit_job(page, base, name="nightly-train", duration_minutes="120", power_kw="30")
    assert "/jobs/" in page.url
    assert page.inner_text("h1").startswith("nightly-train")
    assert page.locator("svg.signal-chart rect.window").count() >= 1  # the window on the chart
    assert "Saved" in page.inner_text("#comparison")
    shot(page, "job")

    page.goto(f"{base}/jobs")
    assert "nightly-train" in page.inner_text("#jobs")
    shot(page, "jobs")

    submit_job(page, base, name="bad", power_kw="-1")
    assert page.locator("#power_kw-error").is_visible()
    assert "greater than 0" in page.inner_text("#power_kw-error")
    shot(page, "form-errors")

    submit_job(page, base, name="<script>alert(1)</script>", duration_minutes="60", power_kw="5")
    assert page.inner_text("h1").startswith("<script>alert(1)</script>")  # shown as text
    page.goto(f"{base}/jobs")
    assert "<script>alert(1)</script>" in page.inner_text("#jobs")

    pages = {
        "index": "/",
        "index-region": "/?region=14",
        "jobs-new": "/jobs/new",
        "assets": "/assets",
        "decisions": "/decisions",
        "docs": "/docs",
        "job-1": "/jobs/1",
        "dashboard": "/dashboard",
        "flexibility": "/beckn/slots",
    }
    for name, path in pages.items():
        page.goto(f"{base}{path}")
        page.wait_for_load_state("networkidle")
        shot(page, name)
    page.goto(f"{base}/decisions")
    page.click("#decisions tbody tr:first-child a")
    page.wait_for_load_state("networkidle")
    assert page.locator("#alternatives").is_visible()
    shot(page, "decision")

    assert page.problems == []  # no console errors, no CSP violations, no script ran
