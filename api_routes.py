"""REST API blueprint (/api/v1) and the operations blueprint (/health)."""

from __future__ import annotations

from datetime import date

from flask import Blueprint, current_app, jsonify, request

from energy_agent import PostcodePending, SignalUnavailable
from regions import RegionError, parse_region
from storage import get_db
from timeutil import floor_slot, london_day_bounds, parse_utc

api = Blueprint("api", __name__, url_prefix="/api/v1")
ops = Blueprint("ops", __name__)

MAX_HOURS = 48


class ParamError(ValueError):
    """A query parameter that fails validation; `field` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def field_errors(status: int, *errors: tuple[str, str]):
    """A JSON error response naming each offending field."""
    return jsonify({"errors": [{"field": f, "message": m} for f, m in errors]}), status


@api.errorhandler(ParamError)
def _param_error(exc: ParamError):
    return field_errors(400, (exc.field, str(exc)))


def hours_param(default: int = MAX_HOURS) -> int:
    """The `hours` query parameter: a whole number 1-48."""
    raw = request.args.get("hours", str(default))
    if not raw.strip().isdigit() or not 1 <= int(raw) <= MAX_HOURS:
        raise ParamError("hours", f"hours must be a whole number from 1 to {MAX_HOURS}, not {raw!r}")
    return int(raw)


def start_param(now):
    """The optional `start` query parameter (ISO 8601 with a timezone); default: the current half-hour."""
    raw = request.args.get("start")
    if not raw:
        return floor_slot(now)
    try:
        return parse_utc(raw)
    except ValueError:
        raise ParamError("start", f"start must be an ISO 8601 time with a timezone, not {raw!r}") from None


def day_param():
    """The optional `day` query parameter: a UK calendar day (YYYY-MM-DD), 46, 48 or 50 half-hours long."""
    raw = request.args["day"]
    if "hours" in request.args or "start" in request.args:
        raise ParamError("day", "give either day, or start and hours, not both")
    try:
        return london_day_bounds(date.fromisoformat(raw))
    except ValueError:
        raise ParamError("day", f"day must be a date like 2023-10-29, not {raw!r}") from None


def region_param(default: str = "national"):
    """The `region` query parameter: 'national', 1-17, or a postcode outward code."""
    try:
        return parse_region(request.args.get("region", default))
    except RegionError as exc:
        raise ParamError("region", str(exc)) from None


def agent():
    """The app's energy agent."""
    return current_app.extensions["energy_agent"]


def clock():
    """The app's clock (tests freeze it)."""
    return current_app.config["CLOCK"]()


@api.get("/signals")
def signals():
    """The merged half-hourly signal for a region."""
    now = clock()
    region = region_param()
    if request.args.get("day"):
        start, end = day_param()
        hours = (end - start).total_seconds() / 3600
    else:
        hours, start = hours_param(), start_param(now)
    try:
        signal = agent().signal(get_db(), region, start, hours, now)
    except RegionError as exc:
        return field_errors(422, ("region", str(exc)))
    except PostcodePending as exc:
        response, status = field_errors(503, ("region", str(exc)))
        response.headers["Retry-After"] = "60"
        return response, status
    except SignalUnavailable as exc:
        return field_errors(503, ("region", str(exc)))
    return current_app.response_class(signal.model_dump_json(exclude_none=False), mimetype="application/json")


@ops.get("/health")
def health():
    """Where the signal's numbers come from and whether they are stale."""
    report = agent().health(get_db(), clock())
    for feed in report["signals"].values():
        if feed["fetched_at"] is not None:
            feed["fetched_at"] = feed["fetched_at"].strftime("%Y-%m-%dT%H:%M:%SZ")
    return jsonify(report)
