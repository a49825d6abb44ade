"""The merged half-hourly grid signal per region: carbon + published price + price forecast, with provenance.

Requests only ever read: the store (live data fetched in the background, kept as last-known-good) or the
recorded data shipped in the repo. `refresh()` is the only code that calls upstream APIs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from functools import lru_cache

from sqlalchemy import func, select
from sqlalchemy.orm import Session

import price_forecast
from api_clients import CarbonIntensityClient, NoRecording, OctopusAgileClient, RecordedSource, UpstreamError
from models import FeedInfo, GridSlot, Signal, SignalSlot
from regions import NATIONAL, Region, RegionError, letter_region_id, region_by_id
from storage import FeedStatus, PostcodeRegion, StoredCarbonSlot, StoredPriceSlot
from timeutil import LONDON, SLOT, floor_slot

log = logging.getLogger(__name__)

MODES = ("live", "recorded", "auto")
PRICE_HISTORY = timedelta(days=15)  # what the price forecast looks back over (see price_forecast.LOOKBACK_DAYS)
PUBLISH_HOUR_UK = 16  # Agile next-day prices appear about 16:00 UK and run to 23:00 UK the next day


class SignalUnavailable(LookupError):
    """No data at all for this request (live mode before the first successful fetch, or nothing recorded)."""


class PostcodePending(LookupError):
    """The postcode has not been resolved to a region yet (it needs the live API)."""


@dataclass
class EnergyAgent:
    """Builds signals from the store or the recording, and refreshes the store from the live APIs."""

    mode: str = "auto"
    stale_after: timedelta = timedelta(minutes=90)
    national_price_letter: str = "J"
    refresh_regions: tuple[int, ...] = tuple(range(1, 18))
    recorded: RecordedSource = field(default_factory=RecordedSource)
    carbon_client: CarbonIntensityClient | None = None
    price_client: OctopusAgileClient | None = None

    def __post_init__(self):
        # Replayed signals depend only on their inputs and the half-hour `now` is in: cache them.
        self._recorded_cached = lru_cache(maxsize=512)(self._recorded_signal_uncached)
        if self.mode not in MODES:
            raise ValueError(f"GRID_SOURCE must be one of {', '.join(MODES)}, not {self.mode!r}")
        letter_region_id(self.national_price_letter)  # fail fast on a bad letter

    # ---- reading ---------------------------------------------------------------------------------

    def signal(self, db: Session, region: Region, start: datetime, hours: float, now: datetime) -> Signal:
        """The merged signal for `region` over `hours` from the slot containing `start`."""
        region = self.resolve(db, region, now)
        start = floor_slot(start)
        end = start + timedelta(hours=hours)
        if self.mode != "recorded":
            stored = self._stored_signal(db, region, start, end, now)
            if stored is not None:
                return stored
            if self.mode == "live":
                raise SignalUnavailable(f"no live data for {region.name} yet: {self._last_error(db, region)}")
        return self._recorded_signal(region, start, end, now)

    def resolve(self, db: Session, region: Region, now: datetime) -> Region:
        """A postcode region with its region id filled in from the store, or PostcodePending/RegionError."""
        if region.postcode is None:
            return region
        if self.mode == "recorded":
            raise RegionError(f"postcode {region.postcode} can only be resolved by the live Carbon Intensity API")
        row = db.get(PostcodeRegion, region.postcode)
        if row is None:
            db.add(PostcodeRegion(outcode=region.postcode, region_id=None, requested_at=now))
            db.commit()
        elif row.region_id is not None:
            resolved = region_by_id(row.region_id)
            return Region(resolved.key, resolved.region_id, f"{resolved.name} ({region.postcode})", region.postcode)
        raise PostcodePending(f"postcode {region.postcode} is queued for lookup by the background refresher")

    def price_letter(self, region: Region) -> str:
        """The Agile letter whose prices apply: the region's own, else the configured national reference."""
        return region.octopus_letter or self.national_price_letter

    def health(self, db: Session, now: datetime) -> dict:
        """Where the national signal's numbers come from now, and whether they are stale."""
        carbon = self._feed_health(db, "carbon:national", now)
        price = self._feed_health(db, f"price:{self.national_price_letter}", now)
        ok = carbon["source"] == price["source"] == "live" or self.mode == "recorded"
        return {"status": "ok" if ok else "degraded", "mode": self.mode, "signals": {"carbon": carbon, "price": price}}

    def data_version(self, db: Session) -> datetime | None:
        """When any feed last fetched new data (the scheduler re-plans when this changes)."""
        return db.scalar(select(func.max(FeedStatus.last_success_at)))

    def _feed_health(self, db: Session, feed: str, now: datetime) -> dict:
        status = db.get(FeedStatus, feed) if self.mode != "recorded" else None
        if status is None or status.last_success_at is None:
            source = None if self.mode == "live" else "recorded"
            return {
                "source": source,
                "fetched_at": None,
                "stale": self.mode == "live",
                "last_error": status.last_error if status else None,
            }
        stale = now - status.last_success_at > self.stale_after
        return {
            "source": "stored" if stale else "live",
            "fetched_at": status.last_success_at,
            "stale": stale,
            "last_error": status.last_error,
        }

    def _stored_signal(self, db: Session, region: Region, start: datetime, end: datetime, now: datetime):
        key = NATIONAL if region.region_id is None else str(region.region_id)
        rows = db.scalars(
            select(StoredCarbonSlot)
            .where(StoredCarbonSlot.region_key == key, StoredCarbonSlot.start >= start, StoredCarbonSlot.start < end)
            .order_by(StoredCarbonSlot.start)
        ).all()
        if not rows or rows[0].start != start:
            return None
        carbon = [
            GridSlot(
                start=r.start,
                end=r.end,
                forecast=r.forecast,
                actual=r.actual,
                index=r.index,
                generation_mix=r.generation_mix,
            )
            for r in rows
        ]
        carbon_info = self._stored_feed_info(db, f"carbon:{key}", now, len(carbon), start, end)
        letter = self.price_letter(region)
        prices = db.scalars(
            select(StoredPriceSlot).where(
                StoredPriceSlot.letter == letter,
                StoredPriceSlot.start >= start - PRICE_HISTORY,
                StoredPriceSlot.start < end,
            )
        ).all()
        published = {p.start: p.value_inc_vat for p in prices}
        price_info = self._stored_feed_info(db, f"price:{letter}", now, None, start, end)
        price_info = price_info.model_copy(
            update={"region_letter": letter, "detail": _price_detail(region, letter) + price_info.detail}
        )
        slots = merge(carbon, published, now, "stored" if carbon_info.stale else "live")
        return Signal(region=region.as_dict(), start=start, end=end, slots=slots, carbon=carbon_info, price=price_info)

    def _stored_feed_info(self, db, feed, now, count, start, end) -> FeedInfo:
        status = db.get(FeedStatus, feed)
        fetched_at = status.last_success_at if status else None
        stale = fetched_at is None or now - fetched_at > self.stale_after
        detail = ""
        if count is not None and count < (end - start) / SLOT:
            detail = f" stored data covers {count} of {int((end - start) / SLOT)} half-hours."
        if stale and status and status.last_error:
            detail += f" last refresh failed: {status.last_error}"
        return FeedInfo(source="stored" if stale else "live", fetched_at=fetched_at, stale=stale, detail=detail.strip())

    def _last_error(self, db: Session, region: Region) -> str:
        key = NATIONAL if region.region_id is None else str(region.region_id)
        status = db.get(FeedStatus, f"carbon:{key}")
        return (status.last_error if status else None) or "not fetched yet"

    def _recorded_signal(self, region: Region, start: datetime, end: datetime, now: datetime) -> Signal:
        return self._recorded_cached(region, start, end, floor_slot(now))

    def _recorded_signal_uncached(self, region: Region, start: datetime, end: datetime, now: datetime) -> Signal:
        try:
            replay = self.recorded.replay_for(region.region_id, start, end)
        except NoRecording as exc:
            raise SignalUnavailable(str(exc)) from exc
        carbon = self.recorded.carbon(region.region_id, replay, start, end)
        letter = self.price_letter(region)
        price_info = FeedInfo(source="recorded", region_letter=letter, detail=_price_detail(region, letter))
        published_until = replay.to_recorded(now)  # decide publication on the recorded clock
        cutoff = agile_published_until(published_until) + replay.shift
        try:
            published = self.recorded.price_values(letter, replay, start - PRICE_HISTORY, min(end, cutoff))
            price_info = price_info.model_copy(update={"detail": price_info.detail + "Octopus Agile prices, recorded."})
        except NoRecording as exc:
            published = {}
            price_info = FeedInfo(source=None, region_letter=letter, detail=str(exc))
        slots = merge(carbon, published, now, "recorded")
        mode_note = "" if self.mode == "recorded" else "live data unavailable; "
        carbon_info = FeedInfo(source="recorded", detail=f"{mode_note}replay of {replay.dataset}")
        return Signal(
            region=region.as_dict(),
            start=start,
            end=end,
            slots=slots,
            carbon=carbon_info,
            price=price_info,
            replay=replay.as_dict(start, end),
        )

    # ---- refreshing (the only upstream calls) ------------------------------------------------------

    def refresh(self, db: Session, now: datetime) -> dict[str, str]:
        """Fetch every feed from the live APIs into the store; record each outcome; never raise UpstreamError."""
        if self.mode == "recorded":
            return {"all": "skipped: GRID_SOURCE=recorded"}
        carbon_client = self.carbon_client or CarbonIntensityClient()
        price_client = self.price_client or OctopusAgileClient()
        outcome: dict[str, str] = {}
        unreachable = _Breaker()
        self._refresh_feed(
            db, "carbon:national", now, outcome, unreachable, lambda: self._fetch_national(db, carbon_client, now)
        )
        for region_id in self.refresh_regions:
            self._refresh_feed(
                db,
                f"carbon:{region_id}",
                now,
                outcome,
                unreachable,
                lambda rid=region_id: self._store_carbon(db, str(rid), carbon_client.regional_forecast(rid, now), now),
            )
        self._refresh_postcodes(db, carbon_client, now, outcome, unreachable)
        letters = sorted(
            {
                self.national_price_letter,
                *(region_by_id(r).octopus_letter for r in self.refresh_regions if region_by_id(r).octopus_letter),
            }
        )
        price_breaker = _Breaker()
        product: list[str] = []
        for letter in letters:
            self._refresh_feed(
                db,
                f"price:{letter}",
                now,
                outcome,
                price_breaker,
                lambda lt=letter: self._fetch_prices(db, price_client, lt, now, product),
            )
        return outcome

    def _refresh_feed(self, db, feed, now, outcome, breaker, fetch) -> None:
        status = db.get(FeedStatus, feed) or FeedStatus(feed=feed)
        db.add(status)
        status.last_attempt_at = now
        if breaker.error:
            status.last_error = f"skipped, upstream unreachable: {breaker.error}"
            outcome[feed] = status.last_error
            db.commit()
            return
        try:
            count = fetch()
        except UpstreamError as exc:
            db.rollback()
            status = db.get(FeedStatus, feed) or FeedStatus(feed=feed)
            db.add(status)
            status.last_attempt_at, status.last_error = now, str(exc)
            if exc.kind == "transport":
                breaker.error = str(exc)
            outcome[feed] = f"failed: {exc}"
            log.warning("refresh %s failed: %s", feed, exc)
        else:
            status.last_success_at, status.last_error = now, None
            outcome[feed] = f"ok: {count} half-hours"
        db.commit()

    def _fetch_national(self, db, client: CarbonIntensityClient, now: datetime) -> int:
        forecast = client.national_forecast(now)
        past = client.national_past24h(now)
        return self._store_carbon(db, NATIONAL, past + forecast, now)

    def _store_carbon(self, db: Session, key: str, slots: list[GridSlot], now: datetime) -> int:
        existing = {
            row.start: row
            for row in db.scalars(
                select(StoredCarbonSlot).where(
                    StoredCarbonSlot.region_key == key, StoredCarbonSlot.start.in_([s.start for s in slots])
                )
            )
        }
        for slot in slots:
            row = existing.get(slot.start)
            if row is None:
                row = StoredCarbonSlot(region_key=key, start=slot.start, end=slot.end)
                db.add(row)
                existing[slot.start] = row
            row.forecast = slot.forecast if slot.forecast is not None else row.forecast
            row.actual = slot.actual if slot.actual is not None else row.actual  # a forecast never erases an actual
            row.index = slot.index or row.index
            row.generation_mix = slot.generation_mix or row.generation_mix
            row.fetched_at = now
        return len(slots)

    def _fetch_prices(self, db, client: OctopusAgileClient, letter: str, now: datetime, product: list[str]) -> int:
        if not product:
            product.append(client.current_agile_product(now))
        rates = client.unit_rates(product[0], letter, now - PRICE_HISTORY, now + timedelta(days=2))
        existing = {
            row.start: row
            for row in db.scalars(
                select(StoredPriceSlot).where(
                    StoredPriceSlot.letter == letter, StoredPriceSlot.start.in_([r.start for r in rates])
                )
            )
        }
        for rate in rates:
            row = existing.get(rate.start)
            if row is None:
                row = StoredPriceSlot(letter=letter, start=rate.start, end=rate.end)
                db.add(row)
            row.value_inc_vat, row.value_exc_vat = rate.value_inc_vat, rate.value_exc_vat
            row.product, row.fetched_at = product[0], now
        return len(rates)

    def _refresh_postcodes(self, db, client: CarbonIntensityClient, now, outcome, breaker) -> None:
        for row in db.scalars(select(PostcodeRegion)).all():

            def fetch(row=row):
                region_id, slots = client.postcode_forecast(row.outcode, now)
                row.region_id, row.resolved_at = region_id, now
                return self._store_carbon(db, str(region_id), slots, now)

            self._refresh_feed(db, f"postcode:{row.outcode}", now, outcome, breaker, fetch)


