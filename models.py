"""Pydantic v2 domain and wire models. No I/O here."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_serializer, field_validator, model_validator
from pydantic_core import PydanticCustomError

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


# ---- jobs, assets and plans (wire models; the REST API's request and response bodies) ---------------

Objective = Literal["carbon", "cost", "balanced"]
JobStatus = Literal["pending", "scheduled", "running", "completed", "cancelled", "failed"]
MAX_DURATION_MINUTES = 7 * 24 * 60
DEFAULT_PUE = 1.2  # a modern, efficient facility; set the asset's own PUE where it is known
MIN_YEAR, MAX_YEAR = 2000, 2100  # times outside this are mistakes, and would overflow date arithmetic


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


# PostgreSQL text cannot hold NUL; other characters (even newlines) are stored and shown escaped.
Name = Annotated[str, AfterValidator(_no_nul)]


class PlanSpec(BaseModel):
    """A flexible job as the planner takes it (the body of POST /plan; POST /jobs adds a required name)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: Name = Field("", max_length=200)
    duration_minutes: int = Field(ge=30, le=MAX_DURATION_MINUTES, description="run time; rounded up to half-hours")
    power_kw: float = Field(gt=0, le=100_000, description="IT load in kW; energy = power × PUE × time")
    earliest_start: datetime | None = Field(None, description="default: now")
    deadline: datetime | None = Field(None, description="latest finish; default: earliest start + 24 h")
    regions: list[str] | None = Field(
        None, max_length=17, description="allowed regions ('national' or Carbon Intensity ids 1-17)"
    )
    asset_id: int | None = Field(None, ge=1, le=2**31 - 1)  # database ids are 32-bit
    interruptible: bool = False
    min_chunk_minutes: int | None = Field(None, ge=30, le=MAX_DURATION_MINUTES)
    objective: Objective = "carbon"
    carbon_cap_kg: float | None = Field(None, gt=0)
    cost_cap_gbp: float | None = Field(None, gt=0)
    inference_count: int | None = Field(None, ge=1, le=10**15)
    callback_url: str | None = Field(None, max_length=2000, pattern=r"^https?://[^\s]+$")

    @field_validator("earliest_start", "deadline")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("must include a timezone, e.g. 2026-01-01T09:00:00Z")
        if value is not None and not MIN_YEAR <= value.year <= MAX_YEAR:
            raise ValueError(f"must be between {MIN_YEAR} and {MAX_YEAR}")
        return None if value is None else value.astimezone(timezone.utc)

    @field_validator("regions", mode="before")
    @classmethod
    def _region_keys(cls, value):
        if value is None:
            return None
        if not isinstance(value, list):
            raise ValueError('must be a list of regions, e.g. ["13", "14"]')
        out = []
        for item in value:
            key = str(item).strip().lower() if not isinstance(item, bool) else ""
            if key != "national" and not (key.isascii() and key.isdigit() and 1 <= int(key) <= 17):
                raise ValueError(f"unknown region {item!r}; use 'national' or 1-17")
            if key not in out:
                out.append(key)
        if not out:
            raise ValueError("give at least one region, or leave regions out")
        return out

    @model_validator(mode="after")
    def _consistent(self):
        if self.regions and self.asset_id is not None:
            raise PydanticCustomError("conflict", "give asset_id or regions, not both")
        if self.earliest_start and self.deadline and self.deadline <= self.earliest_start:
            raise PydanticCustomError("order", "deadline must be after earliest_start")
        if self.min_chunk_minutes is not None:
            if not self.interruptible:
                raise PydanticCustomError("chunk", "min_chunk_minutes applies to interruptible jobs only")
            if self.min_chunk_minutes > self.duration_minutes:
                raise PydanticCustomError("chunk", "min_chunk_minutes cannot exceed duration_minutes")
        return self


# Which field a cross-field error belongs to (pydantic reports model-level errors without a field).
CROSS_FIELD = {"conflict": "regions", "order": "deadline", "chunk": "min_chunk_minutes"}


class JobSpec(PlanSpec):
    """A job to submit (POST /jobs)."""

    name: Name = Field(min_length=1, max_length=200)


class AssetSpec(BaseModel):
    """A compute asset: where it is, its power envelope and its facility overhead."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: Name = Field(min_length=1, max_length=200)
    region_id: int = Field(ge=1, le=14, description="Carbon Intensity DNO region 1-14 (the Agile letter follows)")
    max_power_kw: float = Field(gt=0, le=1_000_000)
    pue: float = Field(DEFAULT_PUE, ge=1.0, le=3.0, description="power usage effectiveness; default 1.2")
    gpu_count: int | None = Field(None, ge=0, le=1_000_000)


class ChunkOut(_Wire):
    start: datetime
    end: datetime


class PlacementOut(_Wire):
    region: str
    start: datetime
    end: datetime
    slots: list[ChunkOut]


class TotalsOut(BaseModel):
    carbon_kg: float
    cost_gbp: float | None
    energy_kwh: float


class BaselineOut(_Wire):
    region: str
    start: datetime
    carbon_kg: float
    cost_gbp: float | None
    energy_kwh: float


class SavingsOut(BaseModel):
    carbon_kg: float
    cost_gbp: float | None
    carbon_pct: float | None
    cost_pct: float | None
    carbon_g_per_inference: float | None = None
    cost_gbp_per_inference: float | None = None


class PlanOut(_Wire):
    """The answer to POST /plan: where and when, what it emits and costs, against running it now, and why."""

    placement: PlacementOut
    plan: TotalsOut
    baseline: BaselineOut
    savings: SavingsOut
    explanation: dict
    signal: dict


class JobOut(PlanSpec):
    """A stored job with its status and plan."""

    model_config = ConfigDict(extra="ignore")

    id: int
    name: str
    status: JobStatus
    pue: float
    created_at: datetime
    updated_at: datetime
    placement: PlacementOut | None = None
    plan: TotalsOut | None = None
    baseline: BaselineOut | None = None
    savings: SavingsOut | None = None
    explanation: dict | None = None
    offers: list[dict] | None = None
    infeasible: dict | None = None
    moves: int = 0
    actual_start: datetime | None = None
    actual_end: datetime | None = None

    @field_serializer(
        "created_at", "updated_at", "earliest_start", "deadline", "actual_start", "actual_end", when_used="json"
    )
    def _times(self, value):
        return iso_z(value)


class AssetOut(AssetSpec):
    """A stored compute asset."""

    id: int
    octopus_letter: str
    created_at: datetime

    @field_serializer("created_at", when_used="json")
    def _times(self, value):
        return iso_z(value)


class FieldError(BaseModel):
    field: str
    message: str


class ErrorOut(BaseModel):
    """A 4xx answer: each offending field with a message; `infeasible` when the job cannot be placed, with the
    planner's counter-offers (409) and, for a submitted job, the job stored as pending."""

    errors: list[FieldError]
    infeasible: dict | None = None
    offers: list[dict] | None = None
    job: dict | None = None
