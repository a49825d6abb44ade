"""Decisions through the app: the API, the pages, `audit verify` with the database checkpoint, /health."""

from __future__ import annotations

from pathlib import Path

from test_api_jobs import JOB, decisions


def _submit(client, **changes):
    return client.post("/api/v1/jobs", json={**JOB, **changes}).get_json()


def test_decisions_api_filters_and_limits(api):
    first = _submit(api, name="a")
    second = _submit(api, name="b")
    api.post(f"/api/v1/jobs/{first['id']}/cancel")
    body = api.get("/api/v1/decisions").get_json()["decisions"]
    assert [(d["kind"], d["job_id"]) for d in body] == [
        ("cancel", first["id"]),
        ("plan", second["id"]),
        ("plan", first["id"]),
    ]
    assert [d["kind"] for d in api.get(f"/api/v1/decisions?job_id={first['id']}").get_json()["decisions"]] == [
        "cancel",
        "plan",
    ]
    assert len(api.get("/api/v1/decisions?kind=plan&limit=1").get_json()["decisions"]) == 1
    for query, field in (("limit=0", "limit"), ("limit=5000", "limit"), ("job_id=x", "job_id"), ("kind=a;b", "kind")):
        response = api.get(f"/api/v1/decisions?{query}")
        assert response.status_code == 400 and response.get_json()["errors"][0]["field"] == field


def test_plan_record_holds_inputs_candidates_choice_and_reason(api, app):
    job = _submit(api, inference_count=100)
    [record] = decisions(app)
    assert record["inputs"]["job"]["name"] == JOB["name"]
    assert record["inputs"]["signal"]["14"]["horizon"]["slots"] > 0
    assert record["inputs"]["slots_used"]["carbon"] == {"forecast": 6}
    assert len(record["candidates"]) == 3 and record["choice"] == job["placement"]
    assert record["baseline"] == job["baseline"] and record["savings"] == job["savings"]
    assert record["binding_constraint"] and record["reason"].startswith("lowest total carbon")
    assert record["version"] and record["seq"] == 1 and len(record["hash"]) == 64


def test_job_name_cannot_forge_a_record(api, app):
    _submit(api, name='evil\n{"kind":"fake"}')
    raw = Path(app.config["AUDIT_LOG_PATH"]).read_text()
    assert raw.count("\n") == 1
    assert [d["kind"] for d in decisions(app)] == ["plan"]


def test_decision_pages(api, operator):
    job = _submit(api, name="<b>bold</b>")
    listing = operator.get(f"/decisions?job_id={job['id']}").data.decode()
    assert "lowest total carbon" in listing and "<b>bold</b>" not in listing
    record = api.get("/api/v1/decisions").get_json()["decisions"][0]
    page = operator.get(f"/decisions/{record['id']}").data.decode()
    assert 'id="alternatives"' in page and "more carbon score than the choice" in page
    assert "<b>bold</b>" not in page and "\\u003cb\\u003ebold" in page  # tojson escapes markup
    assert operator.get("/decisions/not-an-id").status_code == 404
    assert operator.get("/decisions?limit=0").status_code == 400
    assert f'href="/decisions?job_id={job["id"]}"' in operator.get(f"/jobs/{job['id']}").data.decode()


def test_audit_verify_cli(api, app, runner):
    for name in ("a", "b", "c"):
        _submit(api, name=name)
    ok = runner.invoke(args=["audit", "verify"])
    assert ok.exit_code == 0 and "3 good records" in ok.output and "chain intact" in ok.output
    path = Path(app.config["AUDIT_LOG_PATH"])
    original = path.read_bytes()
    path.write_bytes(original.replace(b'"name":"b"', b'"name":"B"'))
    broken = runner.invoke(args=["audit", "verify"])
    assert broken.exit_code == 1 and "first bad line: 2" in broken.output
    path.write_bytes(b"".join(original.splitlines(keepends=True)[:2]))  # the tail cut off
    truncated = runner.invoke(args=["audit", "verify"])
    assert truncated.exit_code == 1 and "truncated" in truncated.output
    other = path.with_name("copy.jsonl")
    other.write_bytes(b"".join(original.splitlines(keepends=True)[:2]))
    assert runner.invoke(args=["audit", "verify", "--path", str(other)]).exit_code == 0


def test_health_reports_torn_lines(tmp_path, clock):
    from conftest import _make_app

    log = tmp_path / "decisions.jsonl"
    log.write_bytes(b'{"seq":1,"trunc')
    app = _make_app(tmp_path, f"sqlite:///{tmp_path / 'h.sqlite3'}", clock)
    body = app.test_client().get("/health").get_json()
    assert body["audit"]["torn_lines"] == 1 and body["audit"]["torn_path"].endswith(".torn")
    assert log.read_bytes() == b""
    app.extensions["engine"].dispose()
