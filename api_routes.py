"""REST API blueprint (/api/v1) and the operations blueprint (/health)."""

from __future__ import annotations

import re
from datetime import date

from flask import Blueprint, current_app, jsonify, request
from flask_login import current_user

from auth import login_required, owner_filter
from energy_agent import PostcodePending, SignalUnavailable
from job_agent import (
    IllegalTransition,
    NotFound,
    ValidationFailed,
    asset_out,
    create_asset,
    fleet_statistics,
    get_asset,
    get_job,
    job_out,
    list_assets,
    list_jobs,
    validate,
    visible_job_ids,
)
from models import MAX_YEAR, MIN_YEAR, AssetSpec, JobSpec, PlanSpec
from openapi import openapi_spec
from regions import RegionError, parse_region
from scheduler import NoSuchOffer, offer_body
from security import anonymous_limit, limiter, write_limit
from storage import get_db
from timeutil import floor_slot, london_day_bounds, parse_utc

api = Blueprint("api", __name__, url_prefix="/api/v1")
ops = Blueprint("ops", __name__)

MAX_HOURS = 48


_WHOLE = re.compile(r"[0-9]{1,19}")


def is_whole(text: str) -> bool:
    """True for a plain ASCII whole number (str.isdigit() also accepts '³', which int() refuses)."""
    return bool(_WHOLE.fullmatch(text.strip()))


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
    if not is_whole(raw) or not 1 <= int(raw) <= MAX_HOURS:
        raise ParamError("hours", f"hours must be a whole number from 1 to {MAX_HOURS}, not {raw!r}")
    return int(raw)


def start_param(now):
    """The optional `start` query parameter (ISO 8601 with a timezone); default: the current half-hour."""
    raw = request.args.get("start")
    if not raw:
        return floor_slot(now)
    try:
        value = parse_utc(raw)
    except ValueError:
        raise ParamError("start", f"start must be an ISO 8601 time with a timezone, not {raw!r}") from None
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise ParamError("start", f"start must be between {MIN_YEAR} and {MAX_YEAR}")
    return value


def day_param():
    """The optional `day` query parameter: a UK calendar day (YYYY-MM-DD), 46, 48 or 50 half-hours long."""
    raw = request.args["day"]
    if "hours" in request.args or "start" in request.args:
        raise ParamError("day", "give either day, or start and hours, not both")
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        raise ParamError("day", f"day must be a date like 2023-10-29, not {raw!r}") from None
    if not MIN_YEAR <= day.year <= MAX_YEAR:
        raise ParamError("day", f"day must be between {MIN_YEAR} and {MAX_YEAR}")
    return london_day_bounds(day)


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
    return current_app.response_class(signal_json(signal), mimetype="application/json")


_SIGNAL_JSON: dict[int, tuple] = {}


def signal_json(signal) -> str:
    """A signal as JSON. Replayed signals are cached objects (the energy agent's LRU), so their JSON is kept
    beside them, keyed by the object (held here, so its id is not reused)."""
    if signal.replay is None:
        return signal.model_dump_json()
    cached = _SIGNAL_JSON.get(id(signal))
    if cached is None or cached[0] is not signal:
        if len(_SIGNAL_JSON) > 512:
            _SIGNAL_JSON.clear()
        cached = _SIGNAL_JSON[id(signal)] = (signal, signal.model_dump_json())
    return cached[1]


@ops.get("/openapi.json")
def openapi_root():
    """The OpenAPI document at the conventional root path too."""
    return jsonify(openapi_spec())


@ops.get("/health")
def health():
    """Where the signal's numbers come from, whether they are stale, and any torn audit lines."""
    report = agent().health(get_db(), clock())
    torn = scheduler().audit.torn_events()
    report["audit"] = {"torn_lines": len(torn), "torn_path": str(scheduler().audit.torn_path) if torn else None}
    for feed in report["signals"].values():
        if feed["fetched_at"] is not None:
            feed["fetched_at"] = feed["fetched_at"].strftime("%Y-%m-%dT%H:%M:%SZ")
    return jsonify(report)


