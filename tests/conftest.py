"""Fixtures: `app`, `client`, `runner` on the embedded defaults (SQLite, recorded data, frozen clock),
and `live_app` on both SQLite and PostgreSQL (TEST_DATABASE_URL) with the upstream APIs mocked."""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import settings
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import create_app
from storage import Base, normalise_url
from timeutil import UTC

# CI runs the property tests and the API fuzzing on a fixed seed, so a landing never depends on luck;
# local runs stay random and keep exploring.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

# A Friday morning in winter (GMT), so UK time equals UTC on the pages.
FROZEN_NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


class Clock:
    """A settable clock for the app's CLOCK setting."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(FROZEN_NOW)


def _make_app(tmp_path: Path, database_url: str, clock: Clock, **overrides):
    settings = {
        "TESTING": True,
        "DATABASE_URL": database_url,
        "GRID_SOURCE": "recorded",
        "CLOCK": clock,
        "AUDIT_LOG_PATH": str(tmp_path / "decisions.jsonl"),
    }
    settings.update(overrides)
    app = create_app(settings)
    return app


@pytest.fixture
def app(tmp_path, clock):
    app = _make_app(tmp_path, f"sqlite:///{tmp_path / 'test.sqlite3'}", clock)
    yield app
    app.extensions["engine"].dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """The same tests on the embedded SQLite and on PostgreSQL (skipped, saying why, without TEST_DATABASE_URL)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db.sqlite3'}"
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        pytest.skip("TEST_DATABASE_URL is not set: PostgreSQL variant skipped (.ci/run sets it)")
    engine = create_engine(normalise_url(url))
    Base.metadata.drop_all(engine)  # each test starts from an empty schema, migrated afresh
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()
    return url


@pytest.fixture
def live_app(tmp_path, database_url, clock):
    """GRID_SOURCE=auto against mocked upstreams; upstream retries made instant."""
    app = _make_app(
        tmp_path,
        database_url,
        clock,
        GRID_SOURCE="auto",
        CARBON_INTENSITY_URL="https://ci.test",
        OCTOPUS_URL="https://octopus.test",
        UPSTREAM_RETRY_BACKOFF=0,
    )
    yield app
    app.extensions["engine"].dispose()


PASSWORD = "correct horse battery staple"


def make_user(app, name: str, admin: bool = False) -> str:
    """Create an operator and an API token for them; returns the token."""
    from auth import create_token, create_user
    from storage import get_db

    with app.app_context():
        db = get_db()
        create_user(db, name, PASSWORD, FROZEN_NOW, admin=admin)
        _, token = create_token(db, name, FROZEN_NOW, "tests")
        db.commit()
    return token


def bearer_client(app, token: str):
    """A test client that sends `Authorization: Bearer <token>` on every request."""
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def csrf_token(client, path: str) -> str:
    """The CSRF token of a page's form, as a browser would submit it."""
    import re

    page = client.get(path)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.data.decode())
    assert match, f"no CSRF token on {path} ({page.status_code})"
    return match.group(1)


def log_in(app, name: str):
    """A test client with a logged-in session (through the login form, CSRF token included)."""
    client = app.test_client()
    form = {"name": name, "password": PASSWORD, "csrf_token": csrf_token(client, "/login")}
    response = client.post("/login", data=form)
    assert response.status_code == 303, response.data
    return client


@pytest.fixture
def api_token(app) -> str:
    return make_user(app, "alice")


@pytest.fixture
def api(app, api_token):
    """alice's script: a bearer-token client."""
    return bearer_client(app, api_token)


@pytest.fixture
def operator(app, api_token):
    """alice in a browser: a logged-in session client."""
    return log_in(app, "alice")


@pytest.fixture
def postgres_url():
    """An empty PostgreSQL database (TEST_DATABASE_URL) and an engine on it; skipped, saying why, without it."""
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        pytest.skip("TEST_DATABASE_URL is not set: the PostgreSQL concurrency test is skipped (.ci/run sets it)")
    engine = create_engine(normalise_url(url))
    Base.metadata.drop_all(engine)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    yield url, engine
    engine.dispose()


def planned_load(app) -> dict:
    """kW planned per half-hour start across all scheduled jobs (to check caps)."""
    from scheduler import chunks_of
    from storage import Job, get_db
    from timeutil import SLOT

    load: dict = {}
    with app.app_context():
        for job in get_db().query(Job).filter(Job.status == "scheduled"):
            for start, end in chunks_of(job):
                cursor = start
                while cursor < end:
                    load[cursor] = load.get(cursor, 0) + job.power_kw
                    cursor += SLOT
    return load
