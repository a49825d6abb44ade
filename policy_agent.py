"""The optimiser: pure functions from (half-hourly series, job) to the best placement, its baseline and savings.

No I/O and no clock: everything it needs is an argument, so the same inputs always give the same plan.

Terms used in explanations (named like the penalties of an OR model):
- `carbon_kg`   = energy_kwh × carbon_g_per_kwh / 1000 per half-hour
- `cost_gbp`    = energy_kwh × price_p_per_kwh / 100 per half-hour
- `carbon_cost` = carbon_kg × carbon price (£/t) / 1000, used only by the `balanced` objective
- the score minimised: `carbon` → carbon_kg; `cost` → cost_gbp; `balanced` → cost_gbp + carbon_cost;
  caps (`carbon_cap_kg`, `cost_cap_gbp`) are hard constraints on any objective.

Exact methods: contiguous jobs scan every half-hour-aligned start with prefix sums (O(N)); interruptible
jobs use a dynamic programme over (half-hour, slots chosen) that respects the minimum chunk length, or,
when a cap makes the choice a constrained selection, a MILP solved to optimality by HiGHS.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import cached_property

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

SLOT = timedelta(minutes=30)
SLOT_HOURS = 0.5
OBJECTIVES = ("carbon", "cost", "balanced")
DEFAULT_CARBON_PRICE_GBP_PER_TONNE = 100.0  # a policy default, not data: set CARBON_PRICE_GBP_PER_TONNE
EPS = 1e-9  # scores closer than this are ties (prefix-sum rounding), and ties go to the earliest start


@dataclass(frozen=True)
class Series:
    """One region's consecutive half-hours: carbon (g/kWh), price (p/kWh or None) and their provenance."""

    region: str
    starts: tuple[datetime, ...]
    carbon: tuple[float, ...]
    price: tuple[float | None, ...]
    carbon_kinds: tuple[str, ...] = ()
    price_sources: tuple[str | None, ...] = ()

    @property
    def end(self) -> datetime | None:
        """End of the last half-hour."""
        return self.starts[-1] + SLOT if self.starts else None

    @cached_property
    def carbon_array(self) -> np.ndarray:
        """Carbon intensity as an array (computed once per series)."""
        return np.asarray(self.carbon, dtype=float)

    @cached_property
    def price_array(self) -> np.ndarray | None:
        """Prices as an array, or None when any half-hour has no price."""
        if any(p is None for p in self.price):
            return None
        return np.asarray(self.price, dtype=float)


@dataclass(frozen=True)
class JobRequest:
    """What the optimiser needs to know about a job."""

    duration_minutes: int
    power_kw: float
    earliest_start: datetime
    deadline: datetime
    pue: float = 1.2
    interruptible: bool = False
    min_chunk_minutes: int = 30
    objective: str = "carbon"
    carbon_cap_kg: float | None = None
    cost_cap_gbp: float | None = None
    inference_count: int | None = None
    carbon_price_gbp_per_tonne: float = DEFAULT_CARBON_PRICE_GBP_PER_TONNE

    @property
    def slots(self) -> int:
        """Duration in half-hours, rounded up."""
        return math.ceil(self.duration_minutes / 30)

    @property
    def min_chunk_slots(self) -> int:
        """Minimum run length in half-hours (rounded up); the whole job when not interruptible."""
        return self.slots if not self.interruptible else max(1, math.ceil(self.min_chunk_minutes / 30))

    @property
    def energy_per_slot_kwh(self) -> float:
        """Facility energy per half-hour: IT power × PUE × 0.5 h."""
        return self.power_kw * self.pue * SLOT_HOURS


@dataclass(frozen=True)
class Infeasible:
    """Why no placement exists: the failing constraint (a job field), by how much, and in words."""

    constraint: str
    message: str
    shortfall: float | None = None
    unit: str | None = None
    per_region: dict[str, str] = field(default_factory=dict)

    feasible = False

    def as_dict(self) -> dict:
        """The infeasibility as the API reports it."""
        return {
            "constraint": self.constraint,
            "message": self.message,
            "shortfall": self.shortfall,
            "unit": self.unit,
            "per_region": self.per_region,
        }


