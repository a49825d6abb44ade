"""Orchestration: plan on submit, re-plan as forecasts change, dispatch at start time, complete, negotiate.

No optimisation maths here: policy_agent (one job) and fleet (many jobs on a capped asset) do that. Every
decision is appended to the audit log through `decide`.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

import fleet
import job_agent
import policy_agent
from audit_logger import AuditLog
from callbacks import CallbackSender
from energy_agent import EnergyAgent, PostcodePending, SignalUnavailable
from models import MAX_DURATION_MINUTES, JobSpec, PlanOut, PlanSpec, Signal
from regions import NATIONAL, REGION_NAMES, RegionError, parse_region
from storage import Asset, Dispatch, DispatchEvent, Job, Offer, checkpoint_audit
from timeutil import SLOT, ceil_slot, floor_slot, parse_utc

log = logging.getLogger(__name__)

DEFAULT_FLEXIBILITY = timedelta(hours=24)  # deadline when none is given
MAX_HORIZON = timedelta(minutes=MAX_DURATION_MINUTES) + timedelta(days=1)
ACTIVE = ("scheduled", "running")  # statuses whose planned power counts against an asset's cap
OFFER_HORIZON = timedelta(hours=24)  # how far past the deadline a later-deadline offer may reach


class NoSuchOffer(LookupError):
    """The offer id does not belong to this job, or was already used."""


# ---- what planning produced -----------------------------------------------------------------------------


def signal_provenance(signal: Signal) -> dict:
    """Where a signal's numbers came from (for responses and the audit record)."""
    return {
        "carbon": signal.carbon.model_dump(mode="json"),
        "price": signal.price.model_dump(mode="json"),
        "replay": None
        if signal.replay is None
        else {
            **signal.replay,
            "recorded_start": signal.replay["recorded_start"].isoformat(),
            "recorded_end": signal.replay["recorded_end"].isoformat(),
        },
        "horizon": {"start": signal.start.isoformat(), "end": signal.end.isoformat(), "slots": len(signal.slots)},
    }


def plan_body(plan: policy_agent.Plan, signals: dict[str, Signal]) -> dict:
    """A plan as the API answers it (PlanOut, JSON-ready)."""
    return PlanOut.model_validate(
        {
            "placement": {
                "region": plan.region,
                "start": plan.start,
                "end": plan.end,
                "slots": [{"start": a, "end": b} for a, b in plan.chunks],
            },
            "plan": plan.totals.as_dict(),
            "baseline": {"region": plan.baseline_region, "start": plan.baseline_start, **plan.baseline.as_dict()},
            "savings": plan.savings(),
            "explanation": plan.explanation,
            "signal": {
                key: signal_provenance(s) for key, s in signals.items() if key in (plan.region, plan.baseline_region)
            },
        }
    ).model_dump(mode="json")


def offer_body(offer: policy_agent.CounterOffer, signals: dict[str, Signal], offer_id: str | None = None) -> dict:
    """A counter-offer as the API answers it: what changes, and the plan (with savings) it leads to."""
    changes = {
        k: (v.isoformat().replace("+00:00", "Z") if isinstance(v, datetime) else v) for k, v in offer.changes.items()
    }
    return {"id": offer_id, "kind": offer.kind, "changes": changes, **plan_body(offer.plan, signals)}


@dataclass
class Planned:
    """What planning produced: the job's inputs, the signals used, the plan or why not, and counter-offers."""

    regions: list[str]
    pue: float
    earliest: datetime
    deadline: datetime
    signals: dict[str, Signal]
    outcome: policy_agent.Plan | policy_agent.Infeasible
    offers: list[policy_agent.CounterOffer] = field(default_factory=list)

    @property
    def feasible(self) -> bool:
        """True when a placement was found."""
        return self.outcome.feasible

    def body(self) -> dict:
        """The plan as the API answers it."""
        return plan_body(self.outcome, self.signals)


