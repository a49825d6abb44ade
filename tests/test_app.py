"""Routes, pages and CLI on the embedded defaults (SQLite + replayed recorded data)."""

from __future__ import annotations

import json

import pytest


def test_health_says_recorded(client):
    body = client.get("/health").get_json()
    assert body["status"] == "ok" and body["mode"] == "recorded"
    assert body["signals"]["carbon"]["source"] == "recorded"
    assert body["signals"]["price"]["source"] == "recorded"


def test_signals_region_13_returns_96_slots(client):
    response = client.get("/api/v1/signals?region=13&hours=48")
    assert response.status_code == 200
    body = response.get_json()
    assert len(body["slots"]) == 96
    assert body["region"]["region_id"] == 13 and body["region"]["octopus_letter"] == "C"
    first = body["slots"][0]
    assert first["start"].endswith("Z") and first["recorded_start"].endswith("Z")
    assert first["carbon_kind"] == "forecast" and first["carbon_source"] == "recorded"
    assert set(first["generation_mix"]) >= {"wind", "gas", "nuclear"}
    assert body["replay"]["shift_weeks"] > 0


def test_signals_by_uk_day_on_clock_change(client):
    autumn = client.get("/api/v1/signals?region=national&day=2023-10-29").get_json()
    spring = client.get("/api/v1/signals?region=14&day=2023-03-26").get_json()
    assert len(autumn["slots"]) == 50 and len(spring["slots"]) == 46
    assert autumn["slots"][0]["start"] == "2023-10-28T23:00:00Z"
    assert (
        spring["slots"][0]["start"] == "2023-03-26T00:00:00Z" and spring["slots"][-1]["end"] == "2023-03-26T23:00:00Z"
    )
    assert all(s["price_p_per_kwh"] is not None for s in spring["slots"])


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("region=99", "region"),
        ("region=0", "region"),
        ("region=!!", "region"),
        ("region=13&hours=0", "hours"),
        ("region=13&hours=1000", "hours"),
        ("region=13&hours=abc", "hours"),
        ("region=13&start=yesterday", "start"),
        ("region=13&day=2023-13-01", "day"),
        ("region=13&day=2023-03-26&hours=4", "day"),
    ],
)
def test_bad_parameters_are_400_naming_the_field(client, query, field):
    response = client.get(f"/api/v1/signals?{query}")
    assert response.status_code == 400
    assert response.get_json()["errors"][0]["field"] == field


def test_postcode_needs_live_api_in_recorded_mode(client):
    response = client.get("/api/v1/signals?region=RG1")
    assert response.status_code == 422
    assert response.get_json()["errors"][0]["field"] == "region"


def test_unknown_api_route_is_json_404(client):
    response = client.get("/api/v1/nothing")
    assert response.status_code == 404 and response.get_json()["status"] == 404


def test_wrong_method_is_405(client):
    assert client.post("/api/v1/signals").status_code == 405


def test_index_page_has_chart_banner_and_best_slots(client):
    page = client.get("/?region=14")
    html = page.data.decode()
    assert page.status_code == 200
    assert "<svg" in html and 'class="carbon"' in html and 'class="price' in html
    assert "Replay of recorded real data" in html and "shifted" in html
    assert 'id="greenest"' in html and 'id="cheapest"' in html
    assert "CC BY 4.0" in html


def test_index_page_bad_region_shows_error(client):
    page = client.get("/?region=99")
    assert page.status_code == 422 and b"unknown region id 99" in page.data


def test_index_page_escapes_region_text(client):
    page = client.get("/?region=<script>alert(1)</script>")
    assert b"<script>alert(1)</script>" not in page.data
    assert b"&lt;script&gt;" in page.data


def test_every_page_says_where_data_comes_from(client):
    for region in ("national", "1", "13", "14", "17"):
        assert b"Replay of recorded real data" in client.get(f"/?region={region}").data


def test_cli_signals_show_table_and_json(runner):
    table = runner.invoke(args=["signals", "show", "--region", "13", "--hours", "2"])
    assert table.exit_code == 0, table.output
    assert "London" in table.output and len(table.output.strip().splitlines()) == 3 + 4
    as_json = runner.invoke(args=["signals", "show", "--region", "14", "--hours", "1", "--json"])
    assert len(json.loads(as_json.output)["slots"]) == 2


def test_cli_signals_show_rejects_bad_region(runner):
    result = runner.invoke(args=["signals", "show", "--region", "99"])
    assert result.exit_code != 0 and "unknown region id 99" in result.output


def test_cli_signals_fetch_in_recorded_mode_is_a_no_op(runner):
    result = runner.invoke(args=["signals", "fetch"])
    assert result.exit_code == 0 and "GRID_SOURCE=recorded" in result.output


@pytest.mark.parametrize("query", ["region=%C2%B30", "region=13&hours=%C2%B3", "region=%D9%A1%D9%A3"])
def test_non_ascii_digits_are_400_not_500(client, query):
    response = client.get(f"/api/v1/signals?{query}")
    assert response.status_code == 400 and response.get_json()["errors"][0]["field"] in ("region", "hours")
