"""A year of real decisions (2023): decided on what was known at the time, scored on what actually happened.

Each day at 17:00 UK a fixed job mix is planned (1, 3 and 8 h; 12 and 24 h of flexibility; contiguous and
interruptible) on the national signal with Agile region J prices, by three strategies:

- baseline: start now;
- ours: the planner, on the carbon forecast as published before the decision (the forecast snapshots, 14 Mar -
  31 May 2023; the final forecast column elsewhere, labelled) and on Agile prices only once published (about
  16:00 UK for the next day), our price forecast beyond;
- oracle: the planner with perfect foresight (actual carbon, real prices).

Each is scored on actual carbon intensity and the real prices. For the snapshot period we also decide on the
final forecasts, to show how much the saving shrinks when only the forecast as published was known.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path

import numpy as np

import policy_agent as pa
import price_forecast
from api_clients import DATA_DIR, shared_recorded_source
from energy_agent import agile_published_until
from timeutil import LONDON, SLOT, UTC, parse_utc

DECISION_TIME = time(17, 0)  # UK
JOB_MIX = [(hours, flex, interruptible) for hours in (1, 3, 8) for flex in (12, 24) for interruptible in (False, True)]
POWER_KW = 100.0  # each job's IT load; PUE 1.0, so energy = 100 kW × hours
OBJECTIVES = ("carbon", "cost")
STRATEGIES = ("baseline", "ours", "oracle")


@dataclass
class Inputs:
    """The recorded 2023 data in arrays, and the forecasts as published."""

    starts: list[datetime]
    position: dict[datetime, int]
    final_forecast: np.ndarray
    actual: np.ndarray  # nan where the recording has no (or a bad, zero) actual
    prices: dict[datetime, float]
    snapshots: list[tuple[datetime, dict[datetime, float]]]

    @classmethod
    def load(cls) -> Inputs:
        recorded = shared_recorded_source()
        slots = recorded.national.items
        starts = [s.start for s in slots]
        return cls(
            starts=starts,
            position={s: i for i, s in enumerate(starts)},
            final_forecast=np.array([float(s.forecast) for s in slots]),
            actual=np.array([float(s.actual) if s.actual else math.nan for s in slots]),
            prices={p.start: p.value_inc_vat for p in recorded._prices["J"].items},
            snapshots=load_snapshots(),
        )


def load_snapshots() -> list[tuple[datetime, dict[datetime, float]]]:
    """National 48 h forecasts as published (daily, Mar-May 2023), oldest first."""
    out = []
    for path in sorted((DATA_DIR / "forecast_snapshots" / "national_fw48h").glob("*.csv")):
        published = datetime.strptime(path.stem, "%Y-%m-%dT%H%MZ").replace(tzinfo=UTC)
        with path.open() as handle:
            values = {parse_utc(r["from"]): float(r["intensity.forecast"]) for r in csv.DictReader(handle)}
        out.append((published, values))
    return out


@dataclass(frozen=True)
class PublishedBy:
    """Agile prices as known at a moment: only those published by then (starting before `cutoff`)."""

    prices: dict[datetime, float]
    cutoff: datetime

    def get(self, start: datetime, default=None):
        """The price of a half-hour, if it was published by the cutoff."""
        return self.prices.get(start, default) if start < self.cutoff else default


@dataclass
class Decision:
    """What one decision saw, per half-hour of its horizon."""

    starts: list[datetime]
    carbon_known: np.ndarray
    carbon_final: np.ndarray
    carbon_actual: np.ndarray
    price_known: np.ndarray
    price_real: np.ndarray
    as_published: int  # half-hours whose carbon came from a forecast as published
    price_forecast: int  # half-hours whose price was our forecast
    in_snapshot_period: bool


def decision_at(inputs: Inputs, moment: datetime, hours: int) -> Decision | None:
    """The inputs of a decision at `moment` over `hours`, or None where the recording has a hole."""
    first = inputs.position.get(moment)
    count = hours * 2
    if (
        first is None
        or first + count > len(inputs.starts)
        or inputs.starts[first + count - 1] != moment + (count - 1) * SLOT
    ):
        return None
    starts = inputs.starts[first : first + count]
    if any(s not in inputs.prices for s in starts):
        return None
    snapshot = next((values for published, values in reversed(inputs.snapshots) if published <= moment), None)
    if snapshot is not None and not any(s in snapshot for s in starts):
        snapshot = None  # too old to cover this horizon
    final = inputs.final_forecast[first : first + count]
    known = np.array([snapshot.get(s, f) if snapshot else f for s, f in zip(starts, final, strict=True)])
    published_count = sum(1 for s in starts if snapshot and s in snapshot)
    actual = inputs.actual[first : first + count]
    actual = np.where(np.isnan(actual), final, actual)  # missing/bad actuals: scored on the final forecast
    cutoff = agile_published_until(moment)
    guesses = price_forecast.forecast_prices(PublishedBy(inputs.prices, cutoff), [s for s in starts if s >= cutoff])
    price_known = np.array([inputs.prices[s] if s < cutoff else guesses.get(s, inputs.prices[s]) for s in starts])
    return Decision(
        starts,
        known,
        final,
        actual,
        price_known,
        np.array([inputs.prices[s] for s in starts]),
        published_count,
        sum(1 for s in starts if s >= cutoff),
        snapshot is not None,
    )


def series(decision: Decision, carbon: np.ndarray, prices: np.ndarray) -> pa.Series:
    """A planner series over the decision's horizon."""
    return pa.Series("national", tuple(decision.starts), tuple(map(float, carbon)), tuple(map(float, prices)))