@dataclass(frozen=True)
class Totals:
    """Energy, carbon and cost of a set of half-hours (cost None where a price is missing)."""

    energy_kwh: float
    carbon_kg: float
    cost_gbp: float | None

    def as_dict(self) -> dict:
        return {
            "energy_kwh": round(self.energy_kwh, 6),
            "carbon_kg": round(self.carbon_kg, 6),
            "cost_gbp": None if self.cost_gbp is None else round(self.cost_gbp, 6),
        }


@dataclass(frozen=True)
class Candidate:
    """One considered placement: region, chosen slot indices and its score."""

    region: str
    indices: tuple[int, ...]
    score: float
    totals: Totals


@dataclass(frozen=True)
class Plan:
    """The chosen placement with its totals, baseline, savings and explanation."""

    region: str
    chunks: tuple[tuple[datetime, datetime], ...]
    totals: Totals
    baseline_region: str
    baseline_start: datetime
    baseline: Totals
    explanation: dict
    duration_slots: int
    inference_count: int | None = None

    feasible = True

    @property
    def start(self) -> datetime:
        """Start of the first chunk."""
        return self.chunks[0][0]

    @property
    def end(self) -> datetime:
        """End of the last chunk."""
        return self.chunks[-1][1]

    def savings(self) -> dict:
        """Baseline minus plan in kg, £ and %, and per inference when an inference count is known."""
        carbon = self.baseline.carbon_kg - self.totals.carbon_kg
        cost = None
        if self.baseline.cost_gbp is not None and self.totals.cost_gbp is not None:
            cost = self.baseline.cost_gbp - self.totals.cost_gbp
        out = {
            "carbon_kg": round(carbon, 6),
            "cost_gbp": None if cost is None else round(cost, 6),
            "carbon_pct": _pct(carbon, self.baseline.carbon_kg),
            "cost_pct": None if cost is None else _pct(cost, self.baseline.cost_gbp),
        }
        if self.inference_count:
            out["carbon_g_per_inference"] = round(carbon * 1000 / self.inference_count, 9)
            out["cost_gbp_per_inference"] = None if cost is None else round(cost / self.inference_count, 12)
        return out


def _pct(part: float, whole: float | None) -> float | None:
    if not whole:
        return None
    return round(100 * part / whole, 3)


# ---- per-slot terms --------------------------------------------------------------------------------


def slot_terms(series: Series, job: JobRequest) -> tuple[np.ndarray, np.ndarray | None]:
    """Per half-hour carbon_kg and cost_gbp (None when any price in the series is missing)."""
    energy = job.energy_per_slot_kwh
    prices = series.price_array
    return series.carbon_array * (energy / 1000), None if prices is None else prices * (energy / 100)


def slot_scores(kg: np.ndarray, gbp: np.ndarray | None, job: JobRequest) -> np.ndarray | None:
    """The per half-hour score the objective minimises (None when it needs prices that are missing)."""
    if job.objective == "carbon":
        return kg
    if gbp is None:
        return None
    if job.objective == "cost":
        return gbp
    return gbp + kg * job.carbon_price_gbp_per_tonne / 1000


def window(series: Series, job: JobRequest) -> tuple[int, int]:
    """Index range [lo, hi) of half-hours the job may use: from earliest start to deadline, within the data."""
    lo = bisect_left(series.starts, job.earliest_start)
    hi = bisect_right(series.starts, job.deadline - SLOT)
    return lo, max(lo, hi)


# ---- exact single-region solvers ----------------------------------------------------------------------


def contiguous_sums(values: np.ndarray, lo: int, hi: int, n: int) -> np.ndarray:
    """Sum of every n-long window starting at lo..hi-n, by prefix sums (O(N))."""
    prefix = np.empty(hi - lo + 1)
    prefix[0] = 0.0
    np.cumsum(values[lo:hi], out=prefix[1:])
    return prefix[n:] - prefix[:-n]


