"""Many jobs on one capped asset, planned together: a MILP solved by HiGHS, with a greedy-by-regret fallback.

Pure like policy_agent (whose per-job terms it reuses): no I/O, no clock. Variables are (job, start) for
contiguous jobs and (job, half-hour) for interruptible ones; every half-hour's planned power stays within the
asset's free capacity. Each job may be limited to a set of allowed placements (the re-planner allows the
current one plus those that improve the job by more than its threshold), so a joint plan never moves a job
for the worse.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_array

import policy_agent as pa

GAP_TOLERANCE = 1e-3  # stop when proven within 0.1 % of optimal


@dataclass(frozen=True)
class FleetJob:
    """A job to place on the asset; `allowed` restricts contiguous jobs to these start indices."""

    key: Hashable
    job: pa.JobRequest
    allowed: tuple[int, ...] | None = None


@dataclass(frozen=True)
class FleetPlan:
    """Where each job runs (series indices), the objective, the bound it is proven against, and how."""

    placements: dict
    objective: float
    bound: float
    method: str  # "milp" (HiGHS) or "greedy" (regret order, HiGHS timed out)
    status: str
    unplaced: tuple

    @property
    def gap(self) -> float:
        """Relative distance to the bound (0 = proven optimal)."""
        if not np.isfinite(self.bound) or self.objective == 0:
            return 0.0 if self.objective == self.bound else float("inf")
        return max(0.0, (self.objective - self.bound) / abs(self.objective))


@dataclass
class _Model:
    """The MILP in arrays: costs, the slot indices of each variable's load, and the job each belongs to."""

    costs: list
    loads: list  # per variable: (job power, slot indices it occupies)
    assign_rows: list  # (row, var, coeff, lower, upper) for "each job exactly once" / "n half-hours"
    chunk_rows: list
    integer: list
    options: dict  # job key -> list of (var, indices)


def _options(series: pa.Series, fj: FleetJob) -> tuple[list[tuple[tuple[int, ...], float]], np.ndarray | None]:
    """Contiguous placements (indices, score) a job may take, or, for interruptible jobs, its per-slot scores."""
    job = fj.job
    kg, gbp = pa.slot_terms(series, job)
    score = pa.slot_scores(kg, gbp, job)
    if score is None:
        return [], None
    lo, hi = pa.window(series, job)
    if hi - lo < job.slots:
        return [], None
    if job.interruptible:
        values = np.full(len(score), np.inf)
        values[lo:hi] = score[lo:hi]
        return [], values
    sums = pa.contiguous_windows(kg, gbp, lo, hi, job.slots, job).scores
    starts = range(lo, hi - job.slots + 1)
    allowed = None if fj.allowed is None else set(fj.allowed)
    return [
        (tuple(range(s, s + job.slots)), float(sums[s - lo]))
        for s in starts
        if np.isfinite(sums[s - lo]) and (allowed is None or s in allowed)
    ], None


def build(series: pa.Series, jobs: list[FleetJob]) -> tuple[_Model, list]:
    """The MILP for these jobs; jobs with no placement at all are returned as unplaceable."""
    model = _Model([], [], [], [], [], {})
    unplaceable, row = [], 0
    for fj in jobs:
        options, per_slot = _options(series, fj)
        if per_slot is not None:
            row = _add_interruptible(model, fj, per_slot, row)
        elif options:
            start = len(model.costs)
            for indices, score in options:
                model.costs.append(score)
                model.loads.append((fj.job.power_kw, indices))
                model.integer.append(1)
            model.assign_rows += [(row, v, 1.0, 1.0, 1.0) for v in range(start, len(model.costs))]
            model.options[fj.key] = [(v, options[v - start][0]) for v in range(start, len(model.costs))]
            row += 1
        else:
            unplaceable.append(fj.key)
    return model, unplaceable


def _add_interruptible(model: _Model, fj: FleetJob, per_slot: np.ndarray, row: int) -> int:
    """x[t] (run in half-hour t) and y[t] (a run starts at t) with runs of at least the minimum chunk."""
    usable = [t for t in range(len(per_slot)) if np.isfinite(per_slot[t])]
    if len(usable) < fj.job.slots:
        return row
    n, m = fj.job.slots, fj.job.min_chunk_slots
    x = {}
    for t in usable:
        x[t] = len(model.costs)
        model.costs.append(float(per_slot[t]))
        model.loads.append((fj.job.power_kw, (t,)))
        model.integer.append(1)
    y = {}
    for t in usable:
        y[t] = len(model.costs)
        model.costs.append(0.0)
        model.loads.append((0.0, ()))
        model.integer.append(1)
    model.assign_rows += [(row, x[t], 1.0, n, n) for t in usable]
    for t in usable:
        # x_t - x_{t-1} - y_t <= 0: a chosen half-hour continues a run or starts one
        terms = [(x[t], 1.0), (y[t], -1.0)] + ([(x[t - 1], -1.0)] if t - 1 in x else [])
        model.chunk_rows.append((terms, -np.inf, 0.0))
        for j in range(m):
            if t + j in x:
                model.chunk_rows.append(([(x[t + j], 1.0), (y[t], -1.0)], 0.0, np.inf))
            else:
                model.chunk_rows.append(([(y[t], 1.0)], 0.0, 0.0))
    model.options[fj.key] = [(x[t], (t,)) for t in usable]
    return row + 1


