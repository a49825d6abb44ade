"""Who may do what, CSRF, security headers, cookies, rate limits (memory and Redis), and error answers."""

from __future__ import annotations

import os
import uuid

import pytest
from werkzeug.exceptions import Forbidden

from conftest import PASSWORD, _make_app, bearer_client, csrf_token, log_in, make_user
from storage import Job
from test_api_jobs import JOB, count

OPEN_GETS = [
    "/api/v1/signals?region=13&hours=2",
    "/health",
    "/api/v1/openapi.json",
    "/openapi.json",
    "/",
    "/docs",
    "/login",
]


@pytest.mark.parametrize("path", OPEN_GETS)
def test_reading_signals_health_and_docs_needs_no_account(client, path):
    assert client.get(path).status_code == 200


def test_anonymous_dry_run_plan_is_allowed(client):
    assert client.post("/api/v1/plan", json=JOB).status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/api/v1/jobs"),
        ("get", "/api/v1/jobs"),
        ("get", "/api/v1/jobs/1"),
        ("post", "/api/v1/jobs/1/cancel"),
        ("get", "/api/v1/assets"),
        ("post", "/api/v1/assets"),
        ("get", "/api/v1/assets/1"),
        ("get", "/api/v1/decisions"),
    ],
)
def test_anonymous_api_calls_get_401(client, app, method, path):
    response = getattr(client, method)(path, json=JOB)
    assert response.status_code == 401
    assert response.get_json()["errors"][0]["field"] == "authorization"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert count(app, Job) == 0


@pytest.mark.parametrize("path", ["/jobs", "/jobs/new", "/jobs/1", "/assets", "/decisions"])
def test_anonymous_pages_redirect_to_login(client, path):
    response = client.get(path)
    assert response.status_code == 302 and response.headers["Location"].startswith("/login?next=")


def test_bad_and_revoked_tokens_are_refused(app, runner):
    token = make_user(app, "carol")
    assert bearer_client(app, token).get("/api/v1/jobs").status_code == 200
    assert bearer_client(app, "cec_" + "x" * 40).get("/api/v1/jobs").status_code == 401
    assert bearer_client(app, token + "x").post("/api/v1/jobs", json=JOB).status_code == 401
    listed = runner.invoke(args=["tokens", "list"])
    assert "carol" in listed.output and token not in listed.output and "active" in listed.output
    token_id = listed.output.split()[0]
    assert runner.invoke(args=["tokens", "revoke", token_id]).exit_code == 0
    revoked = bearer_client(app, token).get("/api/v1/jobs")
    assert revoked.status_code == 401 and "revoked" in revoked.get_json()["errors"][0]["message"]


def test_tokens_are_stored_hashed(app):
    from sqlalchemy import select

    from storage import ApiToken, User, get_db

    token = make_user(app, "dave")
    with app.app_context():
        row = get_db().scalar(select(ApiToken))
        user = get_db().scalar(select(User))
        assert token not in (row.token_hash, row.prefix) and len(row.token_hash) == 64
        assert PASSWORD not in user.password_hash and user.password_hash.startswith("scrypt:")


def test_operators_see_only_their_own_jobs_unless_admin(app):
    alice, bob = bearer_client(app, make_user(app, "alice")), bearer_client(app, make_user(app, "bob"))
    root = bearer_client(app, make_user(app, "root", admin=True))
    job = alice.post("/api/v1/jobs", json=JOB).get_json()
    assert bob.get(f"/api/v1/jobs/{job['id']}").status_code == 404
    assert bob.post(f"/api/v1/jobs/{job['id']}/cancel").status_code == 404
    assert bob.get("/api/v1/jobs").get_json() == []
    assert bob.get("/api/v1/decisions").get_json()["decisions"] == []
    assert [j["id"] for j in root.get("/api/v1/jobs").get_json()] == [job["id"]]
    assert root.get(f"/api/v1/jobs/{job['id']}").status_code == 200
    assert alice.get(f"/api/v1/jobs/{job['id']}").get_json()["status"] == "scheduled"
    bob_browser = log_in(app, "bob")
    assert bob_browser.get(f"/jobs/{job['id']}").status_code == 404
    decision_id = root.get("/api/v1/decisions").get_json()["decisions"][0]["id"]
    assert bob_browser.get(f"/decisions/{decision_id}").status_code == 404