def to_series(key: str, signal: Signal) -> policy_agent.Series:
    """A signal as the optimiser's series: consecutive half-hours up to the first gap or missing carbon."""
    slots = []
    for slot in signal.slots:
        if slot.carbon_g_per_kwh is None or (slots and slot.start != slots[-1].end):
            break
        slots.append(slot)
    return policy_agent.Series(
        region=key,
        starts=tuple(s.start for s in slots),
        carbon=tuple(float(s.carbon_g_per_kwh) for s in slots),
        price=tuple(s.price_p_per_kwh for s in slots),
        carbon_kinds=tuple(s.carbon_kind for s in slots),
        price_sources=tuple(s.price_source for s in slots),
    )


def chunks_of(job: Job) -> list[tuple[datetime, datetime]]:
    """The planned runs of a job, from its stored plan."""
    slots = (job.plan or {}).get("placement", {}).get("slots", [])
    return [(parse_utc(c["start"]), parse_utc(c["end"])) for c in slots]


def indices_in(series: policy_agent.Series, chunks: list[tuple[datetime, datetime]]) -> tuple[int, ...]:
    """The series indices covered by these runs (those inside the series)."""
    position = {start: i for i, start in enumerate(series.starts)}
    out = []
    for start, end in chunks:
        cursor = start
        while cursor < end:
            if cursor in position:
                out.append(position[cursor])
            cursor += SLOT
    return tuple(out)


# ---- the scheduler ----------------------------------------------------------------------------------------