def _matrices(model: _Model, slots: int, headroom: np.ndarray, floor: np.ndarray | None = None):
    n_vars = len(model.costs)
    constraints = []
    if model.assign_rows:
        rows, cols, vals, lo, hi = zip(*model.assign_rows, strict=True)
        n_rows = max(rows) + 1
        lower, upper = np.zeros(n_rows), np.zeros(n_rows)
        for r, lo_, hi_ in zip(rows, lo, hi, strict=True):
            lower[r], upper[r] = lo_, hi_
        constraints.append(
            LinearConstraint(coo_array((vals, (rows, cols)), shape=(n_rows, n_vars)).tocsr(), lower, upper)
        )
    cap_rows, cap_cols, cap_vals = [], [], []
    for var, (power, indices) in enumerate(model.loads):
        for t in indices:
            cap_rows.append(t)
            cap_cols.append(var)
            cap_vals.append(power)
    lower = np.full(slots, -np.inf) if floor is None else np.asarray(floor, dtype=float)
    constraints.append(
        LinearConstraint(coo_array((cap_vals, (cap_rows, cap_cols)), shape=(slots, n_vars)).tocsr(), lower, headroom)
    )
    if model.chunk_rows:
        rows, cols, vals, lower, upper = [], [], [], [], []
        for r, (terms, lo_, hi_) in enumerate(model.chunk_rows):
            for var, coeff in terms:
                rows.append(r)
                cols.append(var)
                vals.append(coeff)
            lower.append(lo_)
            upper.append(hi_)
        shape = (len(model.chunk_rows), n_vars)
        constraints.append(LinearConstraint(coo_array((vals, (rows, cols)), shape=shape).tocsr(), lower, upper))
    return constraints


def plan_fleet(
    series: pa.Series,
    jobs: list[FleetJob],
    headroom: np.ndarray,
    time_limit: float = 5.0,
    gap: float = GAP_TOLERANCE,
    floor: np.ndarray | None = None,
) -> FleetPlan:
    """Place every job on the asset without exceeding `headroom` (kW free per half-hour of the series), and with
    at least `floor` kW planned where a turn-up commitment asks for load.

    1. The LP relaxation gives a lower bound; in these models it is nearly integral.
    2. Jobs the LP places whole are fixed; a MILP places the rest in what is left ("relax and fix").
       If that is within `gap` of the LP bound, it is proven good enough and returned.
    3. Otherwise HiGHS solves the whole MILP; the better of the two is kept, with HiGHS' own bound.
    4. If no integer solution was found in time: greedy by regret, with its gap to the LP bound.
    The time limit is split between the steps (no clock is read here).
    """
    headroom = np.asarray(headroom, dtype=float)
    model, unplaceable = build(series, jobs)
    if not model.costs:
        return FleetPlan({}, 0.0, 0.0, "milp", "nothing to place", tuple(unplaceable))
    costs = np.asarray(model.costs)
    constraints = _matrices(model, len(series.starts), headroom, floor)
    relaxed = _solve(costs, constraints, model.integer, integer=False, time_limit=0.6 * time_limit, gap=gap)
    if relaxed.status == 2:
        keys = tuple(unplaceable) + tuple(model.options)
        return FleetPlan({}, float("inf"), float("inf"), "lp", "infeasible: the jobs cannot all fit", keys)
    if relaxed.x is None:
        return greedy_by_regret(series, jobs, headroom, model, unplaceable, costs, float("-inf"))
    bound = float(relaxed.fun)
    best = _relax_and_fix(series, jobs, headroom, model, relaxed.x, 0.2 * time_limit, gap, floor)
    if best is not None and _gap(best[1], bound) <= gap:
        return FleetPlan(best[0], best[1], bound, "lp+milp", "proven within the gap", tuple(unplaceable))
    full = _solve(costs, constraints, model.integer, integer=True, time_limit=0.2 * time_limit, gap=gap)
    if full.x is not None and full.status in (0, 1) and (best is None or full.fun < best[1]):
        dual = getattr(full, "mip_dual_bound", None)
        bound = max(bound, float(dual)) if dual is not None and np.isfinite(dual) else bound
        best = (_decode(model, full.x), float(full.fun))
    if best is not None:
        status = "proven within the gap" if _gap(best[1], bound) <= gap else "time limit, best found"
        return FleetPlan(best[0], best[1], bound, "milp", status, tuple(unplaceable))
    if floor is not None:  # greedy placement cannot promise a floor: report that nothing was found
        return FleetPlan(
            {},
            float("inf"),
            bound,
            "milp",
            "no placement honours the floor in time",
            tuple(unplaceable) + tuple(model.options),
        )
    return greedy_by_regret(series, jobs, headroom, model, unplaceable, costs, bound)