def test_session_api_write_needs_the_csrf_header(app, operator):
    assert operator.post("/api/v1/jobs", json=JOB).status_code == 400
    token = csrf_token(operator, "/jobs/new")
    assert operator.post("/api/v1/jobs", json=JOB, headers={"X-CSRFToken": token}).status_code == 201


def test_login_needs_csrf_and_the_right_password(app, api_token, client):
    assert client.post("/login", data={"name": "alice", "password": PASSWORD}).status_code == 400
    wrong = client.post(
        "/login", data={"name": "alice", "password": "nope", "csrf_token": csrf_token(client, "/login")}
    )
    assert wrong.status_code == 401 and b"Wrong name or password" in wrong.data
    unknown = client.post(
        "/login", data={"name": "zed", "password": PASSWORD, "csrf_token": csrf_token(client, "/login")}
    )
    assert unknown.status_code == 401
    nul = client.post("/login", data={"name": "a\x00b", "password": "x", "csrf_token": csrf_token(client, "/login")})
    assert nul.status_code == 401  # not a 500 from PostgreSQL


def test_login_redirects_only_to_local_paths(app, api_token):
    client = app.test_client()
    form = {"name": "alice", "password": PASSWORD, "csrf_token": csrf_token(client, "/login")}
    assert client.post("/login?next=/assets", data=form).headers["Location"] == "/assets"
    form["csrf_token"] = csrf_token(client, "/login")
    assert client.post("/login?next=//evil.example/x", data=form).headers["Location"] == "/jobs"


def test_logout_is_a_post_with_csrf(operator):
    assert operator.post("/logout").status_code == 400
    assert operator.post("/logout", data={"csrf_token": csrf_token(operator, "/jobs")}).status_code == 303
    assert operator.get("/jobs").status_code == 302


@pytest.mark.parametrize("path", ["/", "/health", "/api/v1/jobs", "/login", "/static/style.css"])
def test_security_headers_on_every_response(client, path):
    response = client.get(path)
    response.close()  # static files are streamed from an open file
    headers = response.headers
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "strict-origin-when-cross-origin"


def test_templates_have_no_inline_script_or_style():
    from pathlib import Path

    for template in (Path(__file__).resolve().parent.parent / "templates").glob("*.html"):
        text = template.read_text()
        assert "<script" not in text and " style=" not in text and "onclick" not in text, template.name


def test_session_cookie_flags(app, api_token):
    client = app.test_client()
    form = {"name": "alice", "password": PASSWORD, "csrf_token": csrf_token(client, "/login")}
    cookie = client.post("/login", data=form).headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie  # development: plain http


def test_production_requires_a_secret_key_and_secure_cookies(tmp_path, clock, monkeypatch):
    monkeypatch.setenv("CEC_ENV", "production")
    monkeypatch.delenv("SECRET_KEY", raising=False)
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        _make_app(tmp_path, f"sqlite:///{tmp_path / 'p.sqlite3'}", clock)
    monkeypatch.setenv("SECRET_KEY", "k" * 64)
    app = _make_app(tmp_path, f"sqlite:///{tmp_path / 'p.sqlite3'}", clock)
    assert app.config["SESSION_COOKIE_SECURE"] and app.config["REMEMBER_COOKIE_SECURE"]
    app.extensions["engine"].dispose()


def test_login_is_rate_limited(tmp_path, clock):
    app = _make_app(tmp_path, f"sqlite:///{tmp_path / 'r.sqlite3'}", clock, RATE_LIMIT_LOGIN="3 per minute")
    client = app.test_client()
    statuses = []
    for _ in range(5):
        form = {"name": "x", "password": "y", "csrf_token": csrf_token(client, "/login")}
        statuses.append(client.post("/login", data=form).status_code)
    assert statuses == [401, 401, 401, 429, 429]
    app.extensions["engine"].dispose()