@dataclass
class _Breaker:
    """Remembers a transport failure so one unreachable API costs one timeout per refresh, not one per feed."""

    error: str | None = None


def agile_published_until(now: datetime) -> datetime:
    """End of the Agile prices published by `now`: 23:00 UK tomorrow after about 16:00 UK, else today."""
    local = now.astimezone(LONDON)
    day = local.date() + timedelta(days=1 if local.hour >= PUBLISH_HOUR_UK else 0)
    return datetime.combine(day, time(23), LONDON).astimezone(now.tzinfo)


def merge(
    carbon: list[GridSlot], published: dict[datetime, float], now: datetime, carbon_source: str
) -> list[SignalSlot]:
    """Join carbon and published prices (p/kWh by slot start); forecast prices beyond the published horizon."""
    missing = [c.start for c in carbon if c.start not in published]
    forecasts = price_forecast.forecast_prices(published, missing) if published else {}
    slots = []
    for c in carbon:
        use_actual = c.actual is not None and c.end <= now
        if c.start in published:
            price, price_source = published[c.start], "published"
        elif c.start in forecasts:
            price, price_source = forecasts[c.start], "forecast"
        else:
            price, price_source = None, None
        slots.append(
            SignalSlot(
                start=c.start,
                end=c.end,
                carbon_g_per_kwh=c.actual if use_actual else c.forecast,
                carbon_kind="actual" if use_actual else "forecast",
                carbon_source=carbon_source,
                carbon_index=c.index,
                price_p_per_kwh=price,
                price_source=price_source,
                recorded_start=c.recorded_start,
                generation_mix=c.generation_mix,
            )
        )
    return slots


def _price_detail(region: Region, letter: str) -> str:
    if region.octopus_letter:
        return ""
    return f"{region.name} has no Agile region of its own; prices are Agile region {letter}'s. "