@dataclass(frozen=True)
class Windows:
    """Every n-long contiguous window from `lo`: its score, carbon and cost (score inf = excluded by a cap)."""

    lo: int
    n: int
    scores: np.ndarray
    kg: np.ndarray
    gbp: np.ndarray | None

    def candidate(self, region: str, i: int, energy_per_slot: float) -> Candidate:
        """The i-th window as a Candidate."""
        totals = Totals(energy_per_slot * self.n, float(self.kg[i]), None if self.gbp is None else float(self.gbp[i]))
        return Candidate(region, tuple(range(self.lo + i, self.lo + i + self.n)), float(self.scores[i]), totals)

    def ranked(self, count: int) -> list[int]:
        """Indices of the `count` best feasible windows: the best first (ties to the earliest), then by score."""
        lowest = self.scores[np.argmin(self.scores)]
        if not np.isfinite(lowest):
            return []
        best = int(np.argmax(self.scores <= lowest + EPS))  # the first of any ties
        if count == 1:
            return [best]
        order = np.argsort(self.scores, kind="stable")[: count + 1]
        rest = [int(i) for i in order if i != best and np.isfinite(self.scores[i])]
        return [best, *rest][:count]

    @property
    def feasible(self) -> int:
        """How many windows respect every cap."""
        return int(np.isfinite(self.scores).sum())


def contiguous_windows(kg, gbp, lo, hi, n, job: JobRequest, blocked: np.ndarray | None = None) -> Windows:
    """Score, carbon and cost of every n-long window in [lo, hi), caps and full half-hours excluded (O(N))."""
    kg_sums = contiguous_sums(kg, lo, hi, n)
    gbp_sums = None if gbp is None else contiguous_sums(gbp, lo, hi, n)
    if job.objective == "carbon":
        scores = kg_sums.copy()
    elif job.objective == "cost":
        scores = gbp_sums.copy()
    else:
        scores = gbp_sums + kg_sums * (job.carbon_price_gbp_per_tonne / 1000)
    if job.carbon_cap_kg is not None:
        scores[kg_sums > job.carbon_cap_kg + EPS] = np.inf
    if job.cost_cap_gbp is not None and gbp_sums is not None:
        scores[gbp_sums > job.cost_cap_gbp + EPS] = np.inf
    if blocked is not None:
        scores[contiguous_sums(blocked.astype(float), lo, hi, n) > 0] = np.inf
    return Windows(lo, n, scores, kg_sums, gbp_sums)


def best_interruptible(score: np.ndarray, n: int, m: int) -> tuple[int, ...] | None:
    """Exact best n half-hours of `score` in runs of at least m (dynamic programme, no caps)."""
    length = len(score)
    if length < n:
        return None
    prefix = np.concatenate(([0.0], np.cumsum(score)))
    inf = np.inf
    # best[i, k]: lowest score with k half-hours chosen among the first i, half-hour i-1 not chosen (or i == 0)
    best = np.full((length + 2, n + 1), inf)
    best[0, 0] = 0.0
    parent: dict[tuple[int, int], tuple[int, int, int]] = {}  # (state i, k) -> (from i, chunk start, chunk len)
    final = np.full(n + 1, inf)
    final_parent: dict[int, tuple[int, int, int]] = {}
    for i in range(length + 1):
        row = best[i]
        if not np.isfinite(row).any():
            continue
        if i == length:
            better = row < final - EPS
            for k in np.flatnonzero(better):
                final[k], final_parent[int(k)] = row[k], (i, i, 0)
            continue
        # leave half-hour i idle
        better = row < best[i + 1] - EPS
        for k in np.flatnonzero(better):
            best[i + 1, k], parent[(i + 1, int(k))] = row[k], (i, i, 0)
        # run half-hours i .. j-1 (at least m), then j idle (or the window ends)
        for j in range(i + m, min(length, i + n) + 1):
            run = j - i
            if run > n:
                break
            cost = prefix[j] - prefix[i]
            cand = row[: n + 1 - run] + cost
            if j == length:
                target, tgt_parent, shift = final, final_parent, run
                better = cand < target[shift:] - EPS
                for k in np.flatnonzero(better):
                    target[k + shift] = cand[k]
                    tgt_parent[int(k + shift)] = (i, i, run)
            else:
                target = best[j + 1]
                better = cand < target[run:] - EPS
                for k in np.flatnonzero(better):
                    target[k + run] = cand[k]
                    parent[(j + 1, int(k + run))] = (i, i, run)
    if not np.isfinite(final[n]):
        return None
    chosen: list[int] = []
    i, start, run = final_parent[n]
    k = n
    while True:
        chosen.extend(range(start, start + run))
        k -= run
        if i == 0 and k == 0:
            break
        i, start, run = parent[(i, k)]
    return tuple(sorted(chosen))


