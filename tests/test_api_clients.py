"""Upstream clients against the real recorded payloads, and every failure mode as one UpstreamError."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

import pytest
import requests
import responses
from responses import matchers

from api_clients import CarbonIntensityClient, OctopusAgileClient, UpstreamError, build_session
from payloads import (
    LIVE_PRODUCT,
    PRODUCTS,
    agile_j_rates,
    fixture,
    national_rows,
    rate_pages,
    regional_by_id,
)
from regions import REGION_NAMES
from timeutil import UTC, london_day_bounds

BASE = "https://ci.test"
OCTO = "https://octopus.test"
T0 = datetime(2023, 3, 15, 12, 0, tzinfo=UTC)


@pytest.fixture
def ci():
    return CarbonIntensityClient(build_session(backoff=0), BASE, timeout=(1, 2))


@pytest.fixture
def octopus():
    return OctopusAgileClient(build_session(backoff=0), OCTO, timeout=(1, 2))


@responses.activate
def test_national_forecast_parses_recorded_fw48h(ci):
    responses.get(f"{BASE}/intensity/2023-03-15T12:00Z/fw48h", json=fixture("ci_national_fw48h_2023-03-15T1200Z.json"))
    slots = ci.national_forecast(T0)
    assert len(slots) == 96
    assert slots[0].start == T0 and slots[-1].end == T0 + timedelta(hours=48)
    assert slots[0].forecast == 226 and slots[0].index == "high" and slots[0].actual is None
    assert all(b.start == a.end for a, b in itertools.pairwise(slots))


@responses.activate
def test_national_past24h_keeps_actuals_and_null_last(ci):
    responses.get(f"{BASE}/intensity/2023-03-15T12:00Z/pt24h", json=fixture("ci_national_pt24h_2023-03-15T1200Z.json"))
    slots = ci.national_past24h(T0)
    assert len(slots) == 48
    assert all(s.actual is not None for s in slots[:-1]) and slots[-1].actual is None


@responses.activate
def test_history_on_clock_change_days_has_46_and_50_half_hours(ci):
    for day, expected in (("2023-03-26", 46), ("2023-10-29", 50)):
        start, end = london_day_bounds(datetime.fromisoformat(day).date())
        responses.get(
            f"{BASE}/intensity/{start:%Y-%m-%dT%H:%MZ}/{end:%Y-%m-%dT%H:%MZ}", json={"data": national_rows(start, end)}
        )
        slots = ci.national_history(start, end)
        assert len(slots) == expected, day
        assert slots[0].start == start and slots[-1].end == end


@responses.activate
def test_regional_by_id_parses_generation_mix(ci):
    responses.get(f"{BASE}/regional/intensity/2023-03-15T12:00Z/fw48h/regionid/13", json=regional_by_id(13))
    slots = ci.regional_forecast(13, T0)
    assert len(slots) == 96
    assert set(slots[0].generation_mix) == {
        "biomass",
        "coal",
        "imports",
        "gas",
        "nuclear",
        "other",
        "hydro",
        "solar",
        "wind",
    }
    assert abs(sum(slots[0].generation_mix.values()) - 100) < 0.7


@responses.activate
def test_postcode_returns_its_region(ci):
    body = regional_by_id(14)
    body["data"]["postcode"] = "RG1"
    responses.get(f"{BASE}/regional/intensity/2023-03-15T12:00Z/fw48h/postcode/RG1", json=body)
    region_id, slots = ci.postcode_forecast("RG1", T0)
    assert region_id == 14 and len(slots) == 96


@responses.activate
def test_regional_now_reads_all_regions(ci):
    responses.get(f"{BASE}/regional", json=fixture("ci_regional_2023-03-09T2330Z.json"))
    now = ci.regional_now()
    assert sorted(now) == list(range(1, 19))
    assert now[1].forecast == 135 and now[1].generation_mix["wind"] == 62.2


def test_region_names_match_the_recorded_payload():
    recorded = {
        r["regionid"]: r["shortname"] for r in fixture("ci_regional_2023-03-09T2330Z.json")["data"][0]["regions"]
    }
    for region_id, name in REGION_NAMES.items():
        assert recorded[region_id].replace(" and ", " & ").startswith(name.split(" &")[0]), region_id


# ---- failures seen in the wild ------------------------------------------------------------------


@responses.activate
def test_http_200_with_empty_object_is_upstream_error(ci):
    responses.get(f"{BASE}/intensity/2023-03-15T12:00Z/fw48h", json={})
    with pytest.raises(UpstreamError) as info:
        ci.national_forecast(T0)
    assert info.value.kind == "shape"


@responses.activate
def test_forecast_cut_off_at_end_of_day_is_upstream_error(ci):
    body = fixture("ci_national_fw48h_2023-03-15T1200Z.json")
    body["data"] = [item for item in body["data"] if item["from"].startswith("2023-03-15")]
    responses.get(f"{BASE}/intensity/2023-03-15T12:00Z/fw48h", json=body)
    with pytest.raises(UpstreamError, match=r"covers 12\.0 h"):
        ci.national_forecast(T0)


@responses.activate
def test_unknown_postcode_with_empty_body_is_upstream_error(ci):
    responses.get(f"{BASE}/regional/intensity/2023-03-15T12:00Z/fw48h/postcode/ZZ9", body="")
    with pytest.raises(UpstreamError, match="empty body"):
        ci.postcode_forecast("ZZ9", T0)


@responses.activate
def test_invalid_json_is_upstream_error(ci):
    responses.get(f"{BASE}/intensity/2023-03-15T12:00Z/fw48h", body="<html>gateway</html>")
    with pytest.raises(UpstreamError) as info:
        ci.national_forecast(T0)
    assert info.value.kind == "json"


@responses.activate
def test_non_2xx_is_upstream_error_after_retries(ci):
    url = f"{BASE}/intensity/2023-03-15T12:00Z/fw48h"
    responses.get(url, status=503)
    with pytest.raises(UpstreamError) as info:
        ci.national_forecast(T0)
    assert info.value.status == 503
    assert len(responses.calls) == 4  # the first try and 3 retries


@responses.activate
def test_retry_recovers_from_a_502(ci):
    url = f"{BASE}/intensity/2023-03-15T12:00Z/fw48h"
    responses.get(url, status=502)
    responses.get(url, json=fixture("ci_national_fw48h_2023-03-15T1200Z.json"))
    assert len(ci.national_forecast(T0)) == 96


@responses.activate
def test_429_is_retried_and_retry_after_respected(ci):
    url = f"{BASE}/intensity/2023-03-15T12:00Z/fw48h"
    responses.get(url, status=429, headers={"Retry-After": "2"})
    responses.get(url, json=fixture("ci_national_fw48h_2023-03-15T1200Z.json"))
    assert len(ci.national_forecast(T0)) == 96
    assert len(responses.calls) == 2
    # `responses` replays the retry without sleeping; the urllib3 policy is what sleeps in production.
    retry = ci.session.get_adapter(url).max_retries
    assert retry.respect_retry_after_header and 429 in retry.status_forcelist
    assert retry.get_retry_after(responses.calls[0].response) == 2
    assert "POST" not in retry.allowed_methods


@responses.activate
def test_transport_error_is_upstream_error(ci):
    responses.get(f"{BASE}/intensity/2023-03-15T12:00Z/fw48h", body=requests.ConnectionError("no route"))
    with pytest.raises(UpstreamError) as info:
        ci.national_forecast(T0)
    assert info.value.kind == "transport"


@responses.activate
def test_wrong_slot_shape_is_upstream_error(ci):
    body = fixture("ci_national_fw48h_2023-03-15T1200Z.json")
    del body["data"][3]["intensity"]
    responses.get(f"{BASE}/intensity/2023-03-15T12:00Z/fw48h", json=body)
    with pytest.raises(UpstreamError, match="unexpected slot shape"):
        ci.national_forecast(T0)


def test_every_call_has_a_timeout():
    session = build_session()
    seen = {}

    def fake_get(url, params=None, timeout=None):
        seen["timeout"] = timeout
        raise requests.ConnectTimeout("simulated")

    session.get = fake_get
    with pytest.raises(UpstreamError):
        CarbonIntensityClient(session, BASE, timeout=(2, 5)).national_forecast(T0)
    assert seen["timeout"] == (2, 5)


# ---- Octopus Agile ----------------------------------------------------------------------------


@responses.activate
def test_discovers_live_agile_import_product_not_outgoing(octopus):
    responses.get(f"{OCTO}/v1/products/", json=PRODUCTS)
    assert octopus.current_agile_product(T0) == LIVE_PRODUCT


@responses.activate
def test_no_agile_product_is_upstream_error(octopus):
    body = {**PRODUCTS, "results": [p for p in PRODUCTS["results"] if "FLEX" not in p["code"]]}
    responses.get(f"{OCTO}/v1/products/", json=body)
    with pytest.raises(UpstreamError, match="no live AGILE"):
        octopus.current_agile_product(T0)


@responses.activate
def test_unit_rates_follow_pagination_and_sort_ascending(octopus):
    start, end = T0 - timedelta(days=2), T0 + timedelta(hours=11)
    items = agile_j_rates(start, end)
    path = f"{OCTO}/v1/products/{LIVE_PRODUCT}/electricity-tariffs/E-1R-{LIVE_PRODUCT}-J/standard-unit-rates/"
    pages = rate_pages(items, path, page_size=40)
    responses.get(
        path,
        json=pages[0],
        match=[
            matchers.query_param_matcher(
                {"period_from": "2023-03-13T12:00Z", "period_to": "2023-03-15T23:00Z", "page_size": "1500"}
            )
        ],
    )
    for number, page in enumerate(pages[1:], start=2):
        responses.get(path, json=page, match=[matchers.query_param_matcher({"page": str(number)})])
    rates = octopus.unit_rates(LIVE_PRODUCT, "J", start, end)
    assert len(pages) > 2
    assert len(rates) == len(items) == (end - start) / timedelta(minutes=30)
    assert [r.start for r in rates] == sorted(r.start for r in rates)
    assert rates[0].start == start
    assert rates[0].value_exc_vat == pytest.approx(rates[0].value_inc_vat / 1.05, abs=1e-3)


@responses.activate
def test_rate_with_missing_field_is_upstream_error(octopus):
    path = f"{OCTO}/v1/products/{LIVE_PRODUCT}/electricity-tariffs/E-1R-{LIVE_PRODUCT}-J/standard-unit-rates/"
    items = agile_j_rates(T0, T0 + timedelta(hours=2))
    del items[1]["value_inc_vat"]
    responses.get(path, json={"count": 4, "next": None, "previous": None, "results": items})
    with pytest.raises(UpstreamError, match="unexpected rate shape"):
        octopus.unit_rates(LIVE_PRODUCT, "J", T0, T0 + timedelta(hours=2))
