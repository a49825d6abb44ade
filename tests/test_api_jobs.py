"""REST routes for planning, jobs and assets: answers, bad input naming the field, nothing half-written."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from conftest import FROZEN_NOW
from storage import Asset, Job, get_db

JOB = {"name": "train-llm", "duration_minutes": 180, "power_kw": 40, "regions": ["14"], "objective": "carbon"}


def count(app, table) -> int:
    with app.app_context():
        return get_db().scalar(select(func.count()).select_from(table))


def decisions(app) -> list[dict]:
    path = app.config["AUDIT_LOG_PATH"]
    try:
        with open(path) as handle:
            return [json.loads(line) for line in handle]
    except FileNotFoundError:
        return []


def test_plan_is_a_dry_run_with_the_documented_shape(client, app):
    response = client.post("/api/v1/plan", json={**JOB, "inference_count": 1000})
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) >= {"placement", "plan", "baseline", "savings", "explanation"}
    assert set(body["placement"]) == {"region", "start", "end", "slots"}
    assert body["placement"]["region"] == "14" and body["placement"]["start"].endswith("Z")
    assert set(body["plan"]) == {"carbon_kg", "cost_gbp", "energy_kwh"}
    assert body["plan"]["energy_kwh"] == pytest.approx(40 * 1.2 * 3)
    assert set(body["savings"]) >= {"carbon_kg", "cost_gbp", "carbon_pct", "cost_pct", "carbon_g_per_inference"}
    assert body["baseline"]["start"] == "2026-11-27T09:00:00Z"  # now, at the frozen clock
    assert body["baseline"]["carbon_kg"] >= body["plan"]["carbon_kg"]
    assert len(body["explanation"]["runners_up"]) == 3
    assert count(app, Job) == 0 and decisions(app) == []


def test_submit_stores_schedules_and_records_the_decision(api, app):
    response = api.post("/api/v1/jobs", json=JOB)
    assert response.status_code == 201
    job = response.get_json()
    assert job["status"] == "scheduled" and job["placement"]["region"] == "14"
    assert response.headers["Location"] == f"/api/v1/jobs/{job['id']}"
    assert api.get(f"/api/v1/jobs/{job['id']}").get_json() == job
    [decision] = decisions(app)
    assert decision["kind"] == "plan" and decision["job_id"] == job["id"]
    assert decision["choice"] == job["placement"] and decision["savings"] == job["savings"]
    assert decision["inputs"]["signal"]["14"]["carbon"]["source"] == "recorded"


def test_jobs_list_filters(api):
    api.post("/api/v1/jobs", json={**JOB, "name": "alpha"})
    api.post("/api/v1/jobs", json={**JOB, "name": "beta", "regions": ["13"]})
    second = api.post("/api/v1/jobs", json={**JOB, "name": "gamma", "regions": ["national"]}).get_json()
    api.post(f"/api/v1/jobs/{second['id']}/cancel")
    names = lambda q: [j["name"] for j in api.get(f"/api/v1/jobs?{q}").get_json()]  # noqa: E731
    assert names("") == ["gamma", "beta", "alpha"]
    assert names("status=cancelled") == ["gamma"]
    assert names("region=13") == ["beta"]
    assert names("q=ALP") == ["alpha"]
    bad = api.get("/api/v1/jobs?status=bogus")
    assert bad.status_code == 422 and bad.get_json()["errors"][0]["field"] == "status"


def test_cancel_then_cancel_again_is_409(api, app):
    job = api.post("/api/v1/jobs", json=JOB).get_json()
    assert api.post(f"/api/v1/jobs/{job['id']}/cancel").get_json()["status"] == "cancelled"
    again = api.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert again.status_code == 409 and again.get_json()["errors"][0]["field"] == "status"
    assert [d["kind"] for d in decisions(app)] == ["plan", "cancel"]


def test_unknown_job_is_404(api):
    assert api.get("/api/v1/jobs/999").status_code == 404
    assert api.post("/api/v1/jobs/999/cancel").status_code == 404


def test_assets_create_list_get_and_plan_on_asset(api):
    response = api.post(
        "/api/v1/assets", json={"name": "gpu-pod", "region_id": 14, "max_power_kw": 100, "gpu_count": 64}
    )
    assert response.status_code == 201
    asset = response.get_json()
    assert asset["octopus_letter"] == "J" and asset["pue"] == 1.2
    assert api.get(f"/api/v1/assets/{asset['id']}").get_json() == asset
    assert api.get("/api/v1/assets").get_json() == [asset]
    job = api.post(
        "/api/v1/jobs", json={**{k: v for k, v in JOB.items() if k != "regions"}, "asset_id": asset["id"]}
    ).get_json()
    assert job["placement"]["region"] == "14" and job["asset_id"] == asset["id"]
    too_big = api.post("/api/v1/jobs", json={**JOB, "regions": None, "asset_id": asset["id"], "power_kw": 500})
    assert too_big.status_code == 422 and too_big.get_json()["errors"][0]["field"] == "power_kw"
    assert api.get("/api/v1/assets/99").status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**JOB, "power_kw": -5}, "power_kw"),
        ({**JOB, "duration_minutes": 0}, "duration_minutes"),
        ({**JOB, "earliest_start": "2026-11-28T10:00:00Z", "deadline": "2026-11-28T08:00:00Z"}, "deadline"),
        ({**JOB, "regions": ["99"]}, "regions"),
        ({**JOB, "asset_id": 12345, "regions": None}, "asset_id"),
        ({**JOB, "deadline": "2020-01-01T00:00:00Z"}, "deadline"),
        ({**JOB, "min_chunk_minutes": 60}, "min_chunk_minutes"),
    ],
)
def test_bad_job_is_422_naming_the_field_and_stores_nothing(api, app, body, field):
    response = api.post("/api/v1/jobs", json=body)
    assert response.status_code == 422, response.get_json()
    assert field in [e["field"] for e in response.get_json()["errors"]]
    assert count(app, Job) == 0 and decisions(app) == []


def test_infeasible_says_by_how_much(api):
    response = api.post("/api/v1/plan", json={**JOB, "deadline": "2026-11-27T11:00:00Z"})
    body = response.get_json()
    assert response.status_code == 409
    assert body["infeasible"]["constraint"] == "deadline" and body["infeasible"]["shortfall"] == 60
    assert body["errors"][0]["field"] == "deadline"
    assert {o["kind"] for o in body["offers"]} >= {"later_deadline"} and body["offers"][0]["id"] is None


@pytest.mark.parametrize(
    ("change", "field", "kinds"),
    [
        ({"deadline": "2026-11-27T10:00:00Z"}, "deadline", {"later_deadline"}),  # 1 h to do 3 h
        ({"carbon_cap_kg": 0.001}, "carbon_cap_kg", {"lowest_carbon", "other_region"}),
    ],
)
def test_infeasible_job_is_409_with_counter_offers_and_stored_pending(api, app, change, field, kinds):
    response = api.post("/api/v1/jobs", json={**JOB, **change})
    body = response.get_json()
    assert response.status_code == 409, body
    assert body["errors"][0]["field"] == field
    assert body["job"]["status"] == "pending" and count(app, Job) == 1
    offers = {o["kind"]: o for o in body["offers"]}
    assert kinds <= set(offers)
    for offer in offers.values():
        assert offer["id"] and offer["changes"] and "savings" in offer and offer["placement"]["start"].endswith("Z")
    [decision] = decisions(app)
    assert decision["kind"] == "negotiation" and len(decision["offers"]) == len(offers)


def test_ten_megabyte_body_is_413_naming_the_body(api, app):
    big = json.dumps({**JOB, "name": "x" * (10 * 1024 * 1024)})
    response = api.post("/api/v1/jobs", data=big, content_type="application/json")
    assert response.status_code == 413 and response.get_json()["errors"][0]["field"] == "body"
    assert count(app, Job) == 0


@pytest.mark.parametrize(
    ("data", "ctype"), [("{not json", "application/json"), ("name=x", "text/plain"), ("[1, 2]", "application/json")]
)
def test_malformed_body_is_400_naming_the_body(api, data, ctype):
    response = api.post("/api/v1/jobs", data=data, content_type=ctype)
    assert response.status_code == 400 and response.get_json()["errors"][0]["field"] == "body"


def test_bad_asset_names_the_field(api, app):
    response = api.post("/api/v1/assets", json={"name": "a", "region_id": 0, "max_power_kw": -1})
    assert response.status_code == 422
    assert {e["field"] for e in response.get_json()["errors"]} == {"region_id", "max_power_kw"}
    assert count(app, Asset) == 0


def test_openapi_is_generated_from_the_models(client):  # anonymous
    spec = client.get("/api/v1/openapi.json").get_json()
    assert spec["openapi"].startswith("3.1")
    assert {
        "/api/v1/plan",
        "/api/v1/jobs",
        "/api/v1/jobs/{job_id}",
        "/api/v1/jobs/{job_id}/cancel",
        "/api/v1/assets",
        "/api/v1/assets/{asset_id}",
        "/api/v1/signals",
    } <= set(spec["paths"])
    job_spec = spec["components"]["schemas"]["JobSpec"]
    assert set(job_spec["required"]) == {"name", "duration_minutes", "power_kw"}
    assert job_spec["properties"]["power_kw"]["exclusiveMinimum"] == 0


def test_earliest_start_in_the_past_means_now(api):
    body = api.post("/api/v1/plan", json={**JOB, "earliest_start": "2026-11-01T00:00:00Z"}).get_json()
    assert body["baseline"]["start"] == FROZEN_NOW.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_huge_asset_id_is_422_not_500(api):
    response = api.post("/api/v1/plan", json={**JOB, "regions": None, "asset_id": 83310590144241174210150400})
    assert response.status_code == 422 and response.get_json()["errors"][0]["field"] == "asset_id"


@pytest.mark.parametrize(("query", "field"), [("region=%00q", "region"), ("region=99", "region"), ("q=a%00b", "q")])
def test_bad_list_filters_are_422(api, query, field):
    response = api.get(f"/api/v1/jobs?{query}")
    assert response.status_code == 422 and response.get_json()["errors"][0]["field"] == field
