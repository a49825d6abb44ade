"""The merged signal: replay of recorded data, live fetch into the store, last-known-good when upstream fails."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
import responses

from api_clients import shared_recorded_source
from energy_agent import SignalUnavailable, agile_published_until, merge
from models import GridSlot, PriceSlot
from payloads import LIVE_PRODUCT, PRODUCTS, agile_j_rates, fixture, rate_pages, regional_by_id
from regions import national, parse_region, region_by_id
from storage import get_db
from timeutil import SLOT, UTC, WEEK, london_day_bounds

CI, OCTO = "https://ci.test", "https://octopus.test"
LIVE_NOW = datetime(2023, 3, 15, 12, 0, tzinfo=UTC)


def _signal(app, region, start, hours, now=None):
    with app.app_context():
        agent = app.extensions["energy_agent"]
        return agent.signal(get_db(), region, start, hours, now or app.config["CLOCK"]())


# ---- replay of recorded data --------------------------------------------------------------------


def test_replay_shifts_by_whole_weeks_and_keeps_recorded_start(app, clock):
    signal = _signal(app, national(), clock.now, 48)
    assert len(signal.slots) == 96
    for slot in signal.slots:
        offset = slot.start - slot.recorded_start
        assert offset % WEEK == timedelta(0)  # whole weeks: weekday and UTC time of day kept
        assert slot.start.weekday() == slot.recorded_start.weekday()
        assert slot.start.time() == slot.recorded_start.time()
    assert signal.replay["shift_weeks"] * WEEK == signal.slots[0].start - signal.slots[0].recorded_start
    # nearest the same time of year: late November 2026 plays late November 2023
    assert signal.slots[0].recorded_start.year == 2023 and signal.slots[0].recorded_start.month in (11, 12)


def test_replayed_values_are_the_recorded_ones(app, clock):
    recorded = shared_recorded_source()
    signal = _signal(app, national(), clock.now, 4)
    by_start = {s.start: s for s in recorded.national.items}
    for slot in signal.slots:
        source = by_start[slot.recorded_start]
        assert slot.carbon_g_per_kwh == source.forecast  # future slots show the forecast
        assert slot.carbon_kind == "forecast" and slot.carbon_source == "recorded"


def test_past_slots_show_actuals(app, clock):
    signal = _signal(app, national(), clock.now - timedelta(hours=6), 8)
    kinds = [s.carbon_kind for s in signal.slots]
    assert kinds[:12] == ["actual"] * 12 and set(kinds[12:]) == {"forecast"}


def test_prices_published_then_forecast(app, clock):
    # 09:00 UK: prices are published up to 23:00 UK today; later half-hours are our forecast.
    signal = _signal(app, region_by_id(14), clock.now, 48)
    cutoff = datetime(2026, 11, 27, 23, 0, tzinfo=UTC)
    for slot in signal.slots:
        assert slot.price_source == ("published" if slot.start < cutoff else "forecast"), slot.start
        assert slot.price_p_per_kwh is not None
    assert signal.price.region_letter == "J"


def test_region_without_recorded_prices_says_so(app, clock):
    signal = _signal(app, region_by_id(13), clock.now, 48)  # London: Agile C, not recorded
    assert len(signal.slots) == 96
    assert all(s.price_p_per_kwh is None and s.price_source is None for s in signal.slots)
    assert signal.price.source is None and "no recorded Agile prices for region C" in signal.price.detail


def test_regional_replay_uses_that_regions_recording(app, clock):
    london, scotland = _signal(app, region_by_id(13), clock.now, 6), _signal(app, region_by_id(1), clock.now, 6)
    assert [s.recorded_start for s in london.slots] == [s.recorded_start for s in scotland.slots]
    assert [s.carbon_g_per_kwh for s in london.slots] != [s.carbon_g_per_kwh for s in scotland.slots]
    recorded = shared_recorded_source().regional[13]
    by_start = {s.start: s.forecast for s in recorded.items}
    assert [s.carbon_g_per_kwh for s in london.slots] == [by_start[s.recorded_start] for s in london.slots]


def test_national_signal_labels_borrowed_prices(app, clock):
    signal = _signal(app, national(), clock.now, 2)
    assert signal.price.region_letter == "J" and "no Agile region of its own" in signal.price.detail


@pytest.mark.parametrize(("day", "expected"), [(date(2023, 3, 26), 46), (date(2023, 10, 29), 50)])
def test_clock_change_days_through_recorded_path(app, day, expected):
    start, end = london_day_bounds(day)
    signal = _signal(app, national(), start, (end - start) / timedelta(hours=1), now=end + timedelta(days=1))
    assert len(signal.slots) == expected
    assert signal.slots[0].start == start and signal.slots[-1].end == end
    assert all(s.recorded_start == s.start for s in signal.slots)  # already inside the recording: no shift


def test_horizon_longer_than_regional_recording_is_unavailable(app, clock):
    with app.app_context():
        agent = app.extensions["energy_agent"]
        with pytest.raises(SignalUnavailable, match="too short"):
            agent.signal(get_db(), region_by_id(13), clock.now, 24 * 20, clock.now)


def test_agile_publication_rule():
    before = datetime(2023, 6, 1, 14, 0, tzinfo=UTC)  # 15:00 BST
    after = datetime(2023, 6, 1, 15, 30, tzinfo=UTC)  # 16:30 BST
    assert agile_published_until(before) == datetime(2023, 6, 1, 22, 0, tzinfo=UTC)
    assert agile_published_until(after) == datetime(2023, 6, 2, 22, 0, tzinfo=UTC)


def test_merge_never_forecasts_from_forecasts():
    t0 = datetime(2023, 1, 10, tzinfo=UTC)
    carbon = [GridSlot(start=t0 + i * SLOT, end=t0 + (i + 1) * SLOT, forecast=100) for i in range(48 * 3)]
    history = [
        PriceSlot(
            start=t0 - timedelta(days=1) + i * SLOT, end=t0 - timedelta(days=1) + (i + 1) * SLOT, value_inc_vat=float(i)
        )
        for i in range(48)
    ]
    slots = merge(carbon, {p.start: p.value_inc_vat for p in history}, t0, "recorded")
    day3 = slots[96:]
    # two days on, the only history is still the recorded day before t0
    assert [s.price_p_per_kwh for s in day3] == [float(i) for i in range(48)]
    assert {s.price_source for s in slots} == {"forecast"}


# ---- live data into the store, then last-known-good -----------------------------------------------


def _mock_upstream(now: datetime, regions=(13,)):
    responses.get(
        f"{CI}/intensity/{now:%Y-%m-%dT%H:%MZ}/fw48h", json=fixture("ci_national_fw48h_2023-03-15T1200Z.json")
    )
    responses.get(
        f"{CI}/intensity/{now:%Y-%m-%dT%H:%MZ}/pt24h", json=fixture("ci_national_pt24h_2023-03-15T1200Z.json")
    )
    for region_id in regions:
        responses.get(
            f"{CI}/regional/intensity/{now:%Y-%m-%dT%H:%MZ}/fw48h/regionid/{region_id}", json=regional_by_id(region_id)
        )
    responses.get(f"{OCTO}/v1/products/", json=PRODUCTS)
    cutoff = agile_published_until(now)
    for letter in ("C", "J"):
        path = (
            f"{OCTO}/v1/products/{LIVE_PRODUCT}/electricity-tariffs/E-1R-{LIVE_PRODUCT}-{letter}/standard-unit-rates/"
        )
        # Real J prices serve both letters here: only J is recorded, and this test is about the store.
        responses.get(path, json=rate_pages(agile_j_rates(now - timedelta(days=15), cutoff), path, 5000)[0])


def _refresh(app):
    with app.app_context():
        return app.extensions["energy_agent"].refresh(get_db(), app.config["CLOCK"]())


@pytest.fixture
def live(live_app, clock):
    clock.now = LIVE_NOW
    live_app.extensions["energy_agent"].refresh_regions = (13,)
    return live_app


@responses.activate
def test_live_refresh_fills_store_and_serves_live(live, clock):
    _mock_upstream(clock.now)
    outcome = _refresh(live)
    assert all(text.startswith("ok") for text in outcome.values()), outcome
    signal = _signal(live, national(), clock.now, 48)
    assert len(signal.slots) == 96
    assert signal.carbon.source == "live" and not signal.carbon.stale
    assert signal.slots[0].carbon_g_per_kwh == 226 and signal.slots[0].carbon_kind == "forecast"
    published = [s for s in signal.slots if s.price_source == "published"]
    assert published and published[-1].end == agile_published_until(clock.now)
    assert all(s.price_source == "forecast" for s in signal.slots[len(published) :])


@responses.activate
def test_upstream_failure_serves_last_known_good_marked_stale(live, clock):
    _mock_upstream(clock.now)
    _refresh(live)
    first = _signal(live, national(), clock.now, 24)
    responses.reset()
    clock.now = LIVE_NOW + timedelta(hours=2)
    responses.get(f"{CI}/intensity/{clock.now:%Y-%m-%dT%H:%MZ}/fw48h", json={})  # 200 with {}: seen in the wild
    responses.get(f"{CI}/intensity/{clock.now:%Y-%m-%dT%H:%MZ}/pt24h", json={})
    responses.get(f"{CI}/regional/intensity/{clock.now:%Y-%m-%dT%H:%MZ}/fw48h/regionid/13", body="")
    responses.get(f"{OCTO}/v1/products/", status=500)
    outcome = _refresh(live)
    assert not any(text.startswith("ok") for text in outcome.values())
    later = _signal(live, national(), clock.now, 20)
    assert later.carbon.source == "stored" and later.carbon.stale
    assert "last refresh failed" in later.carbon.detail
    by_start = {s.start: s.carbon_g_per_kwh for s in first.slots}
    assert all(by_start[s.start] == s.carbon_g_per_kwh for s in later.slots)
    client = live.test_client()
    health = client.get("/health").get_json()
    assert health["status"] == "degraded"
    assert health["signals"]["carbon"] == {**health["signals"]["carbon"], "source": "stored", "stale": True}
    api = client.get("/api/v1/signals?region=national&hours=12")
    assert api.status_code == 200 and api.get_json()["carbon"]["stale"] is True
    page = client.get("/")
    assert page.status_code == 200 and b"Stale data" in page.data


@responses.activate
def test_unreachable_upstream_falls_back_to_recorded(live, clock):
    # No mocks registered: every call is refused, as on a machine without internet.
    outcome = _refresh(live)
    assert any("skipped, upstream unreachable" in text for text in outcome.values())
    signal = _signal(live, national(), clock.now, 48)
    assert signal.carbon.source == "recorded" and "live data unavailable" in signal.carbon.detail
    health = live.test_client().get("/health").get_json()
    assert health["status"] == "degraded" and health["signals"]["carbon"]["source"] == "recorded"


@responses.activate
def test_postcode_is_resolved_by_refresher(live, clock):
    client = live.test_client()
    pending = client.get("/api/v1/signals?region=RG1&hours=4")
    assert pending.status_code == 503 and pending.get_json()["errors"][0]["field"] == "region"
    _mock_upstream(clock.now)
    body = regional_by_id(14, "2023-03-15T1701Z")
    body["data"]["postcode"] = "RG1"
    responses.get(f"{CI}/regional/intensity/{clock.now:%Y-%m-%dT%H:%MZ}/fw48h/postcode/RG1", json=body)
    _refresh(live)
    clock.now = datetime(2023, 3, 15, 17, 0, tzinfo=UTC)  # where the recorded regional forecast starts
    resolved = client.get("/api/v1/signals?region=rg1&hours=4")
    assert resolved.status_code == 200, resolved.get_json()
    data = resolved.get_json()
    assert data["region"]["region_id"] == 14 and data["region"]["postcode"] == "RG1"
    assert data["carbon"]["source"] == "stored"  # fetched 5 h ago: older than the 90 min freshness limit


def test_live_mode_without_data_is_unavailable(tmp_path, clock):
    from conftest import _make_app

    app = _make_app(tmp_path, f"sqlite:///{tmp_path / 'x.sqlite3'}", clock, GRID_SOURCE="live")
    with app.app_context(), pytest.raises(SignalUnavailable, match="no live data"):
        app.extensions["energy_agent"].signal(get_db(), parse_region("national"), clock.now, 4, clock.now)
    assert app.test_client().get("/api/v1/signals").status_code == 503
    app.extensions["engine"].dispose()
