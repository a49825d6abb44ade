"""gunicorn with 4 workers on PostgreSQL, 8 concurrent clients submitting 1,000 jobs: each 201 stored exactly once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select

from audit_logger import verify_file
from conftest import _make_app, make_user
from storage import Job

ROOT = Path(__file__).resolve().parent.parent
CLIENTS, PER_CLIENT = 8, 125


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def gunicorn(postgres_url, tmp_path, clock):
    url, _ = postgres_url
    app = _make_app(tmp_path, url, clock)  # migrates the schema and holds the user
    token = make_user(app, "loadtester")
    app.extensions["engine"].dispose()
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "GRID_SOURCE": "recorded",
        "CEC_ENV": "production",
        "SECRET_KEY": "concurrency-test-" + "k" * 40,
        "AUDIT_LOG_PATH": str(tmp_path / "decisions.jsonl"),
        "RATE_LIMIT_WRITES": "100000 per minute",
        "RATE_LIMIT_DEFAULT": "100000 per minute",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-w", "4", "-b", f"127.0.0.1:{port}", "--timeout", "60", "app:create_app()"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base}/health", timeout=10).status_code == 200:
                break
        except requests.RequestException:  # not listening yet, or a worker still starting
            time.sleep(0.3)
    else:
        process.kill()
        error = process.stderr.read().decode()[-2000:]
        process.stderr.close()
        pytest.fail(f"gunicorn did not start: {error}")
    yield base, token, tmp_path / "decisions.jsonl"
    process.terminate()
    try:
        process.wait(timeout=15)
    finally:
        process.stderr.close()


def test_thousand_jobs_from_eight_clients_each_stored_exactly_once(gunicorn, postgres_url):
    base, token, audit_path = gunicorn
    _, engine = postgres_url

    def client(number: int) -> list[tuple[int, int | None, str]]:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        out = []
        for i in range(PER_CLIENT):
            name = f"load-{number}-{i}"
            body = {"name": name, "duration_minutes": 60, "power_kw": 5, "regions": ["14"]}
            response = session.post(f"{base}/api/v1/jobs", json=body, timeout=60)
            out.append((response.status_code, response.json().get("id") if response.status_code == 201 else None, name))
        return out

    with ThreadPoolExecutor(CLIENTS) as pool:
        results = [row for rows in pool.map(client, range(CLIENTS)) for row in rows]

    statuses = [status for status, _, _ in results]
    assert not [s for s in statuses if s >= 500], "server errors"
    created = [(job_id, name) for status, job_id, name in results if status == 201]
    assert len(created) == CLIENTS * PER_CLIENT
    with engine.connect() as connection:
        stored = dict(connection.execute(select(Job.id, Job.name)).all())
        assert connection.scalar(select(func.count()).select_from(Job)) == len(created)
    assert {job_id: name for job_id, name in created} == stored  # every 201 stored, exactly once, nothing else
    audit = verify_file(audit_path)
    assert audit.ok and audit.good == len(created)  # four workers appended one unbroken chain
