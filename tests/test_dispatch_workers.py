"""Several scheduler processes on PostgreSQL: each due dispatch happens exactly once, and a worker killed while
holding claims has them dispatched by another after its lease."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from receiver import Receiver
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from conftest import _make_app
from storage import Dispatch, DispatchEvent, Job
from timeutil import utcnow

ROOT = Path(__file__).resolve().parent.parent


def due_jobs(engine, count: int, callback_url: str) -> dict[int, str]:
    """`count` scheduled jobs whose start is due now, each with a callback secret; returns id -> secret."""
    now = utcnow()
    start = now - timedelta(minutes=1)
    rows = []
    for i in range(count):
        rows.append(
            {
                "name": f"due-{i}",
                "status": "scheduled",
                "regions": ["14"],
                "duration_minutes": 60,
                "power_kw": 1.0,
                "pue": 1.2,
                "earliest_start": start,
                "deadline": start + timedelta(hours=2),
                "interruptible": False,
                "objective": "carbon",
                "callback_url": callback_url,
                "callback_secret": secrets.token_hex(32),
                "planned_region": "14",
                "planned_start": start,
                "planned_end": start + timedelta(hours=1),
                "moves": 0,
                "plan": {
                    "placement": {
                        "region": "14",
                        "slots": [{"start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat()}],
                    }
                },
                "created_at": now,
                "updated_at": now,
            }
        )
    with Session(engine) as db:
        db.execute(insert(Job), rows)
        jobs = {job.id: job.callback_secret for job in db.scalars(select(Job))}
        db.execute(
            insert(DispatchEvent),
            [
                {"job_id": job_id, "chunk": 0, "action": "start", "due_at": start, "status": "pending", "attempts": 0}
                for job_id in jobs
            ],
        )
        db.commit()
    return jobs


def worker(url: str, name: str, tmp_path: Path, **env) -> subprocess.Popen:
    environment = {
        **os.environ,
        "DATABASE_URL": url,
        "GRID_SOURCE": "recorded",
        "CEC_ENV": "development",
        "AUDIT_LOG_PATH": str(tmp_path / "decisions.jsonl"),
        "CALLBACK_BACKOFF": "0.05",
        "CALLBACK_ATTEMPTS": "2",
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "app", "scheduler", "run", "--until-idle", "--worker-id", name],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_four_workers_dispatch_a_thousand_due_jobs_exactly_once(postgres_url, tmp_path, clock):
    url, engine = postgres_url
    _make_app(tmp_path, url, clock).extensions["engine"].dispose()  # migrate
    with Receiver() as receiver:
        receiver.secrets = due_jobs(engine, 1000, receiver.url)
        workers = [worker(url, f"w{i}", tmp_path) for i in range(4)]
        for process in workers:
            assert process.wait(timeout=300) == 0, process.stderr.read().decode()[-2000:]
            process.stderr.close()
        events = receiver.events()
    with Session(engine) as db:
        by_worker = dict(db.execute(select(Dispatch.worker, func.count()).group_by(Dispatch.worker)).all())
        assert db.scalar(select(func.count()).select_from(Dispatch)) == 1000
        assert db.scalar(select(func.count()).where(Job.status == "running")) == 1000
        assert db.scalar(select(func.count()).where(DispatchEvent.status == "pending")) == 0
    assert sum(by_worker.values()) == 1000 and len(by_worker) >= 2  # the work was shared
    assert len(events) == 1000 and len(set(events)) == 1000  # one callback per job, none twice
    assert receiver.bad_signatures == 0


def test_a_killed_workers_claims_are_taken_over_after_the_lease(postgres_url, tmp_path, clock):
    url, engine = postgres_url
    _make_app(tmp_path, url, clock).extensions["engine"].dispose()
    with Receiver() as receiver:
        receiver.secrets = due_jobs(engine, 20, receiver.url)
        receiver.delay = 30  # the first worker hangs on its first callback, holding all 20 claims
        stuck = worker(url, "stuck", tmp_path, DISPATCH_LEASE_SECONDS="3", CALLBACK_READ_TIMEOUT="60")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with Session(engine) as db:
                if db.scalar(select(func.count()).where(DispatchEvent.claimed_by == "stuck")) == 20:
                    break
            time.sleep(0.1)
        stuck.send_signal(signal.SIGKILL)
        stuck.wait()
        stuck.stderr.close()
        receiver.delay = 0
        rescuer = worker(url, "rescuer", tmp_path, DISPATCH_LEASE_SECONDS="3")
        assert rescuer.wait(timeout=120) == 0, rescuer.stderr.read().decode()[-2000:]
        rescuer.stderr.close()
        events = receiver.events()
    with Session(engine) as db:
        workers = db.scalars(select(Dispatch.worker)).all()
    assert len(workers) == 20 and set(workers) == {"rescuer"}
    assert len(events) == 20 and len(set(events)) == 20