# ---- planning, jobs and assets ------------------------------------------------------------------------


def scheduler():
    """The app's scheduler."""
    return current_app.extensions["scheduler"]


def json_body() -> dict:
    """The request's JSON object, or a 400/415 naming `body`."""
    if not request.is_json:
        raise ParamError("body", "send a JSON object with Content-Type: application/json")
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ParamError("body", "the body is not a JSON object")
    return data


@api.errorhandler(ValidationFailed)
def _invalid(exc: ValidationFailed):
    return jsonify({"errors": exc.errors}), 422


@api.errorhandler(NotFound)
def _not_found(exc: NotFound):
    return jsonify({"errors": [{"field": "id", "message": str(exc)}]}), 404


@api.errorhandler(IllegalTransition)
def _conflict(exc: IllegalTransition):
    return jsonify({"errors": [{"field": "status", "message": str(exc)}]}), 409


def infeasible_response(planned, job=None):
    """409 with the planner's counter-offers (and the stored pending job), or 422 when there are none;
    either way naming the constraint that cannot be met, and by how much."""
    why = planned.outcome
    body = {"errors": [{"field": why.constraint, "message": why.message}], "infeasible": why.as_dict()}
    if not planned.offers:
        return jsonify(body), 422
    if job is None:  # a dry run: the offers say what would work, but there is nothing to accept
        body["offers"] = [offer_body(o, planned.signals) for o in planned.offers]
    else:
        body["job"] = job_out(job, scheduler().offers_for(get_db(), job.id)).model_dump(mode="json")
        body["offers"] = body["job"]["offers"]
    return jsonify(body), 409


def json_response(model, status: int = 200):
    """A pydantic model as a JSON response."""
    return current_app.response_class(model.model_dump_json(), status=status, mimetype="application/json")


@api.post("/plan")
@limiter.limit(anonymous_limit)
def plan():
    """Dry run: the best window and region for a job, its baseline and savings, and why. Stores nothing."""
    spec = validate(PlanSpec, json_body())
    planned = scheduler().plan(get_db(), spec, clock())
    if not planned.feasible:
        return infeasible_response(planned)
    return jsonify(planned.body())


@api.post("/jobs")
@login_required
@limiter.limit(write_limit)
def create_job():
    """Submit a job: planned, stored as scheduled, the decision recorded."""
    spec = validate(JobSpec, json_body())
    job, planned = scheduler().submit(get_db(), spec, clock(), owner_id=current_user.id)
    if job is None or not planned.feasible:
        return infeasible_response(planned, job)
    body = job_out(job).model_dump(mode="json")
    if job.callback_secret:
        body["callback_secret"] = job.callback_secret  # shown this once: it signs the job's callbacks
    response = jsonify(body)
    response.status_code = 201
    response.headers["Location"] = f"/api/v1/jobs/{job.id}"
    return response


@api.get("/jobs")
@login_required
def jobs():
    """Jobs, newest first; filter by status, region and text in the name (an operator sees their own)."""
    found = list_jobs(
        get_db(), request.args.get("status"), request.args.get("region"), request.args.get("q"), owner_id=owner_filter()
    )
    return current_app.response_class(
        "[" + ",".join(job_out(job).model_dump_json() for job in found) + "]", mimetype="application/json"
    )


@api.get("/jobs/<int(max=2147483647):job_id>")
@login_required
def job(job_id: int):
    """One job with its plan (and its open counter-offers while it is pending)."""
    job = get_job(get_db(), job_id, owner_filter())
    return json_response(job_out(job, scheduler().offers_for(get_db(), job.id)))


@api.post("/jobs/<int(max=2147483647):job_id>/cancel")
@login_required
@limiter.limit(write_limit)
def cancel_job(job_id: int):
    """Cancel a job that has not finished."""
    get_job(get_db(), job_id, owner_filter())
    return json_response(job_out(scheduler().cancel(get_db(), job_id, clock())))


