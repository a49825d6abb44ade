"""The planner against brute force on windows of real recorded data, and its explanations and edge cases."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import policy_agent as pa
from api_clients import shared_recorded_source
from timeutil import SLOT, UTC

RECORDED = shared_recorded_source()
NATIONAL = RECORDED.national.items
PRICES = {p.start: p.value_inc_vat for p in RECORDED._prices["J"].items}


def real_series(offset: int, length: int, region: str = "national") -> pa.Series:
    """`length` consecutive recorded half-hours (national carbon 2023, Agile J prices) from `offset`."""
    slots = NATIONAL[offset : offset + length]
    return pa.Series(
        region=region,
        starts=tuple(s.start for s in slots),
        carbon=tuple(float(s.forecast) for s in slots),
        price=tuple(PRICES[s.start] for s in slots),
        carbon_kinds=("forecast",) * len(slots),
        price_sources=("published",) * len(slots),
    )


def brute_force(series: pa.Series, job: pa.JobRequest):
    """Every feasible placement scored directly; the best (ties → earliest), or None."""
    lo, hi = pa.window(series, job)
    n, m = job.slots, job.min_chunk_slots
    e = job.energy_per_slot_kwh
    if job.interruptible:
        options = [c for c in itertools.combinations(range(lo, hi), n) if _runs_ok(c, m)]
    else:
        options = [tuple(range(s, s + n)) for s in range(lo, hi - n + 1)]
    best = None
    for idx in options:
        kg = sum(series.carbon[i] * e / 1000 for i in idx)
        gbp = sum(series.price[i] * e / 100 for i in idx)
        if job.carbon_cap_kg is not None and kg > job.carbon_cap_kg + pa.EPS:
            continue
        if job.cost_cap_gbp is not None and gbp > job.cost_cap_gbp + pa.EPS:
            continue
        score = {"carbon": kg, "cost": gbp, "balanced": gbp + kg * job.carbon_price_gbp_per_tonne / 1000}[job.objective]
        if best is None or score < best[0] - pa.EPS:
            best = (score, idx, kg, gbp)
    return best


def _runs_ok(indices, m: int) -> bool:
    runs, length = [], 1
    for a, b in itertools.pairwise(indices):
        if b == a + 1:
            length += 1
        else:
            runs.append(length)
            length = 1
    runs.append(length)
    return all(r >= m for r in runs)


@st.composite
def cases(draw, interruptible: bool):
    length = draw(st.integers(4, 12 if interruptible else 40))
    offset = draw(st.integers(0, len(NATIONAL) - length - 1))
    series = real_series(offset, length)
    assume(all(b - a == SLOT for a, b in itertools.pairwise(series.starts)))  # skip the October data gap
    n = draw(st.integers(1, min(length, 6 if interruptible else length)))
    minutes = n * 30 - draw(st.sampled_from([0, 0, 10, 29]))  # some durations are not whole half-hours
    m = draw(st.integers(1, n)) if interruptible else n
    objective = draw(st.sampled_from(pa.OBJECTIVES))
    job = pa.JobRequest(
        duration_minutes=minutes,
        power_kw=draw(st.floats(0.5, 500)),
        pue=draw(st.floats(1.0, 2.0)),
        earliest_start=series.starts[0] + draw(st.sampled_from([timedelta(0), timedelta(minutes=20), SLOT])),
        deadline=series.starts[-1] + SLOT - draw(st.sampled_from([timedelta(0), timedelta(minutes=10), SLOT])),
        interruptible=interruptible,
        min_chunk_minutes=m * 30,
        objective=objective,
        carbon_price_gbp_per_tonne=draw(st.sampled_from([0.0, 100.0, 500.0])),
    )
    cap = draw(st.sampled_from([None, "carbon", "cost", "both"]))
    if cap is not None:
        kg_all = [c * job.energy_per_slot_kwh / 1000 for c in series.carbon]
        gbp_all = [p * job.energy_per_slot_kwh / 100 for p in series.price]
        lo_kg, hi_kg = sum(sorted(kg_all)[: job.slots]), sum(sorted(kg_all)[-job.slots :])
        lo_gbp, hi_gbp = sum(sorted(gbp_all)[: job.slots]), sum(sorted(gbp_all)[-job.slots :])
        f = draw(st.floats(-0.1, 1.0))
        kw = {}
        if cap in ("carbon", "both"):
            kw["carbon_cap_kg"] = lo_kg + f * (hi_kg - lo_kg)
        if cap in ("cost", "both"):
            kw["cost_cap_gbp"] = lo_gbp + f * (hi_gbp - lo_gbp) if hi_gbp > lo_gbp else hi_gbp + abs(hi_gbp) * f
        job = pa.JobRequest(**{**job.__dict__, **kw})
    return series, job


def _check_against_brute_force(series, job):
    result = pa.plan(job, [series])
    expected = brute_force(series, job)
    if expected is None:
        assert isinstance(result, pa.Infeasible), result
        assert result.constraint in {"deadline", "carbon_cap_kg", "cost_cap_gbp"}
        return
    assert isinstance(result, pa.Plan), result
    score = result.explanation["score"]
    assert score == pytest.approx(expected[0], rel=1e-6, abs=1e-6)
    assert result.totals.carbon_kg == pytest.approx(expected[2], rel=1e-9, abs=1e-9) or job.interruptible
    if job.carbon_cap_kg is not None:
        assert result.totals.carbon_kg <= job.carbon_cap_kg + 1e-6
    if job.cost_cap_gbp is not None:
        assert result.totals.cost_gbp <= job.cost_cap_gbp + 1e-6
    if not job.interruptible:
        assert result.start == series.starts[expected[1][0]]  # same window, ties to the earliest
        assert result.end - result.start == job.slots * SLOT
    else:
        runs = [b - a for a, b in result.chunks]
        assert sum(runs, timedelta(0)) == job.slots * SLOT
        assert all(r >= job.min_chunk_slots * SLOT for r in runs)
    assert result.start >= job.earliest_start and result.end <= job.deadline


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(cases(interruptible=False))
def test_contiguous_equals_brute_force(case):
    _check_against_brute_force(*case)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(cases(interruptible=True))
def test_interruptible_equals_brute_force(case):
    _check_against_brute_force(*case)


# ---- worked examples -----------------------------------------------------------------------------------

T0 = datetime(2023, 3, 15, 12, 0, tzinfo=UTC)


def _series(carbon, price=None, region="national", start=T0):
    price = price or [10.0] * len(carbon)
    return pa.Series(
        region,
        tuple(start + i * SLOT for i in range(len(carbon))),
        tuple(map(float, carbon)),
        tuple(price),
        ("forecast",) * len(carbon),
        ("published",) * len(carbon),
    )


def _job(**kw):
    base = {
        "duration_minutes": 60,
        "power_kw": 10,
        "pue": 1.0,
        "earliest_start": T0,
        "deadline": T0 + timedelta(hours=4),
    }
    return pa.JobRequest(**{**base, **kw})


def test_ties_go_to_the_earliest_start():
    result = pa.plan(_job(), [_series([100, 50, 50, 100, 50, 50, 100, 100])])
    assert result.start == T0 + SLOT


def test_savings_and_per_inference():
    result = pa.plan(_job(inference_count=1000), [_series([200, 200, 100, 100, 300, 300, 300, 300])])
    # 10 kW × 1 h = 10 kWh; baseline 200 g → 2 kg, plan 100 g → 1 kg
    assert result.baseline.carbon_kg == pytest.approx(2.0) and result.totals.carbon_kg == pytest.approx(1.0)
    savings = result.savings()
    assert savings["carbon_kg"] == pytest.approx(1.0) and savings["carbon_pct"] == pytest.approx(50.0)
    assert savings["carbon_g_per_inference"] == pytest.approx(1.0)


def test_duration_rounds_up_visibly():
    result = pa.plan(_job(duration_minutes=45), [_series([100] * 8)])
    assert result.end - result.start == timedelta(hours=1)
    assert result.explanation["duration"] == {"requested_minutes": 45, "planned_minutes": 60, "rounded_up": True}


def test_spatial_choice_picks_the_greener_region():
    north = _series([50, 40, 40, 60, 60, 60, 60, 60], region="1")
    london = _series([200, 180, 150, 150, 190, 200, 210, 220], region="13")
    result = pa.plan(_job(), [london, north])
    assert result.region == "1" and result.start == T0 + SLOT
    assert result.baseline_region == "13" and result.baseline_start == T0  # baseline: first allowed region, now
    assert result.savings()["carbon_kg"] > 0


def test_explanation_names_runners_up_and_inputs():
    result = pa.plan(_job(), [_series([100, 90, 80, 70, 60, 50, 40, 30])])
    explanation = result.explanation
    assert explanation["binding_constraint"] == "deadline"  # it would run later if it could
    assert len(explanation["runners_up"]) == 3
    scores = [r["score"] for r in explanation["runners_up"]]
    assert scores == sorted(scores) and scores[0] >= explanation["score"]
    assert explanation["inputs"] == {"carbon": {"forecast": 2}, "price": {"published": 2}}


def test_binding_earliest_start_and_interior():
    assert (
        pa.plan(_job(), [_series([10, 10, 90, 90, 90, 90, 90, 90])]).explanation["binding_constraint"]
        == "earliest_start"
    )
    assert pa.plan(_job(), [_series([90, 90, 10, 10, 90, 90, 90, 90])]).explanation["binding_constraint"] == "none"


def test_deadline_too_early_names_the_shortfall():
    result = pa.plan(_job(duration_minutes=180, deadline=T0 + timedelta(hours=2)), [_series([100] * 8)])
    assert isinstance(result, pa.Infeasible)
    assert result.constraint == "deadline" and result.shortfall == 60 and result.unit == "minutes"


def test_window_beyond_the_data():
    result = pa.plan(_job(duration_minutes=300, deadline=T0 + timedelta(hours=10)), [_series([100] * 8)])
    assert isinstance(result, pa.Infeasible) and result.constraint == "deadline"
    assert "data" in result.message and result.shortfall == 60


def test_unattainable_carbon_cap_says_by_how_much():
    result = pa.plan(_job(carbon_cap_kg=0.5), [_series([100] * 8)])  # lowest possible: 10 kWh × 100 g = 1 kg
    assert isinstance(result, pa.Infeasible)
    assert result.constraint == "carbon_cap_kg" and result.shortfall == pytest.approx(0.5)


def test_cost_cap_needs_prices():
    series = pa.Series("13", tuple(T0 + i * SLOT for i in range(8)), (100.0,) * 8, (None,) * 8)
    result = pa.plan(_job(objective="cost"), [series])
    assert isinstance(result, pa.Infeasible) and result.constraint == "objective"
    carbon_only = pa.plan(_job(), [series])
    assert carbon_only.totals.cost_gbp is None and carbon_only.savings()["cost_gbp"] is None


def test_cost_under_carbon_cap_trades_price_for_carbon():
    carbon = [300, 300, 50, 50, 300, 300, 300, 300]
    price = [1.0, 1.0, 30.0, 30.0, 5.0, 5.0, 5.0, 5.0]
    cheapest = pa.plan(_job(objective="cost"), [_series(carbon, price)])
    capped = pa.plan(_job(objective="cost", carbon_cap_kg=1.0), [_series(carbon, price)])
    assert cheapest.start == T0 and capped.start == T0 + 2 * SLOT
    assert capped.explanation["binding_constraint"] == "carbon_cap_kg"


def test_interruptible_respects_min_chunk():
    carbon = [10, 90, 10, 90, 10, 90, 10, 90]
    free = pa.plan(_job(duration_minutes=120, interruptible=True, min_chunk_minutes=30), [_series(carbon)])
    chunked = pa.plan(_job(duration_minutes=120, interruptible=True, min_chunk_minutes=60), [_series(carbon)])
    assert len(free.chunks) == 4 and free.totals.carbon_kg == pytest.approx(0.2)
    assert all(b - a >= timedelta(hours=1) for a, b in chunked.chunks)


def test_planner_is_deterministic():
    series = real_series(1000, 96)
    job = _job(duration_minutes=180, deadline=series.starts[-1] + SLOT, earliest_start=series.starts[0])
    assert pa.plan(job, [series]) == pa.plan(job, [series])