def best_interruptible_capped(
    score, kg, gbp, n: int, m: int, job: JobRequest, blocked: np.ndarray | None = None
) -> tuple[int, ...] | None:
    """Exact best n half-hours in runs of at least m under carbon/cost caps: a MILP solved by HiGHS."""
    length = len(score)
    if length < n:
        return None
    # variables: x[0..L) chosen, y[0..L) a run starts here
    c = np.concatenate([score, np.zeros(length)])
    rows, lower, upper = [], [], []

    def add(coeffs: dict[int, float], lo: float, hi: float) -> None:
        row = np.zeros(2 * length)
        for index, value in coeffs.items():
            row[index] = value
        rows.append(row)
        lower.append(lo)
        upper.append(hi)

    add(dict.fromkeys(range(length), 1.0), n, n)
    for t in range(length):
        # a chosen half-hour either continues a run or starts one: x_t - x_{t-1} - y_t <= 0
        coeffs = {t: 1.0, length + t: -1.0}
        if t > 0:
            coeffs[t - 1] = -1.0
        add(coeffs, -np.inf, 0)
        for j in range(m):
            if t + j < length:
                add({t + j: 1.0, length + t: -1.0}, 0, np.inf)  # a run that starts at t lasts m
            else:
                add({length + t: 1.0}, 0, 0)  # no run may start too close to the end
    if job.carbon_cap_kg is not None:
        add({t: float(kg[t]) for t in range(length)}, -np.inf, job.carbon_cap_kg)
    if job.cost_cap_gbp is not None and gbp is not None:
        add({t: float(gbp[t]) for t in range(length)}, -np.inf, job.cost_cap_gbp)
    upper_bounds = np.ones(2 * length)
    if blocked is not None:
        upper_bounds[:length][blocked] = 0  # a full half-hour cannot be used
    result = milp(
        c,
        constraints=LinearConstraint(np.array(rows), lower, upper),
        integrality=np.ones(2 * length),
        bounds=Bounds(0, upper_bounds),
        options={"mip_rel_gap": 0, "time_limit": 20},
    )
    if result.status != 0 or result.x is None:
        return None
    return tuple(int(t) for t in np.flatnonzero(result.x[:length] > 0.5))


# ---- planning over regions --------------------------------------------------------------------------


def totals_of(indices, kg: np.ndarray, gbp: np.ndarray | None, job: JobRequest) -> Totals:
    """Energy, carbon and cost of the chosen half-hours."""
    idx = list(indices)
    return Totals(
        energy_kwh=job.energy_per_slot_kwh * len(idx),
        carbon_kg=float(kg[idx].sum()),
        cost_gbp=None if gbp is None else float(gbp[idx].sum()),
    )


def to_chunks(series: Series, indices) -> tuple[tuple[datetime, datetime], ...]:
    """Consecutive half-hours merged into [start, end) runs."""
    chunks: list[list[datetime]] = []
    for i in sorted(indices):
        start = series.starts[i]
        if chunks and chunks[-1][1] == start:
            chunks[-1][1] = start + SLOT
        else:
            chunks.append([start, start + SLOT])
    return tuple((a, b) for a, b in chunks)


