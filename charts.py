"""Server-side SVG chart geometry for a signal: carbon as a step line, price as bars. No JavaScript needed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from models import SignalSlot
from timeutil import to_london

WIDTH, HEIGHT = 960, 320
LEFT, RIGHT, TOP, BOTTOM = 56, 56, 16, 40


@dataclass
class Chart:
    """Everything the SVG template draws, in pixel coordinates."""

    width: int = WIDTH
    height: int = HEIGHT
    plot: tuple[int, int, int, int] = (LEFT, TOP, WIDTH - RIGHT, HEIGHT - BOTTOM)
    carbon_points: str = ""
    price_bars: list[dict] = field(default_factory=list)
    x_ticks: list[tuple[float, str]] = field(default_factory=list)
    carbon_ticks: list[tuple[float, str]] = field(default_factory=list)
    price_ticks: list[tuple[float, str]] = field(default_factory=list)
    markers: list[dict] = field(default_factory=list)
    windows: list[tuple[float, float]] = field(default_factory=list)
    zero_price_y: float | None = None
    cap_y: float | None = None  # load charts: the asset's power cap


def _nice_max(value: float) -> float:
    """The smallest 4 × a round step at or above `value`, so the four tick labels are whole numbers."""
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000):
        if value <= 4 * step:
            return 4 * step
    return value


def signal_chart(slots: list[SignalSlot], windows: list[tuple[datetime, datetime]] | None = None) -> Chart:
    """Chart geometry for `slots`; `windows` shade planned runs, markers flag the greenest and cheapest slot."""
    chart = Chart()
    if not slots:
        return chart
    x0, y0, x1, y1 = chart.plot
    t0, t1 = slots[0].start, slots[-1].end
    span = (t1 - t0).total_seconds()

    def x(moment: datetime) -> float:
        return round(x0 + (x1 - x0) * (moment - t0).total_seconds() / span, 1)

    carbons = [s.carbon_g_per_kwh for s in slots if s.carbon_g_per_kwh is not None]
    prices = [s.price_p_per_kwh for s in slots if s.price_p_per_kwh is not None]
    c_max = _nice_max(max(carbons, default=100) or 100)
    p_min = min(0.0, min(prices, default=0.0))
    p_max = _nice_max(max(prices, default=10) or 10)

    def yc(value: float) -> float:
        return round(y1 - (y1 - y0) * value / c_max, 1)

    def yp(value: float) -> float:
        return round(y1 - (y1 - y0) * (value - p_min) / (p_max - p_min), 1)

    points = []
    for s in slots:
        if s.carbon_g_per_kwh is not None:
            points += [f"{x(s.start)},{yc(s.carbon_g_per_kwh)}", f"{x(s.end)},{yc(s.carbon_g_per_kwh)}"]
    chart.carbon_points = " ".join(points)
    zero = yp(0)
    chart.zero_price_y = zero if p_min < 0 else None
    for s in slots:
        if s.price_p_per_kwh is None:
            continue
        top, bottom = sorted((yp(s.price_p_per_kwh), zero))
        chart.price_bars.append(
            {
                "x": x(s.start) + 0.5,
                "y": top,
                "w": max(x(s.end) - x(s.start) - 1, 0.5),
                "h": max(bottom - top, 0.5),
                "forecast": s.price_source == "forecast",
                "title": f"{to_london(s.start):%a %H:%M} {s.price_p_per_kwh:.2f} p/kWh ({s.price_source})",
            }
        )
    chart.x_ticks = [
        (x(s.start), f"{to_london(s.start):%a %H:%M}")
        for s in slots
        if to_london(s.start).hour % 6 == 0 and to_london(s.start).minute == 0
    ]
    chart.carbon_ticks = [(yc(c_max * i / 4), f"{c_max * i / 4:.0f}") for i in range(5)]
    chart.price_ticks = [
        (yp(p_min + (p_max - p_min) * i / 4), f"{p_min + (p_max - p_min) * i / 4:.0f}") for i in range(5)
    ]
    greenest = min((s for s in slots if s.carbon_g_per_kwh is not None), key=lambda s: s.carbon_g_per_kwh, default=None)
    cheapest = min((s for s in slots if s.price_p_per_kwh is not None), key=lambda s: s.price_p_per_kwh, default=None)
    for name, slot in (("greenest", greenest), ("cheapest", cheapest)):
        if slot is not None:
            chart.markers.append({"name": name, "x": round((x(slot.start) + x(slot.end)) / 2, 1)})
    chart.windows = [(x(max(a, t0)), x(min(b, t1))) for a, b in windows or [] if a < t1 and b > t0]
    return chart


def load_chart(slots: list[SignalSlot], load: list[float], cap: float) -> Chart:
    """Planned kW per half-hour (bars) against the asset's cap (a line), with carbon intensity (the line)."""
    chart = signal_chart(slots)
    if not slots:
        return chart
    x0, y0, x1, y1 = chart.plot
    top = _nice_max(max(max(load, default=0.0), cap) * 1.05 or 1.0)

    def y(kw: float) -> float:
        return round(y1 - (y1 - y0) * kw / top, 1)

    width = (x1 - x0) / len(slots)
    chart.price_bars = [
        {
            "x": round(x0 + i * width + 0.5, 1),
            "y": y(kw),
            "w": max(round(width - 1, 1), 0.5),
            "h": round(y1 - y(kw), 1),
            "forecast": kw > cap + 1e-9,
            "title": f"{to_london(s.start):%a %H:%M} {kw:.1f} kW planned",
        }
        for i, (s, kw) in enumerate(zip(slots, load, strict=True))
        if kw > 0
    ]
    chart.price_ticks = [(y(top * i / 4), f"{top * i / 4:.0f}") for i in range(5)]
    chart.zero_price_y = None
    chart.cap_y = y(cap)
    return chart