def test_writes_are_rate_limited_with_a_json_429(tmp_path, clock):
    app = _make_app(tmp_path, f"sqlite:///{tmp_path / 'w.sqlite3'}", clock, RATE_LIMIT_WRITES="2 per minute")
    api = bearer_client(app, make_user(app, "erin"))
    statuses = [api.post("/api/v1/jobs", json=JOB).status_code for _ in range(3)]
    assert statuses == [201, 201, 429]
    limited = api.post("/api/v1/jobs", json=JOB)
    assert limited.get_json()["status"] == 429 and count(app, Job) == 2
    app.extensions["engine"].dispose()


def test_rate_limits_are_shared_through_redis(tmp_path, clock):
    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        pytest.skip("TEST_REDIS_URL is not set: Redis-backed rate limit test skipped (.ci/run sets it)")
    import redis

    prefix = f"cec-test-{uuid.uuid4().hex}"
    settings = {"REDIS_URL": url, "RATELIMIT_KEY_PREFIX": prefix, "RATE_LIMIT_ANONYMOUS_PLAN": "2 per minute"}
    first = _make_app(tmp_path, f"sqlite:///{tmp_path / 'a.sqlite3'}", clock, **settings)
    second = _make_app(tmp_path, f"sqlite:///{tmp_path / 'b.sqlite3'}", clock, **settings)
    # two app instances (two workers) share one budget
    assert first.test_client().post("/api/v1/plan", json=JOB).status_code == 200
    assert second.test_client().post("/api/v1/plan", json=JOB).status_code == 200
    assert first.test_client().post("/api/v1/plan", json=JOB).status_code == 429
    keys = redis.Redis.from_url(url).keys(f"*{prefix}*")
    assert keys
    redis.Redis.from_url(url).delete(*keys)
    for app in (first, second):
        app.extensions["engine"].dispose()


def _add_failing_routes(app):
    def boom():
        raise RuntimeError("secret internals")

    def forbidden():
        raise Forbidden()

    app.add_url_rule("/api/v1/boom", "api_boom", boom)
    app.add_url_rule("/boom", "boom", boom)
    app.add_url_rule("/api/v1/forbidden", "api_forbidden", forbidden)
    app.add_url_rule("/forbidden", "forbidden", forbidden)


def test_errors_are_json_under_api_and_pages_elsewhere_never_a_traceback(tmp_path, clock):
    app = _make_app(tmp_path, f"sqlite:///{tmp_path / 'e.sqlite3'}", clock, PROPAGATE_EXCEPTIONS=False)
    _add_failing_routes(app)
    client = app.test_client()
    for path, code in (("/api/v1/boom", 500), ("/api/v1/forbidden", 403), ("/api/v1/nothing", 404)):
        response = client.get(path)
        assert response.status_code == code and response.is_json and response.get_json()["status"] == code
        assert b"secret internals" not in response.data and b"Traceback" not in response.data
    for path, code in (("/boom", 500), ("/forbidden", 403), ("/nothing", 404)):
        response = client.get(path)
        assert response.status_code == code and response.mimetype == "text/html"
        assert b"secret internals" not in response.data and b"Traceback" not in response.data
    assert client.delete("/api/v1/signals").status_code == 405 and client.delete("/api/v1/signals").is_json
    app.extensions["engine"].dispose()


def test_cli_users_and_tokens(runner, app):
    created = runner.invoke(args=["users", "create", "frank", "--password-stdin"], input=PASSWORD + "\n")
    assert created.exit_code == 0 and "created user frank" in created.output
    short = runner.invoke(args=["users", "create", "gina", "--password-stdin"], input="short\n")
    assert short.exit_code != 0 and "at least 12" in short.output
    again = runner.invoke(args=["users", "create", "frank", "--password-stdin"], input=PASSWORD + "\n")
    assert again.exit_code != 0 and "exists" in again.output
    issued = runner.invoke(args=["tokens", "create", "frank"])
    token = issued.output.strip().splitlines()[-1]
    assert issued.exit_code == 0 and token.startswith("cec_")
    assert bearer_client(app, token).get("/api/v1/jobs").status_code == 200
    assert runner.invoke(args=["tokens", "create", "nobody"]).exit_code != 0
    prompted = runner.invoke(args=["users", "create", "hana", "--admin"], input=f"{PASSWORD}\n{PASSWORD}\n")
    assert prompted.exit_code == 0 and "admin user hana" in prompted.output
