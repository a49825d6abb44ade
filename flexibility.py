"""Flexibility this site can sell: slots derived from the current plan, orders, and commitments the planner honours.

- turn-down (direction "down"): kW of planned load in a half-hour that can leave it without breaking any deadline
  or cap (each job is checked by re-planning it with that half-hour closed);
- turn-up ("up"): spare capacity in a half-hour that movable jobs could fill.

Price of a slot = max(0, marginal cost of honouring it) + margin × kWh, where the marginal cost is the change in
the moved jobs' cost plus carbon valued at the carbon price (£ + £/t × t CO2), from the planner itself, and the
margin is BECKN_MARGIN_GBP_PER_KWH. A confirmed order becomes an ACTIVE commitment: the asset's jobs are
re-planned together so that the kW are free (turn-down) or used (turn-up), and every moved job is audited with
the order id.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

import job_agent
import policy_agent as pa
from models import JobSpec
from regions import OCTOPUS_LETTER, region_by_id
from scheduler import ACTIVE, Scheduler, chunks_of, indices_in
from storage import Asset, FlexOrder, Job
from timeutil import SLOT, floor_slot

HORIZON = timedelta(hours=24)  # how far ahead slots are offered


@dataclass
class FlexSlot:
    """One item of the catalog: an asset, a half-hour, a direction, how many kW, and its price."""

    id: str
    asset: Asset
    direction: str
    start: datetime
    end: datetime
    kw: float
    carbon_g_per_kwh: float | None
    price_p_per_kwh: float | None
    price_gbp: float
    jobs: list[int] = field(default_factory=list)

    @property
    def kwh(self) -> float:
        """Energy the slot moves."""
        return self.kw * (self.end - self.start) / timedelta(hours=1)


def item_id(asset_id: int, direction: str, start: datetime) -> str:
    """A stable catalog id for an asset, a direction and a half-hour."""
    return f"{asset_id}-{direction}-{start:%Y%m%dT%H%MZ}"


def valuation(totals: pa.Totals, carbon_price: float) -> float:
    """£ plus carbon valued at the carbon price (£/t); the unit the flexibility price is in."""
    return (totals.cost_gbp or 0.0) + carbon_price * totals.carbon_kg / 1000


@dataclass
class Flexibility:
    """Computes the catalog and carries orders through to commitments, through the scheduler."""

    scheduler: Scheduler
    margin_gbp_per_kwh: float = 0.05

    # ---- the catalog ----------------------------------------------------------------------------------

    def slots(self, db: Session, now: datetime) -> list[FlexSlot]:
        """Every non-empty turn-down and turn-up slot in the next 24 h, per asset."""
        out = []
        for asset in db.scalars(select(Asset).order_by(Asset.id)):
            out += self._asset_slots(db, asset, now)
        return out

    def slot(self, db: Session, now: datetime, wanted: str) -> FlexSlot | None:
        """The catalog item with this id, as it stands now."""
        return next((s for s in self.slots(db, now) if s.id == wanted), None)

    def _asset_slots(self, db: Session, asset: Asset, now: datetime) -> list[FlexSlot]:
        sched = self.scheduler
        start = floor_slot(now) + SLOT
        key = str(asset.region_id)
        signals, series_list, _ = sched._signals(db, [key], start, start + HORIZON + timedelta(days=2), now)
        if not series_list:
            return []
        series, signal = series_list[0], signals[key]
        jobs = list(db.scalars(select(Job).where(Job.asset_id == asset.id, Job.status.in_(ACTIVE))))
        free = sched.headroom(db, asset, series, exclude_job=None)
        placed = {job.id: indices_in(series, chunks_of(job)) for job in jobs}
        movable = [j for j in jobs if j.status == "scheduled" and j.planned_start and j.planned_start > now]
        requests = {j.id: self._request(j, now) for j in movable}
        out = []
        limit = min(len(series.starts), int(HORIZON / SLOT))
        for t in range(limit):
            down = self._turn_down(series, t, movable, placed, requests, free)
            up = self._turn_up(series, t, movable, placed, requests, free)
            for direction, (kw, delta, ids) in (("down", down), ("up", up)):
                if kw <= 1e-9:
                    continue
                slot = signal.slots[t]
                energy = kw * 0.5
                out.append(
                    FlexSlot(
                        item_id(asset.id, direction, series.starts[t]),
                        asset,
                        direction,
                        series.starts[t],
                        series.starts[t] + SLOT,
                        round(kw, 3),
                        slot.carbon_g_per_kwh,
                        slot.price_p_per_kwh,
                        round(max(0.0, delta) + self.margin_gbp_per_kwh * energy, 4),
                        ids,
                    )
                )
        return out

    def _request(self, job: Job, now: datetime) -> pa.JobRequest:
        spec = job_agent.validate(JobSpec, job_agent.spec_of(job))
        return self.scheduler._request(spec, job.pue, max(job.earliest_start, now), job.deadline)

    def _turn_down(self, series, t, movable, placed, requests, free) -> tuple[float, float, list[int]]:
        """kW of jobs in half-hour t that fit elsewhere with t closed, and what moving them costs."""
        kw, delta, ids = 0.0, 0.0, []
        price = self.scheduler.carbon_price_gbp_per_tonne
        for job in movable:
            if t not in placed[job.id]:
                continue
            room = free.copy()
            room[list(placed[job.id])] += job.power_kw  # its own load leaves with it
            room[t] = 0.0
            alternative = pa.plan(requests[job.id], [series], {series.region: room})
            if not alternative.feasible:
                continue
            current = pa.plan_for(requests[job.id], [series], series.region, placed[job.id], "current")
            kw += job.power_kw
            delta += valuation(alternative.totals, price) - valuation(current.totals, price)
            ids.append(job.id)
        return kw, delta, ids

    def _turn_up(self, series, t, movable, placed, requests, free) -> tuple[float, float, list[int]]:
        """Spare kW in half-hour t that movable contiguous jobs could fill, and the cheapest way to fill it."""
        spare = float(free[t])
        if spare <= 1e-9:
            return 0.0, 0.0, []
        price = self.scheduler.carbon_price_gbp_per_tonne
        options = []
        for job in movable:
            request = requests[job.id]
            if t in placed[job.id] or request.interruptible or job.power_kw > spare:
                continue
            lo, hi = pa.window(series, request)
            first, last = max(lo, t - request.slots + 1), min(t, hi - request.slots)
            if first > last:
                continue
            room = free.copy()
            room[list(placed[job.id])] += job.power_kw
            covering = replace(
                request, earliest_start=series.starts[first], deadline=series.starts[last] + request.slots * SLOT
            )
            moved = pa.plan(covering, [series], {series.region: room})
            if not moved.feasible:
                continue
            current = pa.plan_for(request, [series], series.region, placed[job.id], "current")
            options.append((valuation(moved.totals, price) - valuation(current.totals, price), job))
        kw, delta, ids = 0.0, 0.0, []
        for cost, job in sorted(options, key=lambda o: o[0]):
            if kw + job.power_kw <= spare + 1e-9:
                kw, delta = kw + job.power_kw, delta + cost
                ids.append(job.id)
        return kw, delta, ids

    # ---- orders ---------------------------------------------------------------------------------------

    def select(
        self, db: Session, now: datetime, transaction_id: str, bap_id: str, bap_uri: str, wanted: str, kw: float | None
    ) -> FlexOrder | str:
        """Quote an item (at most its available kW); an error message when it cannot be had."""
        slot = self.slot(db, now, wanted)
        if slot is None:
            return "item not found or no longer available"
        kw = slot.kw if kw is None else kw
        if kw <= 0 or kw > slot.kw + 1e-9:
            return f"quantity {kw} kW unavailable: at most {slot.kw} kW"
        order = db.scalar(
            select(FlexOrder).where(
                FlexOrder.transaction_id == transaction_id, FlexOrder.status.in_(("SELECTED", "INITIALIZED"))
            )
        )
        if order is None:
            order = FlexOrder(id=str(uuid.uuid4()), transaction_id=transaction_id, created_at=now, status="SELECTED")
            db.add(order)
        share = kw / slot.kw
        order.bap_id, order.bap_uri, order.item_id, order.asset_id = bap_id, bap_uri, wanted, slot.asset.id
        order.direction, order.start, order.end, order.kw = slot.direction, slot.start, slot.end, round(kw, 3)
        order.price_gbp, order.updated_at = round(slot.price_gbp * share, 4), now
        order.terms = self.terms(order)
        return order

    def terms(self, order: FlexOrder) -> dict:
        """Payment and cancellation terms of an order."""
        free_until = order.start - timedelta(hours=1)
        return {
            "payment": "post-fulfilment: settled per half-hour on delivered kW, within 30 days of the window",
            "cancellation_free_until": free_until.isoformat(),
            "cancellation_fee_gbp": order.price_gbp,
            "settlement": "per half-hour against the planned-load baseline recorded at confirmation",
        }

    def confirm(self, db: Session, order: FlexOrder, now: datetime) -> list[dict] | str:
        """Make the order a commitment and re-plan its asset to honour it; an error if it cannot be honoured."""
        if order.status == "ACTIVE":
            return []  # idempotent: already committed, nothing changes
        order.terms = {**(order.terms or {}), "baseline_kw": self.load(db, order), "confirmed_at": now.isoformat()}
        order.status = "ACTIVE"
        db.flush()
        moves = self.scheduler.rebalance(db, db.get(Asset, order.asset_id), now, order_id=order.id)
        if isinstance(moves, str):
            order.status = "INITIALIZED"
            return moves
        order.updated_at = now
        return moves

    def cancel(self, db: Session, order: FlexOrder, now: datetime) -> float:
        """Release the commitment; the fee due under the terms."""
        fee = 0.0 if now <= order.start - timedelta(hours=1) else order.price_gbp
        order.status, order.updated_at = "CANCELLED", now
        order.terms = {**(order.terms or {}), "cancelled_at": now.isoformat(), "fee_gbp": fee}
        return fee

    def load(self, db: Session, order: FlexOrder, running_only: bool = False) -> float:
        """kW planned on the order's asset in its window (or, with running_only, from jobs that ran)."""
        statuses = ("running", "completed") if running_only else ACTIVE
        total = 0.0
        for job in db.scalars(select(Job).where(Job.asset_id == order.asset_id, Job.status.in_(statuses))):
            if running_only and (job.actual_start is None or job.actual_start > order.start):
                continue
            if running_only and job.actual_end is not None and job.actual_end < order.end:
                continue
            if any(a < order.end and b > order.start for a, b in chunks_of(job)):
                total += job.power_kw
        return total

    def status(self, db: Session, order: FlexOrder, now: datetime) -> dict:
        """Committed vs planned kW in the window, and delivered once the window is past (from the job records)."""
        planned = self.load(db, order)
        out = {
            "committed_kw": order.kw,
            "planned_kw": planned,
            "baseline_kw": (order.terms or {}).get("baseline_kw"),
            "delivered_kw": None,
            "window_past": now >= order.end,
        }
        if now >= order.end and order.status == "ACTIVE":
            ran = self.load(db, order, running_only=True)
            baseline = out["baseline_kw"] or 0.0
            out["delivered_kw"] = round(
                max(0.0, baseline - ran) if order.direction == "down" else max(0.0, ran - baseline), 3
            )
        return out