def _gap(objective: float, bound: float) -> float:
    return 0.0 if objective == bound else (objective - bound) / abs(objective) if objective else float("inf")


def _solve(costs, constraints, integrality, integer: bool, time_limit: float, gap: float):
    return milp(
        costs,
        constraints=constraints,
        integrality=np.asarray(integrality) if integer else np.zeros(len(costs)),
        bounds=Bounds(0, 1),
        options={"time_limit": max(time_limit, 0.1), "mip_rel_gap": gap, "presolve": True},
    )


def _relax_and_fix(series, jobs, headroom, model, x, time_limit, gap, floor=None) -> tuple[dict, float] | None:
    """Keep the jobs the LP placed whole; solve a small MILP for the others in the capacity left over."""
    fixed, free = {}, []
    for fj in jobs:
        options = model.options.get(fj.key)
        if options is None:
            continue
        values = [x[var] for var, _ in options]
        if all(v < 1e-6 or v > 1 - 1e-6 for v in values):
            fixed[fj.key] = tuple(sorted(t for (var, idx) in options if x[var] > 0.5 for t in idx))
        else:
            free.append(fj)
    power = {fj.key: fj.job.power_kw for fj in jobs}
    fixed_load = load_profile(len(headroom), fixed, power)
    left = headroom - fixed_load
    still_needed = None if floor is None else np.maximum(np.asarray(floor) - fixed_load, -np.inf)
    objective = sum(float(model.costs[var]) for key in fixed for var, idx in model.options[key] if x[var] > 0.5)
    if not free:
        return (fixed, objective) if still_needed is None or np.all(still_needed <= 1e-6) else None
    sub, _ = build(series, free)
    sub_costs = np.asarray(sub.costs)
    constraints = _matrices(sub, len(series.starts), left, still_needed)
    result = _solve(sub_costs, constraints, sub.integer, True, time_limit, gap / 10)
    if result.x is None or result.status not in (0, 1):
        return None
    return {**fixed, **_decode(sub, result.x)}, objective + float(result.fun)


def _decode(model: _Model, x: np.ndarray) -> dict:
    placements = {}
    for key, options in model.options.items():
        chosen = sorted(t for var, indices in options if x[var] > 0.5 for t in indices)
        placements[key] = tuple(chosen)
    return placements


def greedy_by_regret(series, jobs, headroom, model, unplaceable, costs, bound: float) -> FleetPlan:
    """Jobs with the most to lose from their second choice go first, each to its best placement that still
    fits; the gap is measured against the LP relaxation's bound."""
    free = headroom.copy()
    placements, objective, missed = {}, 0.0, list(unplaceable)
    by_key = {fj.key: fj for fj in jobs}

    def regret(key) -> float:
        scores = sorted(costs[var] for var, _ in model.options[key])
        return scores[1] - scores[0] if len(scores) > 1 else np.inf

    for key in sorted(model.options, key=regret, reverse=True):
        fj = by_key[key]
        if fj.job.interruptible:
            chosen = _greedy_interruptible(series, fj, free)
        else:
            fits = [(costs[var], idx) for var, idx in model.options[key] if np.all(free[list(idx)] >= fj.job.power_kw)]
            chosen = min(fits)[1] if fits else None
        if chosen is None:
            missed.append(key)
            continue
        free[list(chosen)] -= fj.job.power_kw
        placements[key] = tuple(chosen)
        objective += sum(costs[var] for var, idx in model.options[key] if set(idx) <= set(chosen))
    return FleetPlan(placements, objective, bound, "greedy", "HiGHS found no solution in time", tuple(missed))


def _greedy_interruptible(series: pa.Series, fj: FleetJob, free: np.ndarray) -> tuple[int, ...] | None:
    blocked = free < fj.job.power_kw - 1e-9
    best, _, _, _ = pa.plan_region(series, fj.job, np.where(blocked, 0.0, np.inf))
    return None if best is None else best.indices


def load_profile(slots: int, placements: dict, power: dict) -> np.ndarray:
    """Planned kW per half-hour from placements (job key -> indices) and each job's power."""
    load = np.zeros(slots)
    for key, indices in placements.items():
        load[list(indices)] += power[key]
    return load