def _infeasible_window(series: Series, job: JobRequest, lo: int, hi: int) -> Infeasible:
    n = job.slots
    short_minutes = (n - (hi - lo)) * 30
    data_end = series.end
    if data_end is not None and data_end < job.deadline and (lo == len(series.starts) or hi == len(series.starts)):
        return Infeasible(
            "deadline",
            f"the data for region {series.region} ends at {data_end:%Y-%m-%d %H:%M}Z; the job needs "
            f"{short_minutes} more minutes of data before its deadline",
            shortfall=short_minutes,
            unit="minutes",
        )
    return Infeasible(
        "deadline",
        f"the deadline leaves {(hi - lo) * 30} minutes after the earliest start; the job needs {n * 30} "
        f"(deadline {short_minutes} minutes too early)",
        shortfall=short_minutes,
        unit="minutes",
    )


def _cap_infeasible(kg, gbp, lo, hi, job: JobRequest, region: str) -> Infeasible:
    """Name the cap that cannot be met and by how much (the lowest attainable value vs the cap)."""
    n, m = job.slots, job.min_chunk_slots
    for name, values, cap, unit in (
        ("carbon_cap_kg", kg, job.carbon_cap_kg, "kg"),
        ("cost_cap_gbp", gbp, job.cost_cap_gbp, "GBP"),
    ):
        if cap is None or values is None:
            continue
        if job.interruptible:
            best = best_interruptible(values[lo:hi], n, m)
            lowest = float(values[lo:hi][list(best)].sum()) if best else math.inf
        else:
            lowest = float(contiguous_sums(values, lo, hi, n).min())
        if lowest > cap + EPS:
            return Infeasible(
                name,
                f"region {region}: the lowest attainable is {lowest:.4f} {unit}, above the cap of {cap} {unit}",
                shortfall=round(lowest - cap, 6),
                unit=unit,
            )
    return Infeasible(
        "carbon_cap_kg",
        f"region {region}: the carbon cap and the cost cap cannot both be met by one placement",
        unit="kg",
    )


RUNNERS_UP = 3


def plan_region(
    series: Series, job: JobRequest, headroom: np.ndarray | None = None
) -> tuple[Candidate | None, list[Candidate], int, Infeasible | None]:
    """The best placement in one region, its best contiguous alternatives, how many were feasible, or why none.

    `headroom` (kW per half-hour of the series) is what an asset's cap leaves free; half-hours with less than
    the job's power cannot be used.
    """
    kg, gbp = slot_terms(series, job)
    score = slot_scores(kg, gbp, job)
    needs_prices = job.objective != "carbon" or job.cost_cap_gbp is not None
    if score is None or (needs_prices and gbp is None):
        why = Infeasible(
            "objective",
            f"region {series.region} has no prices for every half-hour, so '{job.objective}'"
            " or a cost cap cannot be evaluated there",
        )
        return None, [], 0, why
    lo, hi = window(series, job)
    n = job.slots
    if hi - lo < n:
        return None, [], 0, _infeasible_window(series, job, lo, hi)
    blocked = None if headroom is None else np.asarray(headroom) < job.power_kw - 1e-9
    windows = contiguous_windows(kg, gbp, lo, hi, n, job, blocked)
    energy = job.energy_per_slot_kwh
    ranked = [windows.candidate(series.region, i, energy) for i in windows.ranked(RUNNERS_UP + 1)]
    if job.interruptible:
        chosen = _best_interruptible_in(score, kg, gbp, lo, hi, job, blocked)
        if chosen is None:
            return None, ranked, 0, _why_not(series, job, headroom, kg, gbp, lo, hi)
        indices = tuple(lo + i for i in chosen)
        best = Candidate(series.region, indices, float(score[list(indices)].sum()), totals_of(indices, kg, gbp, job))
        return best, [c for c in ranked if c.indices != indices], windows.feasible + 1, None
    if not ranked:
        return None, [], 0, _why_not(series, job, headroom, kg, gbp, lo, hi)
    return ranked[0], ranked[1:], windows.feasible, None


BIG = 1e12  # a score no real half-hour reaches: marks full half-hours for the dynamic programme


