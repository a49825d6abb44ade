"""Server-rendered pages."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_user, logout_user

from auth import authenticate, login_required, owner_filter, users_exist
from charts import load_chart, signal_chart
from energy_agent import PostcodePending, SignalUnavailable
from job_agent import (
    STATUSES,
    IllegalTransition,
    NotFound,
    ValidationFailed,
    asset_out,
    create_asset,
    get_job,
    job_out,
    list_assets,
    list_jobs,
    validate,
    visible_job_ids,
)
from models import AssetSpec, JobSpec
from openapi import openapi_spec
from regions import RegionError, parse_region, selectable_regions
from security import limiter, login_limit, write_limit
from storage import get_db
from timeutil import LONDON, SLOT, UTC, floor_slot, to_london

web = Blueprint("web", __name__)


def best_slots(slots, key, count: int = 3):
    """The `count` lowest slots by `key`, earliest first on ties, skipping slots without a value."""
    valued = [s for s in slots if key(s) is not None]
    return sorted(valued, key=lambda s: (key(s), s.start))[:count]


@web.get("/")
def index():
    """The next 48 h of carbon intensity and price for a selectable region."""
    now = current_app.config["CLOCK"]()
    region_text = request.args.get("region", "national")
    error, status, signal = None, 200, None
    try:
        region = parse_region(region_text)
        signal = current_app.extensions["energy_agent"].signal(get_db(), region, floor_slot(now), 48, now)
    except RegionError as exc:
        error, status = str(exc), 422
    except (PostcodePending, SignalUnavailable) as exc:
        error, status = str(exc), 503
    context = {
        "regions": selectable_regions(),
        "selected": region_text,
        "signal": signal,
        "error": error,
        "chart": signal_chart(signal.slots) if signal else None,
        "greenest": best_slots(signal.slots, lambda s: s.carbon_g_per_kwh) if signal else [],
        "cheapest": best_slots(signal.slots, lambda s: s.price_p_per_kwh) if signal else [],
    }
    return render_template("index.html", **context), status


# ---- jobs and assets ------------------------------------------------------------------------------------

JOB_FIELDS = (
    "name",
    "duration_minutes",
    "power_kw",
    "earliest_start",
    "deadline",
    "asset_id",
    "objective",
    "min_chunk_minutes",
    "carbon_cap_kg",
    "cost_cap_gbp",
    "inference_count",
    "callback_url",
)


def local_time_field(raw: str, field: str, errors: dict) -> str | None:
    """A datetime-local form value (UK time) as ISO 8601 UTC, or None; a bad value is put in `errors`."""
    if not raw:
        return None
    try:
        local = datetime.fromisoformat(raw)
    except ValueError:
        errors[field] = "enter a date and time, e.g. 2026-01-01T09:00"
        return None
    if local.tzinfo is None:
        local = local.replace(tzinfo=LONDON)
    return local.astimezone(UTC).isoformat()


def form_to_job(form) -> tuple[dict, dict]:
    """The submit form as a JobSpec body, and any errors found before validation."""
    errors: dict[str, str] = {}
    body = {name: (form.get(name) or "").strip() or None for name in JOB_FIELDS}
    body["earliest_start"] = local_time_field(form.get("earliest_start", ""), "earliest_start", errors)
    body["deadline"] = local_time_field(form.get("deadline", ""), "deadline", errors)
    body["interruptible"] = form.get("interruptible") == "on"
    body["regions"] = [r for r in form.getlist("regions") if r] or None
    if body["asset_id"]:
        body["regions"] = None  # an asset fixes the region
    body["objective"] = body["objective"] or "carbon"
    return {k: v for k, v in body.items() if v is not None}, errors


def form_defaults(now: datetime) -> dict:
    """Sensible defaults: a 3 h, 10 kW job that may run any time in the next 24 h, nationally."""
    start = floor_slot(now) + SLOT
    return {
        "name": "",
        "duration_minutes": "180",
        "power_kw": "10",
        "objective": "carbon",
        "earliest_start": to_london(start).strftime("%Y-%m-%dT%H:%M"),
        "deadline": to_london(start + timedelta(hours=24)).strftime("%Y-%m-%dT%H:%M"),
        "regions": ["national"],
    }


def render_job_form(values: dict, errors: dict, status: int = 200, infeasible: dict | None = None):
    """The submit form with its values and errors beside the fields."""
    return render_template(
        "job_form.html",
        values=values,
        errors=errors,
        infeasible=infeasible,
        regions=selectable_regions(),
        assets=list_assets(get_db()),
    ), status


@web.get("/jobs/new")
@login_required
def new_job():
    """The submit form."""
    return render_job_form(form_defaults(current_app.config["CLOCK"]()), {})


@web.post("/jobs/new")
@login_required
@limiter.limit(write_limit)
def submit_job():
    """Validate, plan and store a job from the form; errors go back beside the fields."""
    values = {**request.form.to_dict(), "regions": request.form.getlist("regions")}
    body, errors = form_to_job(request.form)
    if errors:
        return render_job_form(values, errors, 422)
    try:
        spec = validate(JobSpec, body)
        job, planned = current_app.extensions["scheduler"].submit(
            get_db(), spec, current_app.config["CLOCK"](), owner_id=current_user.id
        )
    except ValidationFailed as exc:
        return render_job_form(values, {e["field"].split(".")[0]: e["message"] for e in exc.errors}, 422)
    if job is None:  # cannot be placed, and nothing to offer instead
        why = planned.outcome
        return render_job_form(values, {why.constraint: why.message}, 422, infeasible=why.as_dict())
    return redirect(url_for("web.job_page", job_id=job.id), code=303)  # scheduled, or pending with offers


@web.get("/jobs")
@login_required
def jobs_page():
    """All jobs with filters by status, region and text."""
    filters = {key: request.args.get(key, "").strip() for key in ("status", "region", "q")}
    try:
        found = list_jobs(
            get_db(),
            filters["status"] or None,
            filters["region"] or None,
            filters["q"] or None,
            owner_id=owner_filter(),
        )
        error = None
    except ValidationFailed as exc:
        found, error = [], str(exc)
    return render_template(
        "jobs.html",
        jobs=[job_out(j) for j in found],
        filters=filters,
        statuses=STATUSES,
        regions=selectable_regions(),
        error=error,
    ), 200 if error is None else 422


@web.get("/jobs/<int(max=2147483647):job_id>")
@login_required
def job_page(job_id: int):
    """A job: its window on the carbon and price chart, baseline vs plan, savings and the explanation."""
    try:
        row = get_job(get_db(), job_id, owner_filter())
    except NotFound:
        abort(404)
    job = job_out(row, current_app.extensions["scheduler"].offers_for(get_db(), row.id))
    chart = signal = None
    if job.placement:
        now = current_app.config["CLOCK"]()
        start = floor_slot(min(job.earliest_start, job.placement.start))
        hours = min((job.deadline - start) / timedelta(hours=1), 7 * 24 + 24)
        try:
            signal = current_app.extensions["energy_agent"].signal(
                get_db(), parse_region(job.placement.region), start, max(hours, 0.5), now
            )
            chart = signal_chart(signal.slots, [(c.start, c.end) for c in job.placement.slots])
        except (RegionError, PostcodePending, SignalUnavailable):
            chart = None
    return render_template("job.html", job=job, chart=chart, signal=signal)


@web.post("/jobs/<int(max=2147483647):job_id>/accept")
@login_required
@limiter.limit(write_limit)
def accept_offer_page(job_id: int):
    """Accept a counter-offer from the job page."""
    from scheduler import NoSuchOffer

    try:
        get_job(get_db(), job_id, owner_filter())
        _, planned = current_app.extensions["scheduler"].accept(
            get_db(), job_id, request.form.get("offer_id", ""), current_app.config["CLOCK"]()
        )
    except NotFound:
        abort(404)
    except (NoSuchOffer, IllegalTransition) as exc:
        flash(str(exc))
    else:
        if not planned.feasible:
            flash("That offer no longer fits; here are new ones.")
    return redirect(url_for("web.job_page", job_id=job_id), code=303)


@web.post("/jobs/<int(max=2147483647):job_id>/cancel")
@login_required
@limiter.limit(write_limit)
def cancel_job_page(job_id: int):
    """Cancel from the job page."""
    try:
        get_job(get_db(), job_id, owner_filter())
        current_app.extensions["scheduler"].cancel(get_db(), job_id, current_app.config["CLOCK"]())
    except NotFound:
        abort(404)
    except IllegalTransition as exc:
        flash(str(exc))
    return redirect(url_for("web.job_page", job_id=job_id), code=303)


@web.route("/assets", methods=["GET", "POST"])
@login_required
@limiter.limit(write_limit, methods=["POST"])
def assets_page():
    """Compute assets, and a form to register one."""
    errors, values, status = {}, {"pue": "1.2"}, 200
    if request.method == "POST":
        values = request.form.to_dict()
        body = {k: v.strip() for k, v in values.items() if k != "csrf_token" and v.strip()}
        try:
            create_asset(get_db(), validate(AssetSpec, body), current_app.config["CLOCK"]())
            return redirect(url_for("web.assets_page"), code=303)
        except ValidationFailed as exc:
            errors, status = {e["field"]: e["message"] for e in exc.errors}, 422
    assets = [asset_out(a) for a in list_assets(get_db())]
    return render_template(
        "assets.html",
        assets=assets,
        errors=errors,
        values=values,
        regions=[r for r in selectable_regions() if r.octopus_letter],
    ), status


@web.get("/docs")
def docs_page():
    """The REST API, rendered from /openapi.json."""
    return render_template("docs.html", spec=openapi_spec())


# ---- decisions ------------------------------------------------------------------------------------------

DECISION_KINDS = ("plan", "replan", "dispatch", "complete", "cancel", "negotiation", "beckn_order")


@web.get("/decisions")
@login_required
def decisions_page():
    """The audit log, newest first, filtered by job and kind."""
    from api_routes import ParamError, decision_filters, recent_decisions

    try:
        filters = decision_filters()
        found, error = recent_decisions(**filters), None
    except ParamError as exc:
        filters, found, error = {"job_id": None, "kind": None, "limit": 100}, [], str(exc)
    return render_template(
        "decisions.html", decisions=found, filters=filters, kinds=DECISION_KINDS, error=error
    ), 200 if error is None else 400


@web.get("/decisions/<decision_id>")
@login_required
def decision_page(decision_id: str):
    """One decision: what was chosen, the alternatives turned down and why."""
    record = current_app.extensions["scheduler"].audit.get(decision_id)
    if record is None or not may_see_decision(record):
        abort(404)
    return render_template("decision.html", d=record)


def may_see_decision(record: dict) -> bool:
    """Admins see every decision; operators those about their own jobs."""
    owner = owner_filter()
    if owner is None:
        return True
    job_id = record.get("job_id")
    return job_id is not None and job_id in visible_job_ids(get_db(), owner)


# ---- accounts -------------------------------------------------------------------------------------------


@web.route("/login", methods=["GET", "POST"])
@limiter.limit(login_limit, methods=["POST"])
def login():
    """Log in with name and password."""
    error, status = None, 200
    if request.method == "POST":
        user = authenticate(get_db(), request.form.get("name", ""), request.form.get("password", ""))
        if user is not None:
            login_user(user)
            return redirect(safe_next(request.args.get("next")), code=303)
        error, status = "Wrong name or password.", 401
    return render_template("login.html", error=error, no_users=not users_exist(get_db())), status


@web.post("/logout")
def logout():
    """Log out (a POST with the CSRF token, so no other site can log you out)."""
    logout_user()
    return redirect(url_for("web.index"), code=303)


def safe_next(target: str | None) -> str:
    """A local path to go to after logging in; anything else goes to the jobs list."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("web.jobs_page")


