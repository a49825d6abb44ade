"""Mean absolute error of our Agile price forecast against the naive "same half-hour yesterday", 2023, region J.

Both are scored on the same targets in the same run. A target is every half-hour of 2023; what is known when
it is forecast is every price of earlier Agile days (an Agile day runs 23:00-23:00 UK and is published about
16:00 UK the day before), which is exactly what the product knows for half-hours beyond the published horizon.

    python bench/price_forecast.py
"""

from __future__ import annotations

import csv
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from price_forecast import forecast_price, naive_price  # noqa: E402
from timeutil import LONDON, UTC, parse_utc  # noqa: E402

CSV = ROOT / "data" / "agile_J_south_eastern_england_2020-2024.csv"


def agile_day_start(day: date) -> datetime:
    """23:00 UK on the evening before `day`: where the Agile day for `day` begins."""
    return datetime.combine(day - timedelta(days=1), datetime.min.time().replace(hour=23), LONDON).astimezone(UTC)


def main() -> None:
    """Score both forecasts over 2023 and print MAE, ratio and skill."""
    with CSV.open() as handle:
        prices = {parse_utc(row["timestamp"]): float(row["price"]) for row in csv.DictReader(handle)}
    first = agile_day_start(date(2023, 1, 1))
    known = {t: p for t, p in prices.items() if t < first}
    ours_err = naive_err = 0.0
    count = 0
    started = time.perf_counter()
    day = date(2023, 1, 1)
    while day.year == 2023:
        lo, hi = agile_day_start(day), agile_day_start(day + timedelta(days=1))
        targets = sorted(t for t in prices if lo <= t < hi)
        for target in targets:
            ours, naive = forecast_price(known, target), naive_price(known, target)
            ours_err += abs(ours - prices[target])
            naive_err += abs(naive - prices[target])
            count += 1
        known.update({t: prices[t] for t in targets})  # the day is published only after it was forecast
        day += timedelta(days=1)
    elapsed = time.perf_counter() - started
    ours_mae, naive_mae = ours_err / count, naive_err / count
    print(f"Agile J, 2023, {count} half-hours forecast a day ahead (history: earlier Agile days only)")
    print(f"naive (same half-hour yesterday)   MAE {naive_mae:.3f} p/kWh")
    print(f"ours  (0.5 x yesterday + 0.5 x 7-day mean at that half-hour)  MAE {ours_mae:.3f} p/kWh")
    print(f"ratio ours/naive {ours_mae / naive_mae:.3f}  (skill {100 * (1 - ours_mae / naive_mae):.1f} %)")
    print(f"scored in {elapsed:.2f} s")


if __name__ == "__main__":
    main()