def _best_interruptible_in(score, kg, gbp, lo, hi, job: JobRequest, blocked) -> tuple[int, ...] | None:
    """Best interruptible set in [lo, hi) avoiding blocked half-hours (relative indices), or None."""
    n, m = job.slots, job.min_chunk_slots
    part = None if blocked is None else blocked[lo:hi]
    if job.carbon_cap_kg is not None or job.cost_cap_gbp is not None:
        return best_interruptible_capped(score[lo:hi], kg[lo:hi], None if gbp is None else gbp[lo:hi], n, m, job, part)
    values = score[lo:hi] if part is None else np.where(part, BIG, score[lo:hi])
    chosen = best_interruptible(values, n, m)
    if chosen is None or (part is not None and part[list(chosen)].any()):
        return None
    return chosen


def _why_not(series: Series, job: JobRequest, headroom, kg, gbp, lo, hi) -> Infeasible:
    """Capacity when the job would fit without the asset's other load, else the cap that cannot be met."""
    if headroom is not None and plan_region(series, job)[0] is not None:
        free = float(np.min(np.asarray(headroom)[lo:hi])) if hi > lo else 0.0
        return Infeasible(
            "capacity",
            f"region {series.region}: the asset has too little free power between the earliest start and the "
            f"deadline for {job.power_kw} kW over {job.slots * 30} minutes (as little as {max(free, 0):.1f} kW free)",
            shortfall=round(job.power_kw - max(free, 0.0), 6),
            unit="kW",
        )
    return _cap_infeasible(kg, gbp, lo, hi, job, series.region)


def plan(job: JobRequest, regions: list[Series], headroom: dict[str, np.ndarray] | None = None) -> Plan | Infeasible:
    """The best (region, placement) among the allowed regions, with baseline, savings and explanation.

    `headroom` maps a region to the free power (kW) per half-hour of its series, where an asset's cap applies.
    """
    if not regions:
        return Infeasible("regions", "no region to plan in")
    headroom = headroom or {}
    results = [(series, *plan_region(series, job, headroom.get(series.region))) for series in regions]
    feasible = [(series, best, others, count) for series, best, others, count, _ in results if best is not None]
    reasons = {series.region: why.message for series, _, _, _, why in results if why is not None}
    if not feasible:
        first = results[0][4]
        return Infeasible(first.constraint, first.message, first.shortfall, first.unit, per_region=reasons)
    # lowest score wins; ties go to the earliest start, then to the earlier-listed region
    order = {series.region: i for i, series in enumerate(regions)}
    lowest = min(f[1].score for f in feasible)
    tied = [f for f in feasible if f[1].score <= lowest + EPS]
    series, best, _, _ = min(tied, key=lambda f: (f[0].starts[f[1].indices[0]], order[f[0].region]))
    explanation = explain(
        job, series, best, feasible, {s.region: s for s in regions}, reasons, headroom.get(series.region)
    )
    return assemble(job, regions, series, best, explanation)


def assemble(job: JobRequest, regions: list[Series], series: Series, best: Candidate, explanation: dict):
    """The Plan for a chosen placement, with its baseline: the job run at its earliest start in the first
    allowed region (Infeasible if the data does not reach that far)."""
    baseline_series = regions[0]
    lo, _ = window(baseline_series, job)
    if lo + job.slots > len(baseline_series.starts):
        return Infeasible(
            "deadline", f"no data to run the job at its earliest start in region {baseline_series.region}"
        )
    return Plan(
        region=series.region,
        chunks=to_chunks(series, best.indices),
        totals=best.totals,
        baseline_region=baseline_series.region,
        baseline_start=baseline_series.starts[lo],
        baseline=totals_of(range(lo, lo + job.slots), *slot_terms(baseline_series, job), job),
        explanation=explanation,
        duration_slots=job.slots,
        inference_count=job.inference_count,
    )