# ---- dashboard ------------------------------------------------------------------------------------------


def asset_panel(db, asset, now: datetime) -> dict:
    """An asset's next 48 h: planned kW per half-hour against its cap, with its region's carbon intensity."""
    from regions import region_by_id
    from scheduler import ACTIVE, chunks_of, indices_in, to_series
    from storage import Job

    try:
        signal = current_app.extensions["energy_agent"].signal(
            db, region_by_id(asset.region_id), floor_slot(now), 48, now
        )
    except SignalUnavailable as exc:
        return {"asset": asset, "chart": None, "error": str(exc)}
    series = to_series(str(asset.region_id), signal)
    load = np.zeros(len(signal.slots))
    for job in db.query(Job).filter(Job.asset_id == asset.id, Job.status.in_(ACTIVE)):
        load[list(indices_in(series, chunks_of(job)))] += job.power_kw
    return {
        "asset": asset,
        "chart": load_chart(signal.slots, list(load), asset.max_power_kw),
        "peak": load.max(),
        "error": None,
    }


@web.get("/dashboard")
@login_required
def dashboard():
    """Planned power per asset against its cap, the queue, running jobs, and totals saved."""
    from job_agent import fleet_statistics

    db, now = get_db(), current_app.config["CLOCK"]()
    owner = owner_filter()
    queue = list_jobs(db, status="scheduled", owner_id=owner)[::-1]
    running = list_jobs(db, status="running", owner_id=owner)
    pending = list_jobs(db, status="pending", owner_id=owner)
    return render_template(
        "dashboard.html",
        stats=fleet_statistics(db, owner),
        panels=[asset_panel(db, a, now) for a in list_assets(db)],
        queue=[job_out(j) for j in sorted(queue, key=lambda j: j.planned_start)],
        running=[job_out(j) for j in running],
        pending=[job_out(j) for j in pending],
    )
