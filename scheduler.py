"""Orchestration: signal → plan → store → record the decision. No optimisation maths here (policy_agent has it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

import job_agent
import policy_agent
from audit_logger import AuditLog
from energy_agent import EnergyAgent, PostcodePending, SignalUnavailable
from models import MAX_DURATION_MINUTES, PlanOut, PlanSpec, Signal
from regions import RegionError, parse_region
from storage import Job, checkpoint_audit
from timeutil import SLOT, floor_slot

DEFAULT_FLEXIBILITY = timedelta(hours=24)  # deadline when none is given
MAX_HORIZON = timedelta(minutes=MAX_DURATION_MINUTES) + timedelta(days=1)


@dataclass
class Planned:
    """What planning produced: the job's inputs, the signals used and the plan (or why there is none)."""

    regions: list[str]
    pue: float
    earliest: datetime
    deadline: datetime
    signals: dict[str, Signal]
    outcome: policy_agent.Plan | policy_agent.Infeasible

    @property
    def feasible(self) -> bool:
        """True when a placement was found."""
        return self.outcome.feasible

    def body(self) -> dict:
        """The plan as the API answers it (PlanOut, JSON-ready)."""
        plan = self.outcome
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
                "signal": {key: signal_provenance(signal) for key, signal in self.signals.items()},
            }
        ).model_dump(mode="json")


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


@dataclass
class Scheduler:
    """Plans jobs on the energy agent's signal and records every decision."""

    energy: EnergyAgent
    audit: AuditLog
    carbon_price_gbp_per_tonne: float = policy_agent.DEFAULT_CARBON_PRICE_GBP_PER_TONNE

    def plan(self, db: Session, spec: PlanSpec, now: datetime) -> Planned:
        """Plan without storing anything (the dry run behind POST /plan)."""
        regions, pue, _ = job_agent.resolve_target(db, spec)
        earliest = max(spec.earliest_start or now, now)  # a start in the past means "now"
        deadline = spec.deadline or earliest + DEFAULT_FLEXIBILITY
        if deadline <= now:
            raise job_agent.ValidationFailed([{"field": "deadline", "message": "deadline is in the past"}])
        if deadline <= earliest:
            raise job_agent.ValidationFailed(
                [{"field": "deadline", "message": "deadline must be after earliest_start"}]
            )
        horizon_start = floor_slot(earliest)
        hours = (min(deadline, horizon_start + MAX_HORIZON) - horizon_start) / timedelta(hours=1)
        signals, series, missing = {}, [], {}
        for key in regions:
            try:
                signal = self.energy.signal(
                    db, parse_region(key), horizon_start, max(hours, SLOT / timedelta(hours=1)), now
                )
            except (SignalUnavailable, PostcodePending, RegionError) as exc:
                missing[key] = str(exc)
                continue
            signals[key] = signal
            series.append(to_series(key, signal))
        job = policy_agent.JobRequest(
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
        if series and series[0].region != regions[0]:
            outcome = policy_agent.Infeasible(
                "regions",
                f"no signal for the first allowed region {regions[0]}: {missing[regions[0]]}",
                per_region=missing,
            )
        elif not series:
            outcome = policy_agent.Infeasible("regions", "no signal for any allowed region", per_region=missing)
        else:
            outcome = policy_agent.plan(job, series)
        return Planned(regions, pue, earliest, deadline, signals, outcome)

    def submit(
        self, db: Session, spec: PlanSpec, now: datetime, owner_id: int | None = None
    ) -> tuple[Job | None, Planned]:
        """Plan a job, store it as scheduled and record the decision; store nothing when it cannot be placed."""
        planned = self.plan(db, spec, now)
        if not planned.feasible:
            return None, planned
        job = job_agent.new_job(spec, planned.regions, planned.pue, planned.earliest, planned.deadline, now, owner_id)
        body = planned.body()
        job.plan = body
        job.planned_region = body["placement"]["region"]
        job.planned_start, job.planned_end = planned.outcome.start, planned.outcome.end
        db.add(job)
        try:
            db.flush()  # the id, for the decision record
            job_agent.transition(job, "scheduled", now)
            self.record(db, job, "plan", now, body, spec)
            db.commit()
        except Exception:
            db.rollback()
            raise
        return job, planned

    def cancel(self, db: Session, job_id: int, now: datetime) -> Job:
        """Cancel a job that has not finished; the decision is recorded."""
        job = job_agent.get_job(db, job_id)
        job_agent.transition(job, "cancelled", now)
        self.decide(db, "cancel", job.id, now, reason="cancelled by the operator", status="cancelled")
        db.commit()
        return job

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