def explain(
    job: JobRequest, series: Series, best: Candidate, feasible, series_by_region, reasons, headroom=None
) -> dict:
    """Why this placement: the score terms, the binding constraint, three runners-up, and the inputs used."""
    alternatives = [
        c for _, _, others, _ in feasible for c in others if (c.region, c.indices) != (best.region, best.indices)
    ]
    alternatives += [b for _, b, _, _ in feasible if b is not best]
    alternatives.sort(key=lambda c: (round(c.score / EPS) * EPS, series_by_region[c.region].starts[c.indices[0]]))
    considered = sum(count for _, _, _, count in feasible)
    runners_up = [
        {
            "region": c.region,
            "start": series_by_region[c.region].starts[c.indices[0]],
            "end": series_by_region[c.region].starts[c.indices[-1]] + SLOT,
            "contiguous": len(c.indices) == c.indices[-1] - c.indices[0] + 1,
            "score": round(c.score, 6),
            **c.totals.as_dict(),
        }
        for c in _distinct(alternatives)[:3]
    ]
    chosen = list(best.indices)
    kinds = [series.carbon_kinds[i] for i in chosen] if series.carbon_kinds else []
    sources = [series.price_sources[i] for i in chosen] if series.price_sources else []
    rounded = job.slots * 30
    return {
        "objective": job.objective,
        "score_terms": _score_terms(job),
        "score": round(best.score, 6),
        "binding_constraint": binding_constraint(job, series, best, headroom),
        "why": _why(job, best, considered),
        "runners_up": runners_up,
        "inputs": {
            "carbon": {kind: kinds.count(kind) for kind in sorted(set(kinds))},
            "price": {(src or "missing"): sources.count(src) for src in sorted(set(sources), key=str)},
        },
        "duration": {
            "requested_minutes": job.duration_minutes,
            "planned_minutes": rounded,
            "rounded_up": rounded != job.duration_minutes,
        },
        "carbon_price_gbp_per_tonne": job.carbon_price_gbp_per_tonne if job.objective == "balanced" else None,
        "regions_excluded": reasons,
    }


def _distinct(candidates: list[Candidate]) -> list[Candidate]:
    seen, out = set(), []
    for c in candidates:
        key = (c.region, c.indices)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def _score_terms(job: JobRequest) -> list[str]:
    terms = {"carbon": ["carbon_kg"], "cost": ["cost_gbp"], "balanced": ["cost_gbp", "carbon_cost"]}[job.objective]
    caps = [f"carbon_kg <= {job.carbon_cap_kg}"] if job.carbon_cap_kg is not None else []
    caps += [f"cost_gbp <= {job.cost_cap_gbp}"] if job.cost_cap_gbp is not None else []
    return terms + [f"subject to {c}" for c in caps]


def _why(job: JobRequest, best: Candidate, considered: int) -> str:
    measure = {"carbon": "total carbon", "cost": "total cost", "balanced": "cost plus carbon cost"}[job.objective]
    shape = "set of half-hours" if job.interruptible else "window"
    caps = " within the caps" if job.carbon_cap_kg is not None or job.cost_cap_gbp is not None else ""
    return f"lowest {measure}{caps} among {considered} candidate placements; this {shape} scores {best.score:.4f}"


def binding_cap(job: JobRequest, series: Series) -> str | None:
    """The cap that changed the choice: the uncapped best placement would break it."""
    if job.carbon_cap_kg is None and job.cost_cap_gbp is None:
        return None
    free = plan_region(series, replace(job, carbon_cap_kg=None, cost_cap_gbp=None))[0]
    if free is None:
        return None
    if job.carbon_cap_kg is not None and free.totals.carbon_kg > job.carbon_cap_kg + EPS:
        return "carbon_cap_kg"
    if (
        job.cost_cap_gbp is not None
        and free.totals.cost_gbp is not None
        and free.totals.cost_gbp > job.cost_cap_gbp + EPS
    ):
        return "cost_cap_gbp"
    return None


def binding_constraint(job: JobRequest, series: Series, best: Candidate, headroom=None) -> str:
    """Which constraint shaped the choice: the asset's capacity, a cap, the deadline, the earliest start, or none."""
    if headroom is not None:
        free = plan_region(series, job)[0]
        if free is not None and free.score < best.score - EPS:
            return "capacity"  # alone on the asset it would have run elsewhere, more cheaply
    cap = binding_cap(job, series)
    if cap:
        return cap
    lo, hi = window(series, job)
    if best.indices[-1] == hi - 1:
        data_limited = series.end is not None and series.end < job.deadline and hi == len(series.starts)
        return "data_horizon" if data_limited else "deadline"
    if best.indices[0] == lo:
        return "earliest_start"
    return "none"


