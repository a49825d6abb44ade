"""Dispatch with signed callbacks, completion, re-planning rules, capacity, and the scheduler CLI."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from receiver import Receiver

import fleet
import policy_agent as pa
from conftest import planned_load
from storage import Dispatch, Job, get_db
from test_api_jobs import decisions
from timeutil import SLOT

NOW_JOB = {
    "name": "now",
    "duration_minutes": 60,
    "power_kw": 10,
    "regions": ["14"],
    "deadline": "2026-11-27T10:00:00Z",
}  # the only window is 09:00-10:00, the frozen now


def tick(app, replan=False, worker="w1"):
    with app.app_context():
        return app.extensions["scheduler"].tick(get_db(), app.config["CLOCK"](), worker, replan=replan)


@pytest.fixture
def fast_callbacks(app):
    app.extensions["scheduler"].sender.backoff = 0.01
    return app


def test_start_and_stop_are_dispatched_with_signed_callbacks(api, app, clock, fast_callbacks):
    with Receiver() as receiver:
        created = api.post("/api/v1/jobs", json={**NOW_JOB, "callback_url": receiver.url}).get_json()
        secret = created["callback_secret"]
        assert len(secret) == 64 and "callback_secret" not in api.get(f"/api/v1/jobs/{created['id']}").get_json()
        receiver.secrets[created["id"]] = secret
        assert tick(app) == {"dispatched": 1, "moved": 0}
        assert api.get(f"/api/v1/jobs/{created['id']}").get_json()["status"] == "running"
        assert tick(app)["dispatched"] == 0  # nothing else due yet
        clock.now += timedelta(hours=1)
        assert tick(app)["dispatched"] == 1
        job = api.get(f"/api/v1/jobs/{created['id']}").get_json()
        assert job["status"] == "completed" and job["actual_end"] == "2026-11-27T10:00:00Z"
        assert receiver.events() == [(created["id"], 0, "start"), (created["id"], 0, "stop")]
        assert receiver.bad_signatures == 0
    dispatches = [d for d in decisions(app) if d["kind"] == "dispatch"]
    assert [d["action"] for d in dispatches] == ["start", "stop"]
    assert dispatches[0]["callback"] == {"ok": True, "status": "HTTP 204", "attempts": 1}


def test_wrong_secret_is_rejected_by_the_receiver(api, app, fast_callbacks):
    with Receiver() as receiver:
        created = api.post("/api/v1/jobs", json={**NOW_JOB, "callback_url": receiver.url}).get_json()
        receiver.secrets[created["id"]] = "not the secret"
        tick(app)
        assert receiver.bad_signatures == 3 and receiver.events() == []  # three attempts, all refused
    [dispatch] = [d for d in decisions(app) if d["kind"] == "dispatch"]
    assert dispatch["callback"]["ok"] is False and dispatch["callback"]["status"] == "HTTP 401"


def test_failed_callbacks_are_retried(api, app, fast_callbacks):
    with Receiver() as receiver:
        receiver.fail_first = 2
        created = api.post("/api/v1/jobs", json={**NOW_JOB, "callback_url": receiver.url}).get_json()
        receiver.secrets[created["id"]] = created["callback_secret"]
        tick(app)
        assert receiver.events() == [(created["id"], 0, "start")]
    [dispatch] = [d for d in decisions(app) if d["kind"] == "dispatch"]
    assert dispatch["callback"]["attempts"] == 3 and dispatch["callback"]["ok"]


def test_interruptible_job_gets_a_start_and_stop_per_run(api, app, clock):
    body = {
        "name": "chunky",
        "duration_minutes": 60,
        "power_kw": 5,
        "regions": ["14"],
        "interruptible": True,
        "deadline": "2026-11-27T12:00:00Z",
    }
    job = api.post("/api/v1/jobs", json=body).get_json()
    runs = job["placement"]["slots"]
    clock.now += timedelta(hours=3)
    assert tick(app)["dispatched"] == 2 * len(runs)
    with app.app_context():
        done = get_db().query(Dispatch).filter_by(job_id=job["id"]).count()
    assert done == 2 * len(runs)
    assert api.get(f"/api/v1/jobs/{job['id']}").get_json()["status"] == "completed"


def test_complete_through_the_api_records_the_actual_run(api, app, clock):
    job = api.post("/api/v1/jobs", json=NOW_JOB).get_json()
    assert api.post(f"/api/v1/jobs/{job['id']}/complete").status_code == 409  # not running yet
    tick(app)
    clock.now += timedelta(minutes=40)
    done = api.post(f"/api/v1/jobs/{job['id']}/complete").get_json()
    assert done["status"] == "completed" and done["actual_start"] == "2026-11-27T09:00:00Z"
    assert done["actual_end"] == "2026-11-27T09:40:00Z"
    clock.now += timedelta(hours=1)
    assert tick(app)["dispatched"] == 0  # its stop was dropped when it completed
    assert decisions(app)[-1]["kind"] == "complete"


def test_cancelled_job_is_not_dispatched(api, app):
    job = api.post("/api/v1/jobs", json=NOW_JOB).get_json()
    api.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert tick(app)["dispatched"] == 0


def _push_to_a_worse_window(app, job_id: int) -> tuple[float, float, str]:
    """Put a stored job on the worst window of its own signal, as an old forecast might have.

    Returns the best score, the worse score and the worse window's start.
    """
    from job_agent import spec_of
    from models import JobSpec

    with app.app_context():
        db, now = get_db(), app.config["CLOCK"]()
        sched = app.extensions["scheduler"]
        job = db.get(Job, job_id)
        spec = JobSpec.model_validate(spec_of(job))
        planned = sched.plan(db, spec, now, exclude_job=job.id)
        request = sched._request(spec, job.pue, planned.earliest, planned.deadline)
        series = sched._signals(db, job.regions, planned.earliest, planned.deadline, now)[1][0]
        kg, gbp = pa.slot_terms(series, request)
        lo, hi = pa.window(series, request)
        scores = pa.contiguous_windows(kg, gbp, lo, hi, request.slots, request).scores
        worst = lo + int(np.argmax(scores))
        worse = pa.plan_for(request, [series], job.regions[0], tuple(range(worst, worst + request.slots)), "older")
        sched._schedule(db, job, worse, planned.signals, now)
        db.commit()
        start = series.starts[worst].strftime("%Y-%m-%dT%H:%M:%SZ")
        return planned.outcome.explanation["score"], worse.explanation["score"], start


REPLAN_JOB = {
    "name": "movable",
    "duration_minutes": 120,
    "power_kw": 40,
    "regions": ["14"],
    "earliest_start": "2026-11-27T10:00:00Z",
    "deadline": "2026-11-28T09:00:00Z",
}


def test_replan_moves_a_job_when_it_gains_more_than_the_threshold(api, app):
    job = api.post("/api/v1/jobs", json=REPLAN_JOB).get_json()
    best, worse, _ = _push_to_a_worse_window(app, job["id"])
    assert worse > best * 1.02
    tick(app, replan=True)
    moved = api.get(f"/api/v1/jobs/{job['id']}").get_json()
    assert moved["moves"] == 1 and moved["explanation"]["score"] == pytest.approx(best)
    assert moved["placement"]["end"] <= "2026-11-28T09:00:00Z"
    record = decisions(app)[-1]
    assert record["kind"] == "replan" and record["before_score"] == pytest.approx(worse)
    assert record["before"]["start"] != record["after"]["start"]


def test_replan_respects_the_threshold_and_the_move_limit(api, app):
    job = api.post("/api/v1/jobs", json=REPLAN_JOB).get_json()
    _, _, worse_start = _push_to_a_worse_window(app, job["id"])
    app.extensions["scheduler"].replan_threshold = 0.99  # only a 99 % gain would move it
    tick(app, replan=True)
    assert api.get(f"/api/v1/jobs/{job['id']}").get_json()["moves"] == 0
    app.extensions["scheduler"].replan_threshold = 0.02
    with app.app_context():
        get_db().get(Job, job["id"]).moves = 3
        get_db().commit()
    tick(app, replan=True)
    stuck = api.get(f"/api/v1/jobs/{job['id']}").get_json()
    assert stuck["moves"] == 3 and stuck["placement"]["start"] == worse_start


def test_running_jobs_are_frozen(api, app):
    job = api.post("/api/v1/jobs", json=REPLAN_JOB).get_json()
    _push_to_a_worse_window(app, job["id"])
    with app.app_context():
        get_db().get(Job, job["id"]).status = "running"
        get_db().commit()
    tick(app, replan=True)
    assert api.get(f"/api/v1/jobs/{job['id']}").get_json()["moves"] == 0


def test_asset_cap_is_never_over_committed_by_submissions_or_replans(api, app):
    asset = api.post("/api/v1/assets", json={"name": "pod", "region_id": 14, "max_power_kw": 100}).get_json()
    body = {"duration_minutes": 180, "power_kw": 60, "asset_id": asset["id"], "deadline": "2026-11-27T21:00:00Z"}
    placed = [api.post("/api/v1/jobs", json={**body, "name": f"j{i}"}) for i in range(5)]
    assert [r.status_code for r in placed[:3]] == [201, 201, 201]
    full = [r for r in placed if r.status_code == 409]
    assert full and full[0].get_json()["errors"][0]["field"] == "capacity"
    tick(app, replan=True)
    assert max(planned_load(app).values()) <= 100


@st.composite
def fleets(draw):
    length = draw(st.integers(6, 24))
    carbon = draw(st.lists(st.integers(20, 300), min_size=length, max_size=length))
    starts = tuple(pa_t0() + i * SLOT for i in range(length))
    series = pa.Series("x", starts, tuple(map(float, carbon)), (10.0,) * length)
    jobs = []
    for i in range(draw(st.integers(1, 12))):
        slots = draw(st.integers(1, 4))
        deadline_slots = draw(st.integers(slots, length))
        jobs.append(
            fleet.FleetJob(
                i,
                pa.JobRequest(
                    duration_minutes=slots * 30,
                    power_kw=draw(st.sampled_from([5.0, 10.0, 25.0])),
                    pue=1.0,
                    earliest_start=starts[0],
                    deadline=starts[0] + deadline_slots * SLOT,
                    interruptible=draw(st.booleans()),
                    min_chunk_minutes=30,
                ),
            )
        )
    cap = np.array(draw(st.lists(st.sampled_from([0.0, 10.0, 25.0, 40.0]), min_size=length, max_size=length)))
    return series, jobs, cap


def pa_t0():
    from datetime import datetime

    from timeutil import UTC

    return datetime(2023, 3, 15, 12, 0, tzinfo=UTC)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets())
def test_no_path_over_commits(case):
    series, jobs, cap = case
    power = {fj.key: fj.job.power_kw for fj in jobs}
    planned = fleet.plan_fleet(series, jobs, cap, time_limit=5)
    assert np.all(fleet.load_profile(len(cap), planned.placements, power) <= cap + 1e-6)
    for key, indices in planned.placements.items():
        fj = next(j for j in jobs if j.key == key)
        assert len(indices) == fj.job.slots and max(indices) < len(series.starts)
    model, unplaceable = fleet.build(series, jobs)
    greedy = fleet.greedy_by_regret(series, jobs, cap, model, unplaceable, np.asarray(model.costs), 0.0)
    assert np.all(fleet.load_profile(len(cap), greedy.placements, power) <= cap + 1e-6)
    # one job at a time against what is left: the submission path
    free = cap.copy()
    for fj in jobs:
        result = pa.plan(fj.job, [series], {"x": free})
        if result.feasible:
            idx = [series.starts.index(a) + k for a, b in result.chunks for k in range(int((b - a) / SLOT))]
            free[idx] -= fj.job.power_kw
    assert np.all(free >= -1e-6)


def test_scheduler_cli_and_export(api, app, runner):
    api.post("/api/v1/jobs", json=REPLAN_JOB)
    out = runner.invoke(args=["jobs", "export", "--format", "at"])
    assert out.exit_code == 0 and "TZ=UTC at -t 20261127" in out.output
    out = runner.invoke(args=["jobs", "export", "--format", "sbatch"])
    assert "sbatch --begin=2026-11-27T" in out.output and "--time=02:00:00" in out.output
    tick_out = runner.invoke(args=["scheduler", "tick", "--replan"])
    assert tick_out.exit_code == 0 and "dispatched 0, moved 0" in tick_out.output


def test_dashboard_and_statistics(api, operator, app):
    asset = api.post("/api/v1/assets", json={"name": "pod", "region_id": 14, "max_power_kw": 100}).get_json()
    first = api.post(
        "/api/v1/jobs",
        json={"name": "a", "duration_minutes": 120, "power_kw": 60, "asset_id": asset["id"], "inference_count": 1000},
    ).get_json()
    second = api.post("/api/v1/jobs", json={**REPLAN_JOB, "name": "b"}).get_json()
    stats = api.get("/api/v1/statistics").get_json()
    overall = stats["overall"]
    assert overall["jobs"]["scheduled"] == 2
    assert overall["carbon_kg_planned"] == pytest.approx(first["plan"]["carbon_kg"] + second["plan"]["carbon_kg"])
    assert overall["carbon_kg_saved"] == pytest.approx(first["savings"]["carbon_kg"] + second["savings"]["carbon_kg"])
    assert overall["carbon_g_per_inference"] == pytest.approx(first["plan"]["carbon_kg"])  # 1000 inferences
    [pod] = stats["assets"]
    assert pod["name"] == "pod" and pod["jobs"]["scheduled"] == 1 and stats["no_asset"]["jobs"]["scheduled"] == 1
    page = operator.get("/dashboard").data.decode()
    assert 'class="cap"' in page and 'class="load' in page and "peak planned 60.0 kW" in page
    assert 'id="queue"' in page and ">a</a>" in page and ">b</a>" in page


def test_run_job_plans_waits_runs_and_records(app, runner, tmp_path):
    marker = tmp_path / "ran"
    dry = runner.invoke(
        args=["run-job", "--duration", "30m", "--power-kw", "2", "--within", "3h", "--region", "14", "--dry-run"]
    )
    assert dry.exit_code == 0 and "Best job start time" in dry.output
    result = runner.invoke(
        args=[
            "run-job",
            "--duration",
            "30m",
            "--power-kw",
            "2",
            "--within",
            "30m",
            "--region",
            "14",
            "--",
            "touch",
            str(marker),
        ]
    )
    assert result.exit_code == 0, result.output
    assert marker.exists() and "recorded as completed" in result.output
    with app.app_context():
        job = get_db().query(Job).one()
        assert job.status == "completed" and job.actual_start is not None
    failing = runner.invoke(args=["run-job", "--duration", "30m", "--power-kw", "2", "--within", "30m", "--", "false"])
    assert failing.exit_code == 1
    with app.app_context():
        assert get_db().query(Job).filter_by(status="failed").count() == 1
    kinds = [d["kind"] for d in decisions(app)]
    assert kinds.count("dispatch") == 2 and kinds.count("complete") == 2


def test_interruptible_job_on_an_asset_is_replanned_within_the_cap(api, app):
    asset = api.post("/api/v1/assets", json={"name": "pod", "region_id": 14, "max_power_kw": 50}).get_json()
    body = {
        "name": "chunks",
        "duration_minutes": 120,
        "power_kw": 40,
        "asset_id": asset["id"],
        "interruptible": True,
        "earliest_start": "2026-11-27T10:00:00Z",
        "deadline": "2026-11-28T09:00:00Z",
    }
    job = api.post("/api/v1/jobs", json=body).get_json()
    best, worse, _ = _push_to_a_worse_window(app, job["id"])
    assert worse > best * 1.02
    tick(app, replan=True)
    moved = api.get(f"/api/v1/jobs/{job['id']}").get_json()
    assert moved["moves"] == 1 and moved["explanation"]["score"] == pytest.approx(best)


def test_production_refuses_callbacks_into_the_internal_network():
    from callbacks import CallbackSender, private_target

    assert "non-public" in private_target("http://127.0.0.1:9/hook")
    assert "non-public" in private_target("http://169.254.169.254/latest/meta-data")
    assert "non-public" in private_target("http://10.0.0.8/x")
    delivery = CallbackSender(allow_private=False).send("http://127.0.0.1:9/hook", "s", "start", {"job_id": 1})
    assert not delivery.ok and delivery.status.startswith("refused") and delivery.attempts == 0
