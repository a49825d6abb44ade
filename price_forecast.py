"""Agile price forecast beyond the published horizon. Pure: history in, forecasts out.

Model (chosen by `bench/price_forecast.py`, which measures it against the naive "same half-hour yesterday"
over 2023, Agile region J): for each half-hour, the mean of (a) the latest known price at the same time of
day and (b) the average of the last `DAYS` known prices at the same time of day. (a) follows the level of
the last published day; (b) smooths out one-off spikes and carries the daily shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

DAY = timedelta(days=1)
DAYS = 7  # how many same-half-hour values the average takes
LOOKBACK_DAYS = 14  # how far back to look for them (gaps in history are skipped)
WEIGHT_LATEST = 0.5


def same_time_history(known: Mapping[datetime, float], target: datetime, limit: int = DAYS) -> list[float]:
    """Known prices at the target's time of day on earlier days, newest first, at most `limit`."""
    found = []
    for days_back in range(1, LOOKBACK_DAYS + 1):
        value = known.get(target - days_back * DAY)
        if value is not None:
            found.append(value)
            if len(found) == limit:
                break
    return found


def forecast_price(known: Mapping[datetime, float], target: datetime) -> float | None:
    """The forecast price (p/kWh) for the half-hour starting at `target`, or None without history."""
    history = same_time_history(known, target)
    if not history:
        return None
    return WEIGHT_LATEST * history[0] + (1 - WEIGHT_LATEST) * (sum(history) / len(history))


def forecast_prices(known: Mapping[datetime, float], targets: Iterable[datetime]) -> dict[datetime, float]:
    """Forecasts for each target half-hour that has history; forecasts never feed later forecasts."""
    out = {}
    for target in targets:
        value = forecast_price(known, target)
        if value is not None:
            out[target] = round(value, 4)
    return out


def naive_price(known: Mapping[datetime, float], target: datetime) -> float | None:
    """The naive baseline: the latest known price at the same half-hour on an earlier day."""
    history = same_time_history(known, target, limit=1)
    return history[0] if history else None
