"""Validation naming the field, the lifecycle, and persistence on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest

import job_agent
from models import AssetSpec, JobSpec, PlanSpec
from storage import get_db


def _errors(model, body):
    with pytest.raises(job_agent.ValidationFailed) as info:
        job_agent.validate(model, body)
    return {e["field"]: e["message"] for e in info.value.errors}


BASE = {"name": "train", "duration_minutes": 180, "power_kw": 40}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"power_kw": -1}, "power_kw"),
        ({"power_kw": 0}, "power_kw"),
        ({"duration_minutes": 0}, "duration_minutes"),
        ({"duration_minutes": 7 * 24 * 60 + 1}, "duration_minutes"),
        ({"regions": ["99"]}, "regions"),
        ({"regions": "13"}, "regions"),
        ({"regions": ["13"], "asset_id": 1}, "regions"),
        ({"earliest_start": "2026-11-28T10:00:00Z", "deadline": "2026-11-28T09:00:00Z"}, "deadline"),
        ({"deadline": "2026-11-28T09:00"}, "deadline"),
        ({"objective": "speed"}, "objective"),
        ({"min_chunk_minutes": 60}, "min_chunk_minutes"),
        ({"interruptible": True, "min_chunk_minutes": 600}, "min_chunk_minutes"),
        ({"carbon_cap_kg": -2}, "carbon_cap_kg"),
        ({"callback_url": "ftp://x"}, "callback_url"),
        ({"name": ""}, "name"),
        ({"gpus": 8}, "gpus"),
    ],
)
def test_bad_job_names_the_field(change, field):
    assert field in _errors(JobSpec, {**BASE, **change})


def test_body_must_be_an_object():
    assert _errors(JobSpec, ["not", "an", "object"]) == {"body": "expected a JSON object"}


def test_plan_spec_needs_no_name():
    spec = job_agent.validate(PlanSpec, {"duration_minutes": 60, "power_kw": 1, "regions": [13, "national", "13"]})
    assert spec.regions == ["13", "national"]  # ints accepted, duplicates dropped


def test_asset_region_must_be_a_dno_region():
    assert "region_id" in _errors(AssetSpec, {"name": "a", "region_id": 15, "max_power_kw": 10})


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        (["scheduled", "running", "completed"], True),
        (["scheduled", "cancelled"], True),
        (["scheduled", "running", "failed"], True),
        (["completed"], False),
        (["scheduled", "running", "completed", "cancelled"], False),
        (["scheduled", "cancelled", "running"], False),
    ],
)
def test_lifecycle_allows_only_legal_moves(app, clock, path, allowed):
    job = job_agent.new_job(
        job_agent.validate(JobSpec, BASE), ["national"], 1.2, clock.now, clock.now + timedelta(hours=5), clock.now
    )
    try:
        for status in path:
            job_agent.transition(job, status, clock.now)
    except job_agent.IllegalTransition:
        assert not allowed
    else:
        assert allowed and job.status == path[-1]


def test_jobs_and_assets_persist_on_both_databases(live_app, clock):
    with live_app.app_context():
        db = get_db()
        asset = job_agent.create_asset(db, AssetSpec(name="rack-1", region_id=14, max_power_kw=50), clock.now)
        with pytest.raises(job_agent.ValidationFailed):
            job_agent.create_asset(db, AssetSpec(name="rack-1", region_id=13, max_power_kw=5), clock.now)
        spec = job_agent.validate(JobSpec, {**BASE, "asset_id": asset.id})
        regions, pue, found = job_agent.resolve_target(db, spec)
        assert (regions, pue, found.id) == (["14"], 1.2, asset.id)
        for name, status in (("alpha train", "scheduled"), ("beta infer", "pending")):
            job = job_agent.new_job(
                job_agent.validate(JobSpec, {**BASE, "name": name, "regions": ["14", "13"]}),
                ["14", "13"],
                1.2,
                clock.now,
                clock.now + timedelta(hours=9),
                clock.now,
            )
            job.status = status
            db.add(job)
        db.commit()
        assert [j.name for j in job_agent.list_jobs(db, status="scheduled")] == ["alpha train"]
        assert len(job_agent.list_jobs(db, region="13")) == 2
        assert len(job_agent.list_jobs(db, region="1")) == 0
        assert [j.name for j in job_agent.list_jobs(db, q="INFER")] == ["beta infer"]
        out = job_agent.job_out(job_agent.list_jobs(db, q="alpha")[0])
        assert out.earliest_start == clock.now and out.regions == ["14", "13"]


def test_power_above_the_assets_maximum_is_rejected(app, clock):
    with app.app_context():
        db = get_db()
        asset = job_agent.create_asset(db, AssetSpec(name="small", region_id=13, max_power_kw=5), clock.now)
        with pytest.raises(job_agent.ValidationFailed) as info:
            job_agent.resolve_target(db, job_agent.validate(JobSpec, {**BASE, "asset_id": asset.id}))
        assert info.value.errors[0]["field"] == "power_kw"
        with pytest.raises(job_agent.ValidationFailed) as info:
            job_agent.resolve_target(db, job_agent.validate(JobSpec, {**BASE, "asset_id": 999}))
        assert info.value.errors[0]["field"] == "asset_id"
