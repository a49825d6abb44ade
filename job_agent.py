"""Jobs and compute assets: validation with errors that name the field, persistence, and the lifecycle."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ValidationError
from sqlalchemy import String, cast, or_, select
from sqlalchemy.orm import Session

from models import CROSS_FIELD, DEFAULT_PUE, AssetOut, AssetSpec, JobOut, PlanSpec
from regions import NATIONAL, OCTOPUS_LETTER
from storage import Asset, Job

# Legal lifecycle moves; completed, cancelled and failed are final.
TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"scheduled", "cancelled", "failed"}),
    "scheduled": frozenset({"running", "cancelled", "failed", "pending"}),
    "running": frozenset({"completed", "failed", "cancelled"}),
    "completed": frozenset(),
    "cancelled": frozenset(),
    "failed": frozenset(),
}
STATUSES = tuple(TRANSITIONS)


class ValidationFailed(ValueError):
    """Input that cannot be accepted; `errors` lists {"field", "message"}."""

    def __init__(self, errors: list[dict]):
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))
        self.errors = errors


class IllegalTransition(ValueError):
    """A lifecycle move that is not allowed (e.g. cancelling a completed job)."""


class NotFound(LookupError):
    """No such job or asset."""


def validate(model: type[BaseModel], data) -> BaseModel:
    """Parse `data` into `model`, or raise ValidationFailed naming every offending field."""
    if not isinstance(data, dict):
        raise ValidationFailed([{"field": "body", "message": "expected a JSON object"}])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(field_errors(exc)) from None


def field_errors(exc: ValidationError) -> list[dict]:
    """Pydantic errors as [{"field", "message"}], cross-field errors put on the field they concern."""
    out = []
    for error in exc.errors(include_url=False):
        loc = [str(part) for part in error["loc"]]
        field = ".".join(loc) if loc else CROSS_FIELD.get(error["type"], "body")
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        out.append({"field": field, "message": message})
    return out


def resolve_target(db: Session, spec: PlanSpec) -> tuple[list[str], float, Asset | None]:
    """The regions a job may run in, its PUE, and its asset: from asset_id, else regions, else national."""
    if spec.asset_id is not None:
        asset = db.get(Asset, spec.asset_id)
        if asset is None:
            raise ValidationFailed([{"field": "asset_id", "message": f"no asset with id {spec.asset_id}"}])
        if spec.power_kw > asset.max_power_kw:
            raise ValidationFailed(
                [
                    {
                        "field": "power_kw",
                        "message": f"{spec.power_kw} kW exceeds the maximum of asset {asset.name!r}, "
                        f"{asset.max_power_kw} kW",
                    }
                ]
            )
        return [str(asset.region_id)], asset.pue, asset
    return list(spec.regions or [NATIONAL]), DEFAULT_PUE, None


def new_job(
    spec: PlanSpec,
    regions: list[str],
    pue: float,
    earliest: datetime,
    deadline: datetime,
    now: datetime,
    owner_id: int | None = None,
) -> Job:
    """A job row in status `pending` (not yet added to a session)."""
    return Job(
        name=spec.name,
        status="pending",
        asset_id=spec.asset_id,
        owner_id=owner_id,
        regions=regions,
        duration_minutes=spec.duration_minutes,
        power_kw=spec.power_kw,
        pue=pue,
        earliest_start=earliest,
        deadline=deadline,
        interruptible=spec.interruptible,
        min_chunk_minutes=spec.min_chunk_minutes,
        objective=spec.objective,
        carbon_cap_kg=spec.carbon_cap_kg,
        cost_cap_gbp=spec.cost_cap_gbp,
        inference_count=spec.inference_count,
        callback_url=spec.callback_url,
        created_at=now,
        updated_at=now,
    )


def transition(job: Job, status: str, now: datetime) -> None:
    """Move a job to `status`, or raise IllegalTransition."""
    if status not in TRANSITIONS[job.status]:
        raise IllegalTransition(f"a {job.status} job cannot become {status}")
    job.status, job.updated_at = status, now


def get_job(db: Session, job_id: int, owner_id: int | None = None) -> Job:
    """The job with this id (of this owner, when one is given), or NotFound: other operators' jobs stay hidden."""
    job = db.get(Job, job_id)
    if job is None or (owner_id is not None and job.owner_id != owner_id):
        raise NotFound(f"no job with id {job_id}")
    return job


def visible_job_ids(db: Session, owner_id: int) -> set[int]:
    """Ids of the jobs an operator owns."""
    return set(db.scalars(select(Job.id).where(Job.owner_id == owner_id)))


def list_jobs(
    db: Session,
    status: str | None = None,
    region: str | None = None,
    q: str | None = None,
    limit: int = 200,
    owner_id: int | None = None,
) -> list[Job]:
    """Jobs, newest first, filtered by owner, status, planned or allowed region, and text in the name."""
    query = select(Job).order_by(Job.id.desc()).limit(limit)
    if owner_id is not None:
        query = query.where(Job.owner_id == owner_id)
    if status:
        if status not in TRANSITIONS:
            raise ValidationFailed(
                [{"field": "status", "message": f"unknown status; use one of {', '.join(STATUSES)}"}]
            )
        query = query.where(Job.status == status)
    if region:
        key = region.strip().lower()
        if key != "national" and not (key.isascii() and key.isdigit() and 1 <= int(key) <= 17):
            raise ValidationFailed([{"field": "region", "message": "region is 'national' or 1-17"}])
        # planned there, or allowed there (regions is a JSON list: match its quoted element in the text)
        query = query.where(or_(Job.planned_region == key, cast(Job.regions, String).contains(f'"{key}"')))
    if q and ("\x00" in q or len(q) > 200):
        raise ValidationFailed([{"field": "q", "message": "q is up to 200 characters of text"}])
    if q:
        query = query.where(Job.name.ilike(f"%{q.strip()}%"))
    return list(db.scalars(query))