@dataclass
class Scheduler:
    """Plans jobs on the energy agent's signal, keeps them planned, dispatches them, and records every decision."""

    energy: EnergyAgent
    audit: AuditLog
    carbon_price_gbp_per_tonne: float = policy_agent.DEFAULT_CARBON_PRICE_GBP_PER_TONNE
    replan_threshold: float = 0.02  # a job moves only when its score improves by more than this fraction
    max_moves: int = 3  # after this many moves a job stays put (no endless deferral)
    lease: timedelta = timedelta(minutes=2)  # how long a worker's claim on due dispatches lasts
    fleet_time_limit: float = 5.0
    sender: CallbackSender = field(default_factory=CallbackSender)

    # ---- planning one job -------------------------------------------------------------------------

    def plan(self, db: Session, spec: PlanSpec, now: datetime, exclude_job: int | None = None) -> Planned:
        """Plan without storing anything (the dry run behind POST /plan); offers when it cannot be placed."""
        regions, pue, asset = job_agent.resolve_target(db, spec)
        earliest = max(spec.earliest_start or now, now)  # a start in the past means "now"
        deadline = spec.deadline or earliest + DEFAULT_FLEXIBILITY
        if deadline <= now:
            raise job_agent.ValidationFailed([{"field": "deadline", "message": "deadline is in the past"}])
        if deadline <= earliest:
            raise job_agent.ValidationFailed(
                [{"field": "deadline", "message": "deadline must be after earliest_start"}]
            )
        signals, series, missing = self._signals(db, regions, earliest, deadline, now)
        request = self._request(spec, pue, earliest, deadline)
        headroom = None
        if asset is not None and series:
            headroom = {series[0].region: self.headroom(db, asset, series[0], exclude_job)}
        if series and series[0].region != regions[0]:
            outcome = policy_agent.Infeasible(
                "regions",
                f"no signal for the first allowed region {regions[0]}: {missing[regions[0]]}",
                per_region=missing,
            )
        elif not series:
            outcome = policy_agent.Infeasible("regions", "no signal for any allowed region", per_region=missing)
        else:
            outcome = policy_agent.plan(request, series, headroom)
        planned = Planned(regions, pue, earliest, deadline, signals, outcome)
        if not outcome.feasible and series:
            planned.offers = self._counter_offers(db, request, regions, asset, planned, now, exclude_job)
        return planned

    def _counter_offers(self, db, request, regions, asset, planned: Planned, now, exclude_job):
        """Offers looked for over a longer horizon than the deadline (a later deadline may be the answer)."""
        horizon = max(request.deadline, request.earliest_start + timedelta(minutes=request.duration_minutes))
        horizon += OFFER_HORIZON
        signals, series, _ = self._signals(db, regions, request.earliest_start, horizon, now)
        if not series or series[0].region != regions[0]:
            return []
        headroom = None if asset is None else {series[0].region: self.headroom(db, asset, series[0], exclude_job)}
        others = (
            []
            if asset is not None
            else self._other_regions(db, regions, request.earliest_start, request.deadline, now, signals)
        )
        planned.signals.update({k: v for k, v in signals.items() if k not in planned.signals})
        return policy_agent.counter_offers(request, series, others, headroom)

    def _request(self, spec: PlanSpec, pue: float, earliest: datetime, deadline: datetime) -> policy_agent.JobRequest:
        return policy_agent.JobRequest(
            duration_minutes=spec.duration_minutes,
            power_kw=spec.power_kw,
            pue=pue,
            earliest_start=earliest,
            deadline=deadline,
            interruptible=spec.interruptible,
            min_chunk_minutes=spec.min_chunk_minutes or 30,
            objective=spec.objective,
            carbon_cap_kg=spec.carbon_cap_kg,
            cost_cap_gbp=spec.cost_cap_gbp,
            inference_count=spec.inference_count,
            carbon_price_gbp_per_tonne=self.carbon_price_gbp_per_tonne,
        )

    def _signals(self, db, regions, earliest, deadline, now):
        horizon_start = floor_slot(earliest)
        # whole half-hours: the same horizon asks for the same (cached) signal however late in a half-hour
        horizon_end = ceil_slot(min(deadline, horizon_start + MAX_HORIZON))
        hours = (horizon_end - horizon_start) / timedelta(hours=1)
        signals, series, missing = {}, [], {}
        for key in regions:
            try:
                signal = self.energy.signal(db, parse_region(key), horizon_start, max(hours, 0.5), now)
            except (SignalUnavailable, PostcodePending, RegionError) as exc:
                missing[key] = str(exc)
                continue
            signals[key] = signal
            series.append(to_series(key, signal))
        return signals, series, missing

    def _other_regions(self, db, regions, earliest, deadline, now, signals) -> list[policy_agent.Series]:
        """Series for every region the job did not allow (a counter-offer may relax data residency)."""
        others = [k for k in [NATIONAL, *(str(i) for i in REGION_NAMES)] if k not in regions]
        more, series, _ = self._signals(db, others, earliest, deadline, now)
        signals.update(more)
        return series

    def headroom(self, db: Session, asset: Asset, series: policy_agent.Series, exclude_job: int | None) -> np.ndarray:
        """Free kW per half-hour of the series on an asset: its cap less its other jobs' planned power and less
        any confirmed turn-down commitment."""
        free = np.full(len(series.starts), float(asset.max_power_kw)) - commitments(db, asset.id, series)[0]
        query = select(Job).where(Job.asset_id == asset.id, Job.status.in_(ACTIVE))
        for other in db.scalars(query):
            if other.id != exclude_job:
                free[list(indices_in(series, chunks_of(other)))] -= other.power_kw
        return free

    # ---- submitting, accepting, cancelling, completing ------------------------------------------------

    def submit(
        self, db: Session, spec: PlanSpec, now: datetime, owner_id: int | None = None
    ) -> tuple[Job | None, Planned]:
        """Plan and store a job as scheduled. If it cannot be placed but the planner has counter-offers, store it
        as pending with them (the caller answers 409); with no offers, store nothing."""
        planned = self.plan(db, spec, now)
        if not planned.feasible and not planned.offers:
            return None, planned
        job = job_agent.new_job(spec, planned.regions, planned.pue, planned.earliest, planned.deadline, now, owner_id)
        job.callback_secret = secrets.token_hex(32) if spec.callback_url else None
        db.add(job)
        try:
            db.flush()  # the id, for the decision record
            if planned.feasible:
                self._schedule(db, job, planned.outcome, planned.signals, now)
                self.record(db, job, "plan", now, job.plan, spec)
            else:
                self._offer(db, job, planned, now)
            db.commit()
        except Exception:
            db.rollback()
            raise
        return job, planned

    def _schedule(
        self, db: Session, job: Job, plan: policy_agent.Plan, signals: dict[str, Signal], now: datetime
    ) -> None:
        body = plan_body(plan, signals)
        job.plan = body
        job.planned_region = plan.region
        job.planned_start, job.planned_end = plan.start, plan.end
        if job.status != "scheduled":
            job_agent.transition(job, "scheduled", now)
        job.updated_at = now
        self._rebuild_events(db, job)

    def _rebuild_events(self, db: Session, job: Job) -> None:
        """A pending start and stop per planned run; events of runs no longer planned are cancelled."""
        existing = {
            (e.chunk, e.action): e for e in db.scalars(select(DispatchEvent).where(DispatchEvent.job_id == job.id))
        }
        wanted = {}
        for chunk, (start, end) in enumerate(chunks_of(job)):
            wanted[(chunk, "start")], wanted[(chunk, "stop")] = start, end
        for key, event in existing.items():
            if event.status == "pending" and key not in wanted:
                event.status = "cancelled"
        for (chunk, action), due in wanted.items():
            event = existing.get((chunk, action))
            if event is None:
                db.add(
                    DispatchEvent(job_id=job.id, chunk=chunk, action=action, due_at=due, status="pending", attempts=0)
                )
            elif event.status != "done":
                event.status, event.due_at, event.claimed_by, event.claimed_until = "pending", due, None, None

    def _offer(self, db: Session, job: Job, planned: Planned, now: datetime) -> None:
        bodies = []
        for offer in planned.offers:
            offer_id = str(uuid.uuid4())
            body = offer_body(offer, planned.signals, offer_id)
            db.add(
                Offer(id=offer_id, job_id=job.id, kind=offer.kind, changes=body["changes"], body=body, created_at=now)
            )
            bodies.append(body)
        why = planned.outcome
        job.plan = {"infeasible": why.as_dict()}
        self.decide(
            db,
            "negotiation",
            job.id,
            now,
            infeasible=why.as_dict(),
            reason=why.message,
            offers=[
                {"id": b["id"], "kind": b["kind"], "changes": b["changes"], "plan": b["plan"], "savings": b["savings"]}
                for b in bodies
            ],
        )

    def offers_for(self, db: Session, job_id: int) -> list[dict]:
        """The open counter-offers of a job."""
        rows = db.scalars(select(Offer).where(Offer.job_id == job_id, Offer.accepted_at.is_(None)).order_by(Offer.kind))
        return [row.body for row in rows]

    def accept(self, db: Session, job_id: int, offer_id: str, now: datetime) -> tuple[Job, Planned]:
        """Accept a counter-offer: the job takes its changes and is planned again (new offers if it no longer fits)."""
        job = job_agent.get_job(db, job_id)
        offer = db.get(Offer, offer_id)
        if offer is None or offer.job_id != job.id or offer.accepted_at is not None:
            raise NoSuchOffer(f"no open offer {offer_id} for job {job_id}")
        if job.status != "pending":
            raise job_agent.IllegalTransition(f"a {job.status} job has no offers to accept")
        spec = job_agent.validate(JobSpec, {**job_agent.spec_of(job), **offer.changes})
        planned = self.plan(db, spec, now, exclude_job=job.id)
        if not planned.feasible:
            db.execute(update(Offer).where(Offer.job_id == job.id, Offer.accepted_at.is_(None)).values(accepted_at=now))
            self._offer(db, job, planned, now)
            db.commit()
            return job, planned
        apply_spec(job, spec, planned)
        offer.accepted_at = now
        self._schedule(db, job, planned.outcome, planned.signals, now)
        self.decide(
            db,
            "accept",
            job.id,
            now,
            offer_id=offer.id,
            offer_kind=offer.kind,
            changes=offer.changes,
            choice=job.plan["placement"],
            savings=job.plan["savings"],
            reason=f"accepted the {offer.kind} offer",
        )
        db.commit()
        return job, planned

    def cancel(self, db: Session, job_id: int, now: datetime) -> Job:
        """Cancel a job that has not finished; its pending dispatches are dropped and the decision recorded."""
        return self._finish(db, job_id, "cancelled", now, "cancel", reason="cancelled by the operator")

    def complete(self, db: Session, job_id: int, now: datetime, reason: str = "reported complete") -> Job:
        """Mark a running job completed and record the actual run."""
        return self._finish(db, job_id, "completed", now, "complete", reason=reason)

    def fail(self, db: Session, job_id: int, now: datetime, reason: str) -> Job:
        """Mark a running job failed; the decision is recorded."""
        return self._finish(db, job_id, "failed", now, "complete", reason=reason)

    def _finish(self, db: Session, job_id: int, status: str, now: datetime, kind: str, reason: str) -> Job:
        """End a job's life (cancelled, completed or failed): drop its pending dispatches, record the decision."""
        job = job_agent.get_job(db, job_id)
        job_agent.transition(job, status, now)
        if status != "cancelled":
            job.actual_end = now
        self._drop_events(db, job.id)
        placement = (job.plan or {}).get("placement")
        self.decide(
            db,
            kind,
            job.id,
            now,
            reason=reason,
            status=status,
            planned=placement,
            actual={"start": job.actual_start, "end": job.actual_end},
        )
        db.commit()
        return job

    def start_now(self, db: Session, job_id: int, now: datetime, worker: str = "run-job") -> Job:
        """Start a scheduled job now, as its own dispatcher (run-job): its first start event is done here."""
        job = job_agent.get_job(db, job_id)
        job_agent.transition(job, "running", now)
        job.actual_start = now
        db.execute(
            update(DispatchEvent)
            .where(
                DispatchEvent.job_id == job.id,
                DispatchEvent.chunk == 0,
                DispatchEvent.action == "start",
                DispatchEvent.status == "pending",
            )
            .values(status="done", done_at=now, claimed_by=worker)
        )
        db.add(Dispatch(job_id=job.id, chunk=0, action="start", worker=worker, at=now, callback_status=None))
        self.decide(
            db,
            "dispatch",
            job.id,
            now,
            action="start",
            chunk=0,
            worker=worker,
            status="running",
            reason="started by run-job at its planned window",
        )
        db.commit()
        return job

    def _drop_events(self, db: Session, job_id: int) -> None:
        db.execute(
            update(DispatchEvent)
            .where(DispatchEvent.job_id == job_id, DispatchEvent.status == "pending")
            .values(status="cancelled")
        )

    # ---- re-planning ------------------------------------------------------------------------------

    def replan(self, db: Session, now: datetime) -> list[dict]:
        """Move jobs that have not started when the latest signal makes them better by more than the threshold.

        Contiguous jobs on a capped asset are re-planned together (fleet MILP, running jobs frozen as fixed
        load); other jobs one at a time (interruptible ones on an asset within what the others leave free). A job
        may only keep its placement or take one that improves it by more than `replan_threshold`, never past its
        deadline, and not after `max_moves` moves.
        """
        movable = db.scalars(select(Job).where(Job.status == "scheduled", Job.planned_start > now)).all()
        moves = []
        for asset_id in sorted({j.asset_id for j in movable if j.asset_id is not None}):
            moves += self._replan_asset(
                db, db.get(Asset, asset_id), [j for j in movable if j.asset_id == asset_id], now
            )
        for job in (j for j in movable if j.asset_id is None or j.interruptible):
            move = self._replan_alone(db, job, now)
            if move:
                moves.append(move)
        db.commit()
        return moves

    def _better(self, current: float, new: float) -> bool:
        return current - new > self.replan_threshold * abs(current) + policy_agent.EPS

    def _replan_alone(self, db: Session, job: Job, now: datetime) -> dict | None:
        spec = job_agent.validate(JobSpec, job_agent.spec_of(job))
        planned = self.plan(db, spec, now, exclude_job=job.id)
        if not planned.feasible or job.moves >= self.max_moves:
            return None
        current = self._current_score(job, planned)
        if current is None or not self._better(current, planned.outcome.explanation["score"]):
            return None
        return self._move(db, job, planned.outcome, planned.signals, now, current)

    def _current_score(self, job: Job, planned: Planned) -> float | None:
        """The job's current placement scored on the latest signal (None if it is no longer inside it)."""
        signal = planned.signals.get(job.planned_region)
        if signal is None:
            return None
        series = to_series(job.planned_region, signal)
        idx = indices_in(series, chunks_of(job))
        request = self._request(
            job_agent.validate(JobSpec, job_agent.spec_of(job)), job.pue, planned.earliest, planned.deadline
        )
        kg, gbp = policy_agent.slot_terms(series, request)
        score = policy_agent.slot_scores(kg, gbp, request)
        if score is None or len(idx) != request.slots:
            return None
        return float(score[list(idx)].sum())

    def _replan_asset(self, db: Session, asset: Asset, jobs: list[Job], now: datetime) -> list[dict]:
        horizon_end = max(j.deadline for j in jobs)
        key = str(asset.region_id)
        signals, series_list, _ = self._signals(db, [key], now, horizon_end, now)
        if not series_list:
            return []
        series = series_list[0]
        movable_ids = {j.id for j in jobs if not j.interruptible}
        free = self.headroom(db, asset, series, exclude_job=None)
        requests_by_id, fleet_jobs = {}, []
        for job in jobs:
            if job.id not in movable_ids:
                continue
            free[list(indices_in(series, chunks_of(job)))] += job.power_kw  # its own load is what we re-place
            request = self._request(
                job_agent.validate(JobSpec, job_agent.spec_of(job)), job.pue, max(job.earliest_start, now), job.deadline
            )
            requests_by_id[job.id] = request
            fleet_jobs.append(fleet.FleetJob(job.id, request, self._allowed_starts(series, job, request)))
        if not fleet_jobs:
            return []
        result = fleet.plan_fleet(series, fleet_jobs, free, time_limit=self.fleet_time_limit)
        moves = []
        for job in jobs:
            chosen = result.placements.get(job.id)
            current = indices_in(series, chunks_of(job))
            if chosen is None or tuple(chosen) == tuple(current):
                continue
            why = (
                f"planned together with {len(fleet_jobs)} jobs on asset {asset.name!r} within its "
                f"{asset.max_power_kw} kW cap ({result.method}, gap {100 * result.gap:.3f} %)"
            )
            plan = policy_agent.plan_for(requests_by_id[job.id], [series], key, tuple(chosen), why)
            before = self._score_of(series, requests_by_id[job.id], current)
            moves.append(
                self._move(db, job, plan, signals, now, before, fleet_gap=round(result.gap, 6), method=result.method)
            )
        return moves

    def _allowed_starts(self, series, job: Job, request) -> tuple[int, ...]:
        """The current start, plus starts that improve the job by more than the threshold (if it may still move)."""
        current = indices_in(series, chunks_of(job))
        keep = (current[0],) if current else ()
        if job.moves >= self.max_moves or not current:
            return keep
        kg, gbp = policy_agent.slot_terms(series, request)
        lo, hi = policy_agent.window(series, request)
        if hi - lo < request.slots:
            return keep
        scores = policy_agent.contiguous_windows(kg, gbp, lo, hi, request.slots, request).scores
        now_score = self._score_of(series, request, current)
        better = [lo + i for i, s in enumerate(scores) if np.isfinite(s) and self._better(now_score, float(s))]
        return tuple(sorted(set(keep) | set(better)))

    @staticmethod
    def _score_of(series, request, indices) -> float:
        kg, gbp = policy_agent.slot_terms(series, request)
        score = policy_agent.slot_scores(kg, gbp, request)
        return float(score[list(indices)].sum())

    def _move(self, db, job: Job, plan: policy_agent.Plan, signals, now, before_score: float, **extra) -> dict:
        before = job.plan["placement"]
        self._schedule(db, job, plan, signals, now)
        job.moves += 1
        after = job.plan["placement"]
        record = {
            "job_id": job.id,
            "before": before,
            "after": after,
            "before_score": round(before_score, 6),
            "after_score": job.plan["explanation"]["score"],
            "moves": job.moves,
            **extra,
        }
        self.decide(
            db,
            "replan",
            job.id,
            now,
            reason=f"improves the {job.objective} score by more than {100 * self.replan_threshold:g} %",
            before=before,
            after=after,
            before_score=record["before_score"],
            after_score=record["after_score"],
            moves=job.moves,
            **extra,
        )
        return record

    def rebalance(self, db: Session, asset: Asset, now: datetime, order_id: str | None = None) -> list[dict] | str:
        """Re-plan all of an asset's jobs that have not started so that its commitments hold: committed turn-down
        kW left free, committed turn-up load met, cap and deadlines kept. Returns the moves, or why it cannot."""
        movable = list(
            db.scalars(select(Job).where(Job.asset_id == asset.id, Job.status == "scheduled", Job.planned_start > now))
        )
        fixed = [
            j
            for j in db.scalars(select(Job).where(Job.asset_id == asset.id, Job.status.in_(ACTIVE)))
            if j not in movable
        ]
        horizon = max([j.deadline for j in movable] + [o.end for o in active_orders(db, asset.id)] + [now + SLOT])
        key = str(asset.region_id)
        signals, series_list, _ = self._signals(db, [key], now, horizon, now)
        if not series_list:
            return "no grid signal for the asset's region"
        series = series_list[0]
        down, up = commitments(db, asset.id, series)
        fixed_load = np.zeros(len(series.starts))
        for job in fixed:
            fixed_load[list(indices_in(series, chunks_of(job)))] += job.power_kw
        free = asset.max_power_kw - down - fixed_load
        floor = np.where(up > 0, up - fixed_load, -np.inf)
        requests = {}
        for job in movable:
            spec = job_agent.validate(JobSpec, job_agent.spec_of(job))
            requests[job.id] = self._request(spec, job.pue, max(job.earliest_start, now), job.deadline)
        result = fleet.plan_fleet(
            series,
            [fleet.FleetJob(j.id, requests[j.id]) for j in movable],
            free,
            time_limit=self.fleet_time_limit,
            floor=floor,
        )
        load = fleet.load_profile(len(free), result.placements, {j.id: j.power_kw for j in movable})
        if result.unplaced or np.any(load > free + 1e-6) or np.any(load < floor - 1e-6):
            return f"the asset's jobs cannot honour its commitments ({result.status})"
        moves = []
        for job in movable:
            chosen = tuple(result.placements[job.id])
            current = indices_in(series, chunks_of(job))
            if chosen == tuple(current):
                continue
            why = f"re-planned to honour flexibility order {order_id}" if order_id else "re-planned around commitments"
            plan = policy_agent.plan_for(requests[job.id], [series], key, chosen, why)
            before = self._score_of(series, requests[job.id], current) if len(current) == requests[job.id].slots else 0
            moves.append(self._move(db, job, plan, signals, now, before, order_id=order_id, method=result.method))
        return moves

    # ---- dispatching --------------------------------------------------------------------------------

    def claim(self, db: Session, now: datetime, worker: str, limit: int = 50) -> list[int]:
        """Claim due dispatch events for this worker under a lease; safe with many workers.

        PostgreSQL: SELECT ... FOR UPDATE SKIP LOCKED. SQLite: BEGIN IMMEDIATE (one writer at a time).
        An expired lease (a crashed worker) makes its events claimable again.
        """
        db.commit()
        due = (
            select(DispatchEvent.id)
            .where(
                DispatchEvent.status == "pending",
                DispatchEvent.due_at <= now,
                or_(DispatchEvent.claimed_until.is_(None), DispatchEvent.claimed_until < now),
            )
            .order_by(DispatchEvent.due_at, DispatchEvent.id)
            .limit(limit)
        )
        if db.get_bind().dialect.name == "sqlite":
            db.execute(text("BEGIN IMMEDIATE"))
        else:
            due = due.with_for_update(skip_locked=True)
        ids = list(db.scalars(due))
        if ids:
            db.execute(
                update(DispatchEvent)
                .where(DispatchEvent.id.in_(ids))
                .values(claimed_by=worker, claimed_until=now + self.lease)
            )
        db.commit()
        return ids

    def dispatch_due(self, db: Session, now: datetime, worker: str, limit: int = 50) -> int:
        """Claim and carry out due starts and stops; returns how many were dispatched."""
        count = 0
        for event_id in self.claim(db, now, worker, limit):
            count += self._dispatch(db, event_id, now, worker)
        return count

    def _dispatch(self, db: Session, event_id: int, now: datetime, worker: str) -> int:
        event = db.get(DispatchEvent, event_id)
        if event is None or event.status != "pending" or event.claimed_by != worker:
            return 0
        job = db.get(Job, event.job_id)
        chunks = chunks_of(job)
        if job.status in ("completed", "cancelled", "failed"):
            event.status = "cancelled"
            db.commit()
            return 0
        if event.action == "start" and job.status == "scheduled":
            job_agent.transition(job, "running", now)
            job.actual_start = job.actual_start or now
        last = event.chunk == len(chunks) - 1
        if event.action == "stop" and last and job.status == "running":
            job_agent.transition(job, "completed", now)
            job.actual_end = now
        delivery = None
        if job.callback_url:
            start, end = chunks[event.chunk] if event.chunk < len(chunks) else (None, None)
            payload = {
                "event": event.action,
                "job_id": job.id,
                "name": job.name,
                "chunk": event.chunk,
                "chunks": len(chunks),
                "start": _iso(start),
                "end": _iso(end),
                "sent_at": _iso(now),
            }
            delivery = self.sender.send(job.callback_url, job.callback_secret or "", event.action, payload)
        event.status, event.done_at, event.attempts = "done", now, event.attempts + 1
        db.add(
            Dispatch(
                job_id=job.id,
                chunk=event.chunk,
                action=event.action,
                worker=worker,
                at=now,
                callback_status=None if delivery is None else delivery.status,
            )
        )
        outcome = (
            None if delivery is None else {"ok": delivery.ok, "status": delivery.status, "attempts": delivery.attempts}
        )
        try:
            db.flush()
        except IntegrityError:  # the unique constraint caught a second dispatch of the same event
            db.rollback()
            log.error("dispatch %s of job %s chunk %s was already done", event_id, event.job_id, event.chunk)
            return 0
        self.decide(
            db,
            "dispatch",
            job.id,
            now,
            action=event.action,
            chunk=event.chunk,
            worker=worker,
            status=job.status,
            callback=outcome,
            reason=f"{event.action} of run {event.chunk + 1} of {len(chunks)} is due",
        )
        db.commit()
        return 1

    def tick(self, db: Session, now: datetime, worker: str, replan: bool = False) -> dict:
        """One scheduler step: dispatch what is due, and re-plan when asked."""
        dispatched = self.dispatch_due(db, now, worker)
        moves = self.replan(db, now) if replan else []
        return {"dispatched": dispatched, "moved": len(moves)}

    # ---- the audit log ----------------------------------------------------------------------------

    def decide(self, db: Session, kind: str, job_id: int | None, now: datetime, **fields) -> str:
        """Append a decision to the audit log and advance the database's checkpoint in the same transaction."""
        receipt = self.audit.append(kind, job_id, now, **fields)
        checkpoint_audit(db, receipt.seq, receipt.hash, now)
        return receipt.id

    def record(self, db: Session, job: Job, kind: str, now: datetime, body: dict, spec: PlanSpec) -> str:
        """Append the planning decision: inputs, candidates, choice, baseline, savings and the reason."""
        explanation = body["explanation"]
        return self.decide(
            db,
            kind,
            job.id,
            now,
            inputs={"job": spec.model_dump(mode="json"), "signal": body["signal"], "slots_used": explanation["inputs"]},
            candidates=explanation["runners_up"],
            choice=body["placement"],
            plan=body["plan"],
            baseline=body["baseline"],
            savings=body["savings"],
            objective=explanation["objective"],
            score=explanation["score"],
            binding_constraint=explanation["binding_constraint"],
            reason=explanation["why"],
        )


