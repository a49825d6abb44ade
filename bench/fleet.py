"""The fleet planner on real 2023 data: many jobs on one site whose power cap binds.

Seeded job mix: durations 30 min-8 h, deadlines 4-36 h after submission (never shorter than the job), power
5-50 kW, all submitted at 17:00 UTC on a 2023 day; national carbon intensity (final forecast) and Agile J
prices; objective least carbon. The site's cap is set to bind: CAP_FACTOR (2) x the mean load the jobs would need over
36 h. Prints time, gap, carbon and cost against (a) every job at its earliest start and (b) every job planned
alone, and how far (b) breaks the cap.

    python bench/fleet.py [JOBS ...] [--cap-factor F]     (default: 1000 10000, F = 2)
"""

from __future__ import annotations

import random
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import fleet  # noqa: E402
import policy_agent as pa  # noqa: E402
from api_clients import shared_recorded_source  # noqa: E402
from timeutil import SLOT, UTC  # noqa: E402

SEED = 2023
T0 = datetime(2023, 6, 14, 17, 0, tzinfo=UTC)
HORIZON = timedelta(hours=36)
CAP_FACTOR = 2.0  # the cap is twice the mean load the jobs need over the horizon: jobs planned alone break it
LIMITS = {1000: (5.0, 0.001), 10000: (30.0, 0.01)}  # time limit (s) and gap target per size


def real_series() -> pa.Series:
    """36 h of national carbon (2023) with Agile J prices from T0."""
    recorded = shared_recorded_source()
    carbon = recorded.national.between(T0, T0 + HORIZON)
    prices = {p.start: p.value_inc_vat for p in recorded._prices["J"].between(T0, T0 + HORIZON)}
    return pa.Series(
        "national",
        tuple(s.start for s in carbon),
        tuple(float(s.forecast) for s in carbon),
        tuple(prices[s.start] for s in carbon),
    )


def job_mix(count: int, rng: random.Random) -> list[fleet.FleetJob]:
    """Seeded jobs submitted at T0."""
    jobs = []
    scale = 1000 / count  # same total load whatever the count, so the cap binds alike
    for i in range(count):
        slots = rng.randint(1, 16)
        deadline_h = rng.uniform(max(4.0, slots / 2), 36.0)
        job = pa.JobRequest(
            duration_minutes=slots * 30,
            power_kw=round(rng.uniform(5, 50) * scale, 3),
            pue=1.2,
            earliest_start=T0,
            deadline=T0 + timedelta(hours=deadline_h),
            objective="carbon",
        )
        jobs.append(fleet.FleetJob(i, job))
    return jobs


def totals(series: pa.Series, jobs: list[fleet.FleetJob], placements: dict) -> tuple[float, float, np.ndarray]:
    """kg CO2, GBP and the load profile of a set of placements."""
    kg = gbp = 0.0
    load = np.zeros(len(series.starts))
    for fj in jobs:
        indices = list(placements[fj.key])
        k, g = pa.slot_terms(series, fj.job)
        kg += float(k[indices].sum())
        gbp += float(g[indices].sum())
        load[indices] += fj.job.power_kw
    return kg, gbp, load


def run(count: int, cap_factor: float = CAP_FACTOR) -> None:
    """One fleet size: solve, then compare with the two simple strategies."""
    series = real_series()
    jobs = job_mix(count, random.Random(SEED + count))
    energy = sum(fj.job.power_kw * fj.job.slots * 0.5 for fj in jobs)
    cap = round(cap_factor * energy / (HORIZON / SLOT * 0.5), 1)
    headroom = np.full(len(series.starts), cap)
    limit, target = LIMITS.get(count, (30.0, 0.01))

    started = time.perf_counter()
    result = fleet.plan_fleet(series, jobs, headroom, time_limit=limit, gap=target)
    seconds = time.perf_counter() - started

    earliest = {fj.key: tuple(range(fj.job.slots)) for fj in jobs}
    alone = {fj.key: pa.plan_region(series, fj.job)[0].indices for fj in jobs}
    ours_kg, ours_gbp, ours_load = totals(series, jobs, result.placements)
    a_kg, a_gbp, a_load = totals(series, jobs, earliest)
    b_kg, b_gbp, b_load = totals(series, jobs, alone)
    over = np.maximum(b_load - cap, 0)

    print(f"\n{count} jobs on one site, cap {cap:.1f} kW, {len(series.starts)} half-hours from {T0:%Y-%m-%d %H:%M}Z")
    print(
        f"  solver: {result.method} ({result.status}), {seconds:.2f} s, gap {100 * result.gap:.3f} % "
        f"(target {100 * target:.1f} % within {limit:.0f} s), {len(result.unplaced)} unplaced"
    )
    print(f"  ours (joint, within cap):     {ours_kg:12.1f} kg CO2  £{ours_gbp:11.2f}  peak {ours_load.max():8.1f} kW")
    print(f"  (a) all at earliest start:    {a_kg:12.1f} kg CO2  £{a_gbp:11.2f}  peak {a_load.max():8.1f} kW")
    print(f"  (b) each planned alone:       {b_kg:12.1f} kg CO2  £{b_gbp:11.2f}  peak {b_load.max():8.1f} kW")
    print(
        f"  ours vs (a): carbon {100 * (ours_kg / a_kg - 1):+.1f} %, cost {100 * (ours_gbp / a_gbp - 1):+.1f} % "
        f"(but (a) peaks at {a_load.max() / cap:.1f}x the cap)"
    )
    print(
        f"  ours vs (b): carbon {100 * (ours_kg / b_kg - 1):+.1f} %, cost {100 * (ours_gbp / b_gbp - 1):+.1f} %: "
        f"the price of respecting the cap"
    )
    print(
        f"  (b) breaks the cap in {int((over > 0).sum())} of {len(over)} half-hours, by up to {over.max():.1f} kW "
        f"({100 * over.max() / cap:.0f} % over), {over.sum() * 0.5:.0f} kWh above it in all"
    )
    assert np.all(ours_load <= cap + 1e-6), "over-committed"


def main() -> None:
    """Run the sizes given on the command line (and an optional cap factor)."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("jobs", type=int, nargs="*", default=[1000, 10000])
    parser.add_argument("--cap-factor", type=float, default=CAP_FACTOR, help="cap = F x the mean load")
    args = parser.parse_args()
    for count in args.jobs:
        run(count, args.cap_factor)


if __name__ == "__main__":
    main()