def spec_of(job: Job) -> dict:
    """The job's request as a JobSpec body (for re-planning, offers and the API)."""
    return {
        "name": job.name,
        "duration_minutes": job.duration_minutes,
        "power_kw": job.power_kw,
        "earliest_start": job.earliest_start.isoformat(),
        "deadline": job.deadline.isoformat(),
        "regions": None if job.asset_id else job.regions,
        "asset_id": job.asset_id,
        "interruptible": job.interruptible,
        "min_chunk_minutes": job.min_chunk_minutes,
        "objective": job.objective,
        "carbon_cap_kg": job.carbon_cap_kg,
        "cost_cap_gbp": job.cost_cap_gbp,
        "inference_count": job.inference_count,
        "callback_url": job.callback_url,
    }


def job_out(job: Job, offers: list[dict] | None = None) -> JobOut:
    """The job as the API shows it (with its open counter-offers when given)."""
    plan = job.plan or {}
    return JobOut.model_validate(
        {
            **spec_of(job),
            "id": job.id,
            "status": job.status,
            "pue": job.pue,
            "created_at": job.created_at,
            "updated_at": job.updated_at,
            **{key: plan.get(key) for key in ("placement", "plan", "baseline", "savings", "explanation")},
            "offers": offers or None,
            "infeasible": plan.get("infeasible"),
            "moves": job.moves,
            "actual_start": job.actual_start,
            "actual_end": job.actual_end,
        }
    )


def create_asset(db: Session, spec: AssetSpec, now: datetime) -> Asset:
    """Store a new asset; the name must be unique."""
    if db.scalar(select(Asset).where(Asset.name == spec.name)) is not None:
        raise ValidationFailed([{"field": "name", "message": f"an asset named {spec.name!r} exists"}])
    asset = Asset(**spec.model_dump(), created_at=now)
    db.add(asset)
    db.commit()
    return asset


def get_asset(db: Session, asset_id: int) -> Asset:
    """The asset with this id, or NotFound."""
    asset = db.get(Asset, asset_id)
    if asset is None:
        raise NotFound(f"no asset with id {asset_id}")
    return asset


def list_assets(db: Session) -> list[Asset]:
    """All assets by name."""
    return list(db.scalars(select(Asset).order_by(Asset.name)))


def asset_out(asset: Asset) -> AssetOut:
    """The asset as the API shows it."""
    return AssetOut(
        id=asset.id,
        name=asset.name,
        region_id=asset.region_id,
        max_power_kw=asset.max_power_kw,
        pue=asset.pue,
        gpu_count=asset.gpu_count,
        octopus_letter=OCTOPUS_LETTER[asset.region_id],
        created_at=asset.created_at,
    )


COUNTED = ("scheduled", "running", "completed")  # jobs whose plan will run or ran


def _totals(jobs: list[Job]) -> dict:
    """Jobs by status; energy, carbon and cost planned and saved; per inference where counts are known."""
    counted = [j for j in jobs if j.status in COUNTED and j.plan]
    out = {
        "jobs": {status: sum(1 for j in jobs if j.status == status) for status in STATUSES},
        "energy_kwh": sum(j.plan["plan"]["energy_kwh"] for j in counted),
        "carbon_kg_planned": sum(j.plan["plan"]["carbon_kg"] for j in counted),
        "carbon_kg_saved": sum(j.plan["savings"]["carbon_kg"] for j in counted),
        "cost_gbp_planned": sum(j.plan["plan"]["cost_gbp"] or 0 for j in counted),
        "cost_gbp_saved": sum(j.plan["savings"]["cost_gbp"] or 0 for j in counted),
        "jobs_without_prices": sum(1 for j in counted if j.plan["plan"]["cost_gbp"] is None),
    }
    with_inferences = [j for j in counted if j.inference_count]
    inferences = sum(j.inference_count for j in with_inferences)
    out["inferences"] = inferences
    out["carbon_g_per_inference"] = (
        sum(j.plan["plan"]["carbon_kg"] for j in with_inferences) * 1000 / inferences if inferences else None
    )
    priced = [j for j in with_inferences if j.plan["plan"]["cost_gbp"] is not None]
    priced_inferences = sum(j.inference_count for j in priced)
    out["cost_gbp_per_inference"] = (
        sum(j.plan["plan"]["cost_gbp"] for j in priced) / priced_inferences if priced_inferences else None
    )
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in out.items()}


def fleet_statistics(db: Session, owner_id: int | None = None) -> dict:
    """The statistics per asset (and for jobs on no asset) and overall, for one operator's jobs or all."""
    query = select(Job)
    if owner_id is not None:
        query = query.where(Job.owner_id == owner_id)
    jobs = list(db.scalars(query))
    assets = {a.id: a for a in list_assets(db)}
    per_asset = []
    for asset_id in sorted({j.asset_id for j in jobs if j.asset_id is not None}):
        asset = assets[asset_id]
        per_asset.append(
            {
                "asset_id": asset_id,
                "name": asset.name,
                "max_power_kw": asset.max_power_kw,
                **_totals([j for j in jobs if j.asset_id == asset_id]),
            }
        )
    unassigned = [j for j in jobs if j.asset_id is None]
    return {"overall": _totals(jobs), "assets": per_asset, "no_asset": _totals(unassigned)}