def letter(asset: Asset) -> str:
    """The asset's Octopus GSP letter."""
    return OCTOPUS_LETTER[asset.region_id]


def region_name(asset: Asset) -> str:
    """The asset's region name."""
    return region_by_id(asset.region_id).name


# ---- Beckn bookkeeping: the registry, the message log, orders by transaction ----------------------------


def public_key(db: Session, subscriber_id: str, key_id: str) -> str | None:
    """The signing public key of a known, subscribed participant."""
    from storage import BecknSubscriber

    row = db.scalar(
        select(BecknSubscriber).where(
            BecknSubscriber.subscriber_id == subscriber_id,
            BecknSubscriber.unique_key_id == key_id,
            BecknSubscriber.status == "SUBSCRIBED",
        )
    )
    return None if row is None else row.signing_public_key


def add_subscriber(
    db: Session, subscriber_id: str, key_id: str, public: str, url: str | None, now: datetime, kind: str = "BAP"
) -> None:
    """Register (or re-key) a participant; the caller commits."""
    from storage import BecknSubscriber

    row = db.scalar(
        select(BecknSubscriber).where(
            BecknSubscriber.subscriber_id == subscriber_id, BecknSubscriber.unique_key_id == key_id
        )
    )
    if row is None:
        row = BecknSubscriber(subscriber_id=subscriber_id, unique_key_id=key_id, created_at=now)
        db.add(row)
    row.signing_public_key, row.url, row.type, row.status = public, url, kind, "SUBSCRIBED"