def score(decision: Decision, indices, job: pa.JobRequest) -> tuple[float, float]:
    """Actual kg CO2 and real £ of running in these half-hours."""
    idx = list(indices)
    energy = job.energy_per_slot_kwh
    return (
        float(decision.carbon_actual[idx].sum() * energy / 1000),
        float(decision.price_real[idx].sum() * energy / 100),
    )


@dataclass
class Results:
    """Totals per objective and strategy, per month, and for the snapshot period."""

    totals: dict = field(default_factory=lambda: defaultdict(lambda: defaultdict(lambda: [0.0, 0.0])))
    monthly: dict = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(lambda: [0.0, 0.0])))
    )
    snapshot: dict = field(default_factory=lambda: defaultdict(lambda: defaultdict(lambda: [0.0, 0.0])))
    decisions: int = 0
    skipped: int = 0
    half_hours_as_published: int = 0
    half_hours_final_forecast: int = 0
    half_hours_price_forecast: int = 0

    def add(self, table, objective: str, strategy: str, kg: float, gbp: float) -> None:
        table[objective][strategy][0] += kg
        table[objective][strategy][1] += gbp


def run(days: list[date], progress=None) -> Results:
    """Decide and score every job of the mix on every day."""
    inputs = Inputs.load()
    results = Results()
    for day in days:
        moment = datetime.combine(day, DECISION_TIME, LONDON).astimezone(UTC)
        for hours, flex, interruptible in JOB_MIX:
            decision = decision_at(inputs, moment, flex)
            if decision is None:
                results.skipped += 1
                continue
            results.decisions += 1
            results.half_hours_as_published += decision.as_published
            results.half_hours_final_forecast += len(decision.starts) - decision.as_published
            results.half_hours_price_forecast += decision.price_forecast
            for objective in OBJECTIVES:
                _decide(results, decision, day, hours, flex, interruptible, objective)
        if progress:
            progress(1)
    return results


def _decide(
    results: Results, decision: Decision, day: date, hours: int, flex: int, interruptible: bool, objective: str
) -> None:
    job = pa.JobRequest(
        duration_minutes=hours * 60,
        power_kw=POWER_KW,
        pue=1.0,
        earliest_start=decision.starts[0],
        deadline=decision.starts[0] + timedelta(hours=flex),
        interruptible=interruptible,
        min_chunk_minutes=30,
        objective=objective,
    )
    month = day.strftime("%Y-%m")
    chosen = {
        "baseline": tuple(range(job.slots)),
        "ours": pa.plan_region(series(decision, decision.carbon_known, decision.price_known), job)[0].indices,
        "oracle": pa.plan_region(series(decision, decision.carbon_actual, decision.price_real), job)[0].indices,
    }
    for strategy, indices in chosen.items():
        kg, gbp = score(decision, indices, job)
        results.add(results.totals, objective, strategy, kg, gbp)
        results.add(results.monthly[month], objective, strategy, kg, gbp)
        if decision.in_snapshot_period:
            results.add(results.snapshot, objective, strategy, kg, gbp)
    if decision.in_snapshot_period:
        final = pa.plan_region(series(decision, decision.carbon_final, decision.price_known), job)[0].indices
        results.add(results.snapshot, objective, "final_forecast", *score(decision, final, job))


