"""Pages for submitting, listing and viewing jobs, with CSRF protection on (the token is fetched like a browser)."""

from __future__ import annotations

import json

from conftest import csrf_token
from storage import Asset, Job
from test_api_jobs import JOB, count, decisions

FORM = {
    "name": "nightly-train",
    "duration_minutes": "90",
    "power_kw": "25",
    "regions": ["14", "13"],
    "earliest_start": "2026-11-27T10:00",
    "deadline": "2026-11-28T10:00",
    "objective": "carbon",
    "inference_count": "20000",
}


def test_form_has_sensible_defaults(operator):
    html = operator.get("/jobs/new").data.decode()
    assert 'value="180"' in html and 'value="10"' in html
    assert 'value="2026-11-27T09:30"' in html and 'value="2026-11-28T09:30"' in html  # UK time, next half-hour


def test_submit_without_csrf_token_is_rejected(operator, app):
    response = operator.post("/jobs/new", data=FORM)
    assert response.status_code == 400 and b"CSRF" in response.data
    assert count(app, Job) == 0


def test_submit_form_redirects_to_the_job_page(operator, app):
    response = operator.post("/jobs/new", data={**FORM, "csrf_token": csrf_token(operator, "/jobs/new")})
    assert response.status_code == 303
    page = operator.get(response.headers["Location"])
    html = page.data.decode()
    assert page.status_code == 200 and "nightly-train" in html
    assert 'class="window"' in html and "<svg" in html  # the planned window on the chart
    assert "Run now (baseline, region 14)" in html and "Saved per inference" in html
    assert 'id="runners-up"' in html and "Binding constraint" in html
    assert decisions(app)[0]["kind"] == "plan"


def test_form_errors_appear_beside_the_fields(operator, app):
    bad = {
        **FORM,
        "name": "",
        "duration_minutes": "0",
        "power_kw": "-1",
        "deadline": "not a time",
        "csrf_token": csrf_token(operator, "/jobs/new"),
    }
    response = operator.post("/jobs/new", data=bad)
    html = response.data.decode()
    assert response.status_code == 422
    assert 'id="deadline-error"' in html
    bad["deadline"] = FORM["deadline"]
    html = operator.post("/jobs/new", data=bad).data.decode()
    for field in ("name", "duration_minutes", "power_kw"):
        assert f'id="{field}-error"' in html
    assert count(app, Job) == 0


def test_infeasible_job_gets_offers_on_its_page_and_one_can_be_accepted(operator, app):
    tight = {**FORM, "deadline": "2026-11-27T10:30", "csrf_token": csrf_token(operator, "/jobs/new")}
    response = operator.post("/jobs/new", data=tight)
    assert response.status_code == 303
    page = operator.get(response.headers["Location"]).data.decode()
    assert "cannot be placed as asked" in page and 'id="offers"' in page and "later deadline" in page
    offer_id = page.split('name="offer_id" value="')[1].split('"')[0]
    path = response.headers["Location"]
    accepted = operator.post(f"{path}/accept", data={"offer_id": offer_id, "csrf_token": csrf_token(operator, path)})
    assert accepted.status_code == 303
    page = operator.get(path).data.decode()
    assert "status-scheduled" in page and 'class="window"' in page
    assert [d["kind"] for d in decisions(app)] == ["negotiation", "accept"]


def test_job_name_is_escaped(operator, api):
    response = api.post("/api/v1/jobs", json={**JOB, "name": "<script>alert(1)</script>"})
    page = operator.get(f"/jobs/{response.get_json()['id']}").data.decode()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>" not in operator.get("/jobs").data.decode()


def test_jobs_list_filters_and_links(operator, api):
    api.post("/api/v1/jobs", json={**JOB, "name": "alpha"})
    api.post("/api/v1/jobs", json={**JOB, "name": "beta", "regions": ["13"]})
    html = operator.get("/jobs?region=13").data.decode()
    assert "beta" in html and "alpha" not in html
    assert "alpha" in operator.get("/jobs?q=alp").data.decode()
    assert operator.get("/jobs?status=nope").status_code == 422


def test_cancel_from_the_job_page(operator, api, app):
    job = api.post("/api/v1/jobs", json=JOB).get_json()
    path = f"/jobs/{job['id']}"
    response = operator.post(f"{path}/cancel", data={"csrf_token": csrf_token(operator, path)})
    assert response.status_code == 303
    assert "status-cancelled" in operator.get(path).data.decode()
    assert operator.post(f"{path}/cancel").status_code == 400  # no token


def test_unknown_job_page_is_404(operator):
    assert operator.get("/jobs/404").status_code == 404


def test_register_asset_through_the_form(operator, app):
    token = csrf_token(operator, "/assets")
    bad = operator.post("/assets", data={"name": "", "region_id": "14", "max_power_kw": "-1", "csrf_token": token})
    assert bad.status_code == 422 and 'id="max_power_kw-error"' in bad.data.decode()
    ok = operator.post(
        "/assets", data={"name": "rack", "region_id": "14", "max_power_kw": "80", "pue": "1.3", "csrf_token": token}
    )
    assert ok.status_code == 303 and count(app, Asset) == 1
    assert "rack" in operator.get("/jobs/new").data.decode()


def test_docs_page_renders_the_openapi(operator):
    html = operator.get("/docs").data.decode()
    assert "POST /api/v1/jobs" in html and "JobSpec" in html


def test_cli_plan_prints_the_best_window(runner):
    result = runner.invoke(args=["plan", "--duration", "3h", "--power-kw", "40", "--region", "13", "--within", "24h"])
    assert result.exit_code == 0, result.output
    assert "Best job start time:" in result.output and "(region 13)" in result.output
    assert "Carbon intensity if job started now" in result.output
    as_json = runner.invoke(
        args=["plan", "--duration", "90m", "--power-kw", "5", "--region", "14", "--objective", "cost", "--json"]
    )
    body = json.loads(as_json.output)
    assert body["explanation"]["objective"] == "cost" and body["plan"]["cost_gbp"] is not None


def test_cli_plan_reports_infeasible_and_bad_input(runner):
    tight = runner.invoke(args=["plan", "--duration", "5h", "--power-kw", "1", "--within", "2h"])
    assert tight.exit_code != 0 and "deadline" in tight.output
    bad = runner.invoke(args=["plan", "--duration", "3x", "--power-kw", "1"])
    assert bad.exit_code != 0 and "not a duration" in bad.output


def test_every_page_says_where_the_grid_data_comes_from(operator, api):
    job = api.post("/api/v1/jobs", json=JOB).get_json()
    for path in ("/", "/jobs", "/jobs/new", f"/jobs/{job['id']}", "/assets", "/decisions", "/docs"):
        assert "Replay of recorded real data" in operator.get(path).data.decode(), path
