"""Pydantic v2 domain and wire models. No I/O here."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_serializer, field_validator

SLOT = timedelta(minutes=30)

CarbonKind = Literal["forecast", "actual"]
SourceName = Literal["live", "stored", "recorded"]
PriceSource = Literal["published", "forecast"]


def iso_z(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a trailing Z (the product's wire format for times)."""
    if value is None:
        return None
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Wire(BaseModel):
    """Base for models that serialise times as ISO 8601 UTC with Z."""

    model_config = ConfigDict(frozen=True)

    @field_validator("*", mode="after")
    @classmethod
    def _utc(cls, value):
        if isinstance(value, datetime):
            if value.tzinfo is None:
                raise ValueError("datetimes must be timezone-aware")
            return value.astimezone(timezone.utc)
        return value

    @field_serializer("*", when_used="json")
    def _times(self, value):
        return iso_z(value) if isinstance(value, datetime) else value


class GridSlot(_Wire):
    """One half-hour of carbon intensity for one region, `[start, end)` in UTC, gCO2/kWh."""

    start: datetime
    end: datetime
    forecast: int | None
    actual: int | None = None
    index: str | None = None
    generation_mix: dict[str, float] | None = None
    recorded_start: datetime | None = None
    published_at: datetime | None = None  # when the forecast was published, where known


class PriceSlot(_Wire):
    """One half-hour of the Agile unit rate for one GSP region, p/kWh."""

    start: datetime
    end: datetime
    value_inc_vat: float
    value_exc_vat: float | None = None
    recorded_start: datetime | None = None


class SignalSlot(_Wire):
    """One half-hour of the merged signal: carbon and price with where each came from."""

    start: datetime
    end: datetime
    carbon_g_per_kwh: float | None
    carbon_kind: CarbonKind | None
    carbon_source: SourceName | None
    carbon_index: str | None = None
    price_p_per_kwh: float | None = None
    price_source: PriceSource | None = None
    recorded_start: datetime | None = None
    generation_mix: dict[str, float] | None = None


class FeedInfo(_Wire):
    """Where one feed's numbers came from and how old they are."""

    source: SourceName | None
    fetched_at: datetime | None = None
    stale: bool = False
    detail: str = ""
    region_letter: str | None = None  # price feeds: the Agile letter the prices belong to


class Signal(_Wire):
    """The merged half-hourly signal for one region over a horizon."""

    region: dict
    start: datetime
    end: datetime
    slots: list[SignalSlot]
    carbon: FeedInfo
    price: FeedInfo
    replay: dict | None = None  # set when the numbers are replayed recorded data

    @property
    def stale(self) -> bool:
        """True when either feed is past its freshness limit."""
        return self.carbon.stale or self.price.stale