def summary(results: Results) -> dict:
    """The headline figures: kg and £ per strategy, ours as a share of the oracle's saving."""
    out = {
        "decisions": results.decisions,
        "skipped": results.skipped,
        "half_hours_carbon_as_published": results.half_hours_as_published,
        "half_hours_carbon_final_forecast": results.half_hours_final_forecast,
        "half_hours_price_forecast": results.half_hours_price_forecast,
        "objectives": {},
        "snapshot_period": {},
    }
    for objective in OBJECTIVES:
        out["objectives"][objective] = _figures(results.totals[objective], objective)
        out["snapshot_period"][objective] = _figures(results.snapshot[objective], objective)
    out["monthly"] = {
        month: {o: _figures(table[o], o) for o in OBJECTIVES} for month, table in sorted(results.monthly.items())
    }
    return out


def _figures(table: dict, objective: str) -> dict:
    index = 0 if objective == "carbon" else 1
    base = table["baseline"][index]
    figures = {name: {"carbon_kg": round(v[0], 1), "cost_gbp": round(v[1], 2)} for name, v in table.items()}
    for name in ("ours", "oracle", "final_forecast"):
        if name in table and base:
            figures[name]["saving_pct"] = round(100 * (base - table[name][index]) / base, 2)
    oracle_saving = base - table["oracle"][index] if "oracle" in table else 0
    if oracle_saving:
        figures["ours_share_of_oracle_pct"] = round(100 * (base - table["ours"][index]) / oracle_saving, 1)
        if "final_forecast" in table:
            figures["final_forecast_share_of_oracle_pct"] = round(
                100 * (base - table["final_forecast"][index]) / oracle_saving, 1
            )
    return figures


def chart_svg(report: dict) -> str:
    """Monthly saving (%) of ours and the oracle against the baseline, both objectives, as SVG."""
    months = list(report["monthly"])
    width, height, left, right, top, bottom = 900, 360, 50, 20, 30, 50
    series_spec = [
        ("carbon", "oracle", "#9ccfb1"),
        ("carbon", "ours", "#1b7f4b"),
        ("cost", "oracle", "#a9c3e6"),
        ("cost", "ours", "#3a6fb0"),
    ]
    values = [report["monthly"][m][o][s].get("saving_pct", 0) for m in months for o, s, _ in series_spec]
    top_value = max(10, math.ceil(max([*values, 0]) / 10) * 10)
    x_step = (width - left - right) / max(len(months), 1)

    def y(v: float) -> float:
        return round(height - bottom - (height - top - bottom) * max(v, 0) / top_value, 1)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" font-family="sans-serif" '
        f'font-size="11"><title>Monthly saving against starting now, 2023 (national, Agile J)</title>',
        f'<text x="{left}" y="18" font-size="13">Saving against starting now, % (ours vs perfect foresight)</text>',
    ]
    for tick in range(0, top_value + 1, 10):
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(tick)}" y2="{y(tick)}" stroke="#e6e9ee"/>'
            f'<text x="{left - 6}" y="{y(tick) + 4}" text-anchor="end">{tick}</text>'
        )
    bar = x_step / (len(series_spec) + 1)
    for i, month in enumerate(months):
        for j, (objective, strategy, colour) in enumerate(series_spec):
            v = report["monthly"][month][objective][strategy].get("saving_pct", 0)
            x = left + i * x_step + (j + 0.5) * bar
            parts.append(
                f'<rect x="{x:.1f}" y="{y(v)}" width="{bar * 0.9:.1f}" height="{height - bottom - y(v):.1f}" '
                f'fill="{colour}"><title>{month} {objective} {strategy} {v}%</title></rect>'
            )
        parts.append(
            f'<text x="{left + (i + 0.5) * x_step:.1f}" y="{height - bottom + 14}" '
            f'text-anchor="middle">{month[5:]}</text>'
        )
    for j, (objective, strategy, colour) in enumerate(series_spec):
        parts.append(
            f'<rect x="{left + j * 200}" y="{height - 22}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{left + j * 200 + 14}" y="{height - 13}">{objective} objective: {strategy}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def write(report: dict, out: Path) -> tuple[Path, Path]:
    """Write the JSON report and the SVG chart; their paths."""
    out.mkdir(parents=True, exist_ok=True)
    report_path, chart_path = out / "backtest_2023.json", out / "backtest_2023.svg"
    report_path.write_text(json.dumps(report, indent=2))
    chart_path.write_text(chart_svg(report))
    return report_path, chart_path


def days_of(year: int = 2023) -> list[date]:
    """Every day of the recorded year."""
    start = date(year, 1, 1)
    return [start + timedelta(days=i) for i in range((date(year + 1, 1, 1) - start).days)]
