"""Upstream clients (Carbon Intensity API, Octopus Agile) and the recorded source that replays real data.

Each HTTP client takes `session`, `base_url` and `timeout`; every failure — transport, non-2xx, invalid
JSON, a body of the wrong shape — surfaces as one `UpstreamError`, so callers handle one thing.
"""

from __future__ import annotations

import csv
import logging
import math
from bisect import bisect_left
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from models import GridSlot, PriceSlot
from timeutil import SLOT, UTC, WEEK, floor_slot, parse_utc

log = logging.getLogger(__name__)

CARBON_INTENSITY_URL = "https://api.carbonintensity.org.uk"
OCTOPUS_URL = "https://api.octopus.energy"
DEFAULT_TIMEOUT = (3.05, 15.0)  # (connect, read) seconds
MAX_PAGES = 60  # Octopus pagination guard: 60 pages x 100 rates is far beyond any horizon we ask for


class UpstreamError(Exception):
    """An upstream API did not give a usable answer (transport, HTTP status, JSON or shape)."""

    def __init__(self, message: str, *, kind: str, url: str | None = None, status: int | None = None):
        super().__init__(message)
        self.kind = kind  # "transport" | "http" | "json" | "shape"
        self.url = url
        self.status = status


class NoRecording(LookupError):
    """The recorded data has nothing for this region or period; we never substitute another region's numbers."""