@api.post("/jobs/<int(max=2147483647):job_id>/accept")
@login_required
@limiter.limit(write_limit)
def accept_offer(job_id: int):
    """Accept one of a pending job's counter-offers by its id: the job is planned with that change."""
    get_job(get_db(), job_id, owner_filter())
    body = json_body()
    offer_id = body.get("offer_id")
    if not isinstance(offer_id, str) or not offer_id or len(offer_id) > 36 or "\x00" in offer_id:
        raise ParamError("offer_id", "give the id of one of the job's offers")
    try:
        job, planned = scheduler().accept(get_db(), job_id, offer_id, clock())
    except NoSuchOffer as exc:
        return field_errors(404, ("offer_id", str(exc)))
    if not planned.feasible:
        return infeasible_response(planned, job)
    return json_response(job_out(job))


@api.post("/jobs/<int(max=2147483647):job_id>/complete")
@login_required
@limiter.limit(write_limit)
def complete_job(job_id: int):
    """Report a running job finished; the actual run is recorded."""
    get_job(get_db(), job_id, owner_filter())
    return json_response(job_out(scheduler().complete(get_db(), job_id, clock())))


@api.get("/statistics")
@login_required
def statistics():
    """Per asset and overall: jobs by status, energy, kg CO2 and GBP planned and saved, per inference."""
    return jsonify(fleet_statistics(get_db(), owner_filter()))


@api.get("/assets")
@login_required
def assets():
    """All compute assets."""
    return jsonify([asset_out(a).model_dump(mode="json") for a in list_assets(get_db())])


@api.post("/assets")
@login_required
@limiter.limit(write_limit)
def create_asset_route():
    """Register a compute asset."""
    spec = validate(AssetSpec, json_body())
    asset = create_asset(get_db(), spec, clock())
    response = json_response(asset_out(asset), 201)
    response.headers["Location"] = f"/api/v1/assets/{asset.id}"
    return response


@api.get("/assets/<int(max=2147483647):asset_id>")
@login_required
def asset(asset_id: int):
    """One compute asset."""
    return json_response(asset_out(get_asset(get_db(), asset_id)))


@api.get("/openapi.json")
def openapi():
    """The OpenAPI 3.1 description of this API, generated from the pydantic models."""
    return jsonify(openapi_spec())


def int_param(name: str, default: int | None, lo: int, hi: int) -> int | None:
    """An optional whole-number query parameter within [lo, hi]."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not is_whole(raw) or not lo <= int(raw) <= hi:
        raise ParamError(name, f"{name} must be a whole number from {lo} to {hi}, not {raw!r}")
    return int(raw)


def decision_filters() -> dict:
    """job_id, kind and limit from the query string, validated."""
    kind = request.args.get("kind") or None
    if kind is not None and (len(kind) > 32 or not kind.replace("_", "").isalpha()):
        raise ParamError("kind", "kind is a word such as plan, replan, dispatch, cancel")
    return {"job_id": int_param("job_id", None, 1, 2**31 - 1), "kind": kind, "limit": int_param("limit", 100, 1, 1000)}


def recent_decisions(job_id: int | None, kind: str | None, limit: int) -> list[dict]:
    """The newest `limit` decisions matching the filters that the caller may see, newest first."""
    found = list(scheduler().audit.iter_decisions(job_id=job_id, kind=kind))
    owner = owner_filter()
    if owner is not None:
        mine = visible_job_ids(get_db(), owner)
        found = [d for d in found if d.get("job_id") in mine]
    return found[::-1][:limit]


@api.get("/decisions")
@login_required
def decisions():
    """Audit records, newest first: filter by job_id and kind; limit 1-1000 (default 100)."""
    return jsonify({"decisions": recent_decisions(**decision_filters())})