def active_orders(db: Session, asset_id: int) -> list:
    """The asset's confirmed flexibility orders."""
    from storage import FlexOrder

    return list(db.scalars(select(FlexOrder).where(FlexOrder.asset_id == asset_id, FlexOrder.status == "ACTIVE")))


def commitments(db: Session, asset_id: int, series: policy_agent.Series) -> tuple[np.ndarray, np.ndarray]:
    """Per half-hour of the series: kW committed to turn down (to keep free), and the load a turn-up
    commitment requires (the planned load at confirmation plus the committed kW)."""
    down, up = np.zeros(len(series.starts)), np.zeros(len(series.starts))
    for order in active_orders(db, asset_id):
        idx = list(indices_in(series, [(order.start, order.end)]))
        if order.direction == "down":
            down[idx] += order.kw
        else:
            up[idx] = np.maximum(up[idx], (order.terms or {}).get("baseline_kw", 0.0)) + order.kw
    return down, up


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def apply_spec(job: Job, spec: PlanSpec, planned: Planned) -> None:
    """Write an accepted offer's changes into the job."""
    job.regions = planned.regions
    job.deadline = planned.deadline
    job.interruptible, job.min_chunk_minutes = spec.interruptible, spec.min_chunk_minutes
    job.carbon_cap_kg, job.cost_cap_gbp, job.objective = spec.carbon_cap_kg, spec.cost_cap_gbp, spec.objective