def build_session(total: int = 3, backoff: float = 0.5, backoff_max: float = 8.0) -> requests.Session:
    """A session that retries idempotent GETs on 429/502/503/504 with bounded backoff, honouring Retry-After."""
    retry = Retry(
        total=total,
        connect=total,
        read=total,
        status=total,
        backoff_factor=backoff,
        backoff_max=backoff_max,
        status_forcelist=(429, 502, 503, 504),
        allowed_methods=frozenset({"GET"}),
        respect_retry_after_header=True,
        raise_on_status=False,  # the last response is judged below, as an UpstreamError
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers["User-Agent"] = "compute-energy-convergence/0.1"
    return session


class _JsonClient:
    """GET JSON from one base URL with a timeout, turning every failure into UpstreamError."""

    def __init__(self, session: requests.Session | None = None, base_url: str = "", timeout=DEFAULT_TIMEOUT):
        self.session = session or build_session()
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _get_json(self, path_or_url: str, params: dict | None = None) -> Any:
        url = path_or_url if path_or_url.startswith("http") else f"{self.base_url}{path_or_url}"
        try:
            response = self.session.get(url, params=params, timeout=self.timeout)
        except requests.RequestException as exc:
            raise UpstreamError(f"{url}: {exc.__class__.__name__}: {exc}", kind="transport", url=url) from exc
        if not response.ok:
            raise UpstreamError(
                f"{url}: HTTP {response.status_code}", kind="http", url=url, status=response.status_code
            )
        if not response.content.strip():
            raise UpstreamError(f"{url}: empty body", kind="shape", url=url, status=response.status_code)
        try:
            return response.json()
        except ValueError as exc:
            raise UpstreamError(f"{url}: invalid JSON: {exc}", kind="json", url=url) from exc


def _shape(condition: bool, message: str, url: str | None = None) -> None:
    if not condition:
        raise UpstreamError(message, kind="shape", url=url)


def ci_time(moment: datetime) -> str:
    """A time in the Carbon Intensity API's path format (UTC, minutes)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def _mix(raw: Any) -> dict[str, float] | None:
    if raw is None:
        return None
    return {str(item["fuel"]): float(item["perc"]) for item in raw}


def _parse_ci_slot(item: dict, published_at: datetime | None = None) -> GridSlot:
    intensity = item["intensity"]
    start, end = parse_utc(item["from"]), parse_utc(item["to"])
    if end - start != SLOT or start != floor_slot(start):
        raise ValueError(f"slot {item['from']}..{item['to']} is not an aligned half-hour")
    forecast, actual = intensity.get("forecast"), intensity.get("actual")
    return GridSlot(
        start=start,
        end=end,
        forecast=None if forecast is None else int(forecast),
        actual=None if actual is None else int(actual),
        index=intensity.get("index"),
        generation_mix=_mix(item.get("generationmix")),
        published_at=published_at,
    )


def _parse_ci_slots(items: Any, url: str, published_at: datetime | None = None) -> list[GridSlot]:
    _shape(isinstance(items, list) and items, f"{url}: no slots in 'data'", url)
    try:
        slots = [_parse_ci_slot(item, published_at) for item in items]
    except (KeyError, TypeError, ValueError) as exc:
        raise UpstreamError(f"{url}: unexpected slot shape: {exc!r}", kind="shape", url=url) from exc
    slots.sort(key=lambda s: s.start)
    return slots


def _require_horizon(slots: list[GridSlot], start: datetime, hours: float, url: str) -> None:
    """A 48 h forecast cut short (seen in the wild: it stops at the end of the same day) is a failure."""
    covered = (slots[-1].end - floor_slot(start)).total_seconds() / 3600
    _shape(covered >= hours, f"{url}: forecast covers {covered:.1f} h, expected {hours:.0f} h", url)


class CarbonIntensityClient(_JsonClient):
    """GB Carbon Intensity API (national, regional, postcode)."""

    FORECAST_HOURS = 47.5  # fw48h answers 96 slots from the slot containing {from}; allow the last to lag

    def __init__(self, session=None, base_url: str = CARBON_INTENSITY_URL, timeout=DEFAULT_TIMEOUT):
        super().__init__(session, base_url, timeout)

    def national_forecast(self, start: datetime) -> list[GridSlot]:
        """The national 48 h forecast from the slot containing `start`."""
        path = f"/intensity/{ci_time(start)}/fw48h"
        slots = _parse_ci_slots(self._data(path), path, published_at=start)
        _require_horizon(slots, start, self.FORECAST_HOURS, path)
        return slots

    def national_past24h(self, at: datetime) -> list[GridSlot]:
        """The national 24 h up to `at`, with actuals where known."""
        path = f"/intensity/{ci_time(at)}/pt24h"
        return _parse_ci_slots(self._data(path), path)

    def national_history(self, start: datetime, end: datetime) -> list[GridSlot]:
        """National forecast and actual over `[start, end)`, fetched in the API's 14-day chunks."""
        slots: list[GridSlot] = []
        cursor = start
        while cursor < end:
            chunk_end = min(cursor + timedelta(days=14), end)
            path = f"/intensity/{ci_time(cursor)}/{ci_time(chunk_end)}"
            slots.extend(s for s in _parse_ci_slots(self._data(path), path) if start <= s.start < end)
            cursor = chunk_end
        return sorted({s.start: s for s in slots}.values(), key=lambda s: s.start)

    def regional_forecast(self, region_id: int, start: datetime) -> list[GridSlot]:
        """One region's 48 h forecast with its generation mix."""
        path = f"/regional/intensity/{ci_time(start)}/fw48h/regionid/{int(region_id)}"
        region = self._region_object(path)
        _shape(region.get("regionid") == region_id, f"{path}: answered region {region.get('regionid')}", path)
        slots = _parse_ci_slots(region.get("data"), path, published_at=start)
        _require_horizon(slots, start, self.FORECAST_HOURS, path)
        return slots

    def postcode_forecast(self, outcode: str, start: datetime) -> tuple[int, list[GridSlot]]:
        """The 48 h forecast for a postcode outward code, and the region id it belongs to."""
        path = f"/regional/intensity/{ci_time(start)}/fw48h/postcode/{quote(outcode)}"
        region = self._region_object(path)
        region_id = region.get("regionid")
        _shape(isinstance(region_id, int), f"{path}: no regionid for postcode {outcode}", path)
        slots = _parse_ci_slots(region.get("data"), path, published_at=start)
        _require_horizon(slots, start, self.FORECAST_HOURS, path)
        return region_id, slots

    def regional_now(self) -> dict[int, GridSlot]:
        """The current half-hour for every region (1-18), with generation mix."""
        path = "/regional"
        data = self._data(path)
        _shape(isinstance(data, list) and data, f"{path}: no data", path)
        try:
            period = data[0]
            out = {}
            for region in period["regions"]:
                item = {"from": period["from"], "to": period["to"], **region}
                out[int(region["regionid"])] = _parse_ci_slot(item)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise UpstreamError(f"{path}: unexpected shape: {exc!r}", kind="shape", url=path) from exc
        return out

    def _data(self, path: str) -> Any:
        body = self._get_json(path)
        _shape(isinstance(body, dict) and "data" in body, f"{path}: body has no 'data'", path)
        return body["data"]

    def _region_object(self, path: str) -> dict:
        data = self._data(path)
        # One-region endpoints nest an object; tolerate the list-wrapped variant some mirrors return.
        if isinstance(data, list) and len(data) == 1:
            data = data[0]
        _shape(isinstance(data, dict), f"{path}: 'data' is not a region object", path)
        return data


class OctopusAgileClient(_JsonClient):
    """Octopus Energy public API: the live Agile import product and its half-hourly unit rates."""

    def __init__(self, session=None, base_url: str = OCTOPUS_URL, timeout=DEFAULT_TIMEOUT):
        super().__init__(session, base_url, timeout)

    def current_agile_product(self, now: datetime) -> str:
        """The code of the Agile import product on sale at `now` (codes change; OUTGOING is export)."""
        candidates = []
        for product in self._paged("/v1/products/", params={"brand": "OCTOPUS_ENERGY"}):
            code = str(product.get("code", ""))
            if not code.startswith("AGILE-") or "OUTGOING" in code.upper():
                continue
            if str(product.get("direction", "IMPORT")).upper() != "IMPORT":
                continue
            available_to = product.get("available_to")
            if available_to and parse_utc(available_to) <= now:
                continue
            available_from = product.get("available_from")
            candidates.append((parse_utc(available_from) if available_from else datetime.min.replace(tzinfo=UTC), code))
        if not candidates:
            raise UpstreamError("/v1/products/: no live AGILE- import product", kind="shape")
        return max(candidates)[1]

    def unit_rates(self, product: str, letter: str, start: datetime, end: datetime) -> list[PriceSlot]:
        """Half-hourly unit rates (inc and exc VAT) for `[start, end)`, ascending, all pages followed."""
        path = f"/v1/products/{product}/electricity-tariffs/E-1R-{product}-{letter}/standard-unit-rates/"
        params = {"period_from": ci_time(start), "period_to": ci_time(end), "page_size": 1500}
        rates = []
        try:
            for row in self._paged(path, params=params):
                slot_start, slot_end = parse_utc(row["valid_from"]), parse_utc(row["valid_to"])
                if slot_end - slot_start != SLOT:
                    raise ValueError(f"rate {row['valid_from']}..{row['valid_to']} is not a half-hour")
                rates.append(
                    PriceSlot(
                        start=slot_start,
                        end=slot_end,
                        value_inc_vat=float(row["value_inc_vat"]),
                        value_exc_vat=None if row.get("value_exc_vat") is None else float(row["value_exc_vat"]),
                    )
                )
        except (KeyError, TypeError, ValueError) as exc:
            raise UpstreamError(f"{path}: unexpected rate shape: {exc!r}", kind="shape", url=path) from exc
        # The API answers newest first; we keep time order.
        return sorted({r.start: r for r in rates}.values(), key=lambda r: r.start)

    def agile_rates(self, letter: str, start: datetime, end: datetime, now: datetime) -> tuple[str, list[PriceSlot]]:
        """Discover the live product, then read its rates for region `letter`."""
        product = self.current_agile_product(now)
        return product, self.unit_rates(product, letter, start, end)

    def _paged(self, path: str, params: dict | None = None):
        url, pages = path, 0
        while url:
            body = self._get_json(url, params=params if pages == 0 else None)
            _shape(isinstance(body, dict) and isinstance(body.get("results"), list), f"{url}: no 'results'", url)
            yield from body["results"]
            url = body.get("next")
            pages += 1
            _shape(pages <= MAX_PAGES, f"{path}: more than {MAX_PAGES} pages", path)


# --------------------------------------------------------------------------------------------------
# Recorded source: the real recorded data shipped under data/ (see data/PROVENANCE.md), replayed.
# --------------------------------------------------------------------------------------------------

DATA_DIR = Path(__file__).resolve().parent / "data"
NATIONAL_CSV = "ci_national_2023_halfhourly.csv"
AGILE_CSVS = {"J": "agile_J_south_eastern_england_2020-2024.csv"}
REGIONAL_SNAPSHOTS = "forecast_snapshots/regional_fw48h"
NATIONAL_SNAPSHOTS = "forecast_snapshots/national_fw48h"
_FUELS = ("biomass", "coal", "gas", "hydro", "imports", "nuclear", "other", "solar", "wind")


@dataclass(frozen=True)
class Replay:
    """How a horizon maps onto the recording: shift whole weeks back from now to reach recorded time."""

    shift: timedelta
    dataset: str

    @property
    def weeks(self) -> int:
        """The shift in whole weeks."""
        return self.shift // WEEK

    def to_recorded(self, moment: datetime) -> datetime:
        """The recorded instant that plays at `moment`."""
        return moment - self.shift

    def as_dict(self, start: datetime, end: datetime) -> dict:
        """A description of the replay for responses and banners."""
        return {
            "dataset": self.dataset,
            "shift_weeks": self.weeks,
            "recorded_start": self.to_recorded(start),
            "recorded_end": self.to_recorded(end),
        }


class RecordedPrice(NamedTuple):
    """One recorded Agile half-hour (p/kWh inc. VAT)."""

    start: datetime
    end: datetime
    value_inc_vat: float


def _csv_rows(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


class _Series:
    """A time-sorted list with range lookup by slot start."""

    def __init__(self, items: list):
        self.items = sorted(items, key=lambda s: s.start)
        self.starts = [s.start for s in self.items]

    def between(self, start: datetime, end: datetime) -> list:
        return self.items[bisect_left(self.starts, start) : bisect_left(self.starts, end)]

    @property
    def first(self) -> datetime:
        return self.starts[0]

    @property
    def last_end(self) -> datetime:
        return self.items[-1].end


class RecordedSource:
    """Replays the real recorded data in data/, shifted onto 'now' by whole weeks, keeping recorded_start.

    National carbon: the 2023 national series (final forecast and actual, Carbon Intensity API / NESO).
    Regional carbon (1-17): the regional 48 h forecasts as published 14-29 March 2023; each half-hour takes
    the freshest forecast published at or before it. Prices: Agile region J (2020-2024) only — any other
    letter raises NoRecording rather than borrow another region's prices.
    """

    def __init__(self, data_dir: Path | str = DATA_DIR):
        self.data_dir = Path(data_dir)

    @cached_property
    def national(self) -> _Series:
        slots = []
        for row in _csv_rows(self.data_dir / NATIONAL_CSV):
            actual = float(row["actual"]) if row["actual"] else None
            slots.append(
                GridSlot.model_construct(
                    start=parse_utc(row["from"]),
                    end=parse_utc(row["to"]),
                    forecast=int(row["forecast"]),
                    # The recording holds a few 0.0 actuals that NESO's own data flags as bad readings
                    # (see PROVENANCE); a zero-carbon GB grid has never happened, so they count as unknown.
                    actual=round(actual) if actual else None,
                    index=row["index"] or None,
                    generation_mix=None,
                    recorded_start=None,
                    published_at=None,
                )
            )
        return _Series(slots)

    @cached_property
    def regional(self) -> dict[int, _Series]:
        freshest: dict[int, dict[datetime, GridSlot]] = {}
        for path in sorted((self.data_dir / REGIONAL_SNAPSHOTS).glob("*.csv")):  # oldest first: later overwrite
            published_at = datetime.strptime(path.stem, "%Y-%m-%dT%H%MZ").replace(tzinfo=UTC)
            for row in _csv_rows(path):
                region_id = int(row["regions.regionid"])
                if region_id > 17:
                    continue  # 18 is GB as a whole; the national series serves that
                start = parse_utc(row["from"])
                freshest.setdefault(region_id, {})[start] = GridSlot.model_construct(
                    start=start,
                    end=start + SLOT,
                    forecast=int(row["regions.intensity.forecast"]),
                    actual=None,
                    index=None,
                    generation_mix={fuel: float(row[fuel]) for fuel in _FUELS},
                    recorded_start=None,
                    published_at=published_at,
                )
        return {region_id: _Series(list(slots.values())) for region_id, slots in freshest.items()}

    @cached_property
    def _prices(self) -> dict[str, _Series]:
        # Plain tuples, not models: years of half-hours stay small in every worker's memory.
        out = {}
        for letter, name in AGILE_CSVS.items():
            rows = []
            for row in _csv_rows(self.data_dir / name):
                start = parse_utc(row["timestamp"])
                rows.append(RecordedPrice(start, start + SLOT, float(row["price"])))
            out[letter] = _Series(rows)
        return out

    def price_letters(self) -> list[str]:
        """Agile region letters with a recording."""
        return sorted(AGILE_CSVS)

    def carbon_series(self, region_id: int | None) -> _Series:
        """The recorded carbon series for national (None) or a region id."""
        if region_id is None:
            return self.national
        if region_id not in self.regional:
            raise NoRecording(f"no recorded carbon intensity for region {region_id}")
        return self.regional[region_id]

    def dataset_name(self, region_id: int | None) -> str:
        """Human description of the recording behind a region's carbon."""
        if region_id is None:
            return "national carbon intensity 2023 (final forecast and actual), Carbon Intensity API / NESO"
        return "regional carbon intensity forecasts as published 14-29 March 2023, Carbon Intensity API / NESO"

    def replay_for(self, region_id: int | None, start: datetime, end: datetime) -> Replay:
        """The whole-week shift that maps `[start, end)` into the recording, nearest the same time of year."""
        series = self.carbon_series(region_id)
        lo = math.ceil((end - series.last_end) / WEEK)
        hi = math.floor((start - series.first) / WEEK)
        if lo > hi:
            raise NoRecording(
                f"the recording ({series.first:%Y-%m-%d} to {series.last_end:%Y-%m-%d}) is too short "
                f"for a horizon of {(end - start).total_seconds() / 3600:.0f} h"
            )
        anchors = [_same_time_in_year(start, y) for y in range(series.first.year, series.last_end.year + 1)]

        def season_gap(k: int) -> tuple[timedelta, int]:
            mapped = start - k * WEEK
            return min(abs(mapped - anchor) for anchor in anchors), k

        weeks = min(range(lo, hi + 1), key=season_gap)
        return Replay(shift=weeks * WEEK, dataset=self.dataset_name(region_id))

    def carbon(self, region_id: int | None, replay: Replay, start: datetime, end: datetime) -> list[GridSlot]:
        """Recorded carbon slots replayed into `[start, end)`, each with its original `recorded_start`."""
        recorded = self.carbon_series(region_id).between(replay.to_recorded(start), replay.to_recorded(end))
        return [_replayed(slot, replay) for slot in recorded]

    def price_values(self, letter: str, replay: Replay, start: datetime, end: datetime) -> dict[datetime, float]:
        """Recorded Agile prices for `letter` in `[start, end)` as {replayed start: p/kWh} (no model objects:
        this is on every request's path)."""
        if letter not in self._prices:
            raise NoRecording(
                f"no recorded Agile prices for region {letter}; recorded: {', '.join(self.price_letters())}"
            )
        recorded = self._prices[letter].between(replay.to_recorded(start), replay.to_recorded(end))
        return {slot.start + replay.shift: slot.value_inc_vat for slot in recorded}


@lru_cache(maxsize=1)
def shared_recorded_source() -> RecordedSource:
    """One RecordedSource per process, so the recording is parsed once however many apps are built."""
    return RecordedSource()


def _same_time_in_year(moment: datetime, year: int) -> datetime:
    try:
        return moment.replace(year=year)
    except ValueError:  # 29 February
        return moment.replace(year=year, day=28)


def _replayed(slot, replay: Replay):
    return slot.model_copy(
        update={"start": slot.start + replay.shift, "end": slot.end + replay.shift, "recorded_start": slot.start}
    )