def record_message(
    db: Session, direction: str, body: dict, now: datetime, outcome: str | None = None, action: str | None = None
) -> bool:
    """Log a message; False when an inbound message id was seen before (a replay). The caller commits."""
    from sqlalchemy.exc import IntegrityError

    from storage import BecknMessage

    context = body.get("context", {})
    row = BecknMessage(
        transaction_id=str(context.get("transaction_id")),
        message_id=str(context.get("message_id")),
        bap_id=str(context.get("bap_id")),
        action=action or str(context.get("action")),
        direction=direction,
        body=body,
        outcome=outcome,
        at=now,
    )
    try:
        with db.begin_nested():
            db.add(row)
    except IntegrityError:
        return None
    return row


def messages(db: Session, transaction_id: str) -> list:
    """Every message of a transaction, in order."""
    from storage import BecknMessage

    return list(
        db.scalars(select(BecknMessage).where(BecknMessage.transaction_id == transaction_id).order_by(BecknMessage.id))
    )


def order_of(db: Session, transaction_id: str | None = None, order_id: str | None = None) -> FlexOrder | None:
    """The newest order of a transaction, or an order by id."""
    if order_id:
        return db.get(FlexOrder, order_id)
    return db.scalar(
        select(FlexOrder).where(FlexOrder.transaction_id == transaction_id).order_by(FlexOrder.created_at.desc())
    )