# ---- negotiation ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CounterOffer:
    """What the job would have to change (`changes`, in job-field terms) to be placed, and the plan it gets."""

    kind: str  # later_deadline | interruptible | other_region | lowest_carbon | lowest_cost
    changes: dict
    plan: Plan
    regions: tuple[str, ...]


def counter_offers(
    job: JobRequest,
    allowed: list[Series],
    others: list[Series] = (),
    headroom: dict[str, np.ndarray] | None = None,
) -> list[CounterOffer]:
    """Placements the planner can offer when `job` cannot be placed as asked, each with its savings.

    - later_deadline: the earliest deadline (on a half-hour) at which the job fits;
    - interruptible: the same job allowed to run in half-hour chunks;
    - other_region: the best region outside the allowed list (it relaxes data residency);
    - lowest_carbon / lowest_cost: with the unattainable cap replaced by the lowest attainable value.
    """
    offers: list[CounterOffer] = []
    keys = tuple(s.region for s in allowed)
    deadline = _earliest_feasible_deadline(job, allowed, headroom)
    if deadline is not None:
        offers.append(
            CounterOffer(
                "later_deadline", {"deadline": deadline}, plan(replace(job, deadline=deadline), allowed, headroom), keys
            )
        )
    if not job.interruptible:
        chunked = plan(replace(job, interruptible=True, min_chunk_minutes=30), allowed, headroom)
        if chunked.feasible:
            offers.append(
                CounterOffer("interruptible", {"interruptible": True, "min_chunk_minutes": 30}, chunked, keys)
            )
    best_other = min(
        (p for p in (plan(job, [series]) for series in others) if p.feasible),
        key=lambda p: (p.explanation["score"], p.start),
        default=None,
    )
    if best_other is not None:
        offers.append(CounterOffer("other_region", {"regions": [best_other.region]}, best_other, (best_other.region,)))
    for cap, objective, kind in (("carbon_cap_kg", "carbon", "lowest_carbon"), ("cost_cap_gbp", "cost", "lowest_cost")):
        if getattr(job, cap) is None:
            continue
        relaxed = plan(replace(job, objective=objective, carbon_cap_kg=None, cost_cap_gbp=None), allowed, headroom)
        if relaxed.feasible:
            attained = relaxed.totals.carbon_kg if cap == "carbon_cap_kg" else relaxed.totals.cost_gbp
            new_cap = math.ceil(attained * 1000) / 1000  # to the gram / tenth of a penny, rounded up
            offers.append(CounterOffer(kind, {cap: new_cap}, relaxed, keys))
    return offers


def _earliest_feasible_deadline(job: JobRequest, allowed: list[Series], headroom) -> datetime | None:
    """The first half-hour boundary after the deadline at which the job fits (feasibility grows with it)."""
    ends = sorted({s + SLOT for series in allowed for s in series.starts if s + SLOT > job.deadline})
    if not ends or not plan(replace(job, deadline=ends[-1]), allowed, headroom).feasible:
        return None
    lo, hi = 0, len(ends) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if plan(replace(job, deadline=ends[mid]), allowed, headroom).feasible:
            hi = mid
        else:
            lo = mid + 1
    return ends[lo]


def plan_for(job: JobRequest, regions: list[Series], region: str, indices: tuple[int, ...], why: str) -> Plan:
    """A Plan for a placement chosen elsewhere (the fleet planner), with the usual baseline and totals."""
    series = next(s for s in regions if s.region == region)
    kg, gbp = slot_terms(series, job)
    score = slot_scores(kg, gbp, job)
    chosen = Candidate(region, tuple(indices), float(score[list(indices)].sum()), totals_of(indices, kg, gbp, job))
    alone = plan_region(series, job)[0]
    explanation = explain(job, series, chosen, [(series, chosen, [], 1)], {s.region: s for s in regions}, {})
    explanation["why"] = why
    explanation["binding_constraint"] = "capacity" if alone and alone.score < chosen.score - EPS else "none"
    return assemble(job, regions, series, chosen, explanation)
