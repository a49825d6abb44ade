"""Server-rendered pages."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template, request

from charts import signal_chart
from energy_agent import PostcodePending, SignalUnavailable
from regions import RegionError, parse_region, selectable_regions
from storage import get_db
from timeutil import floor_slot

web = Blueprint("web", __name__)


def best_slots(slots, key, count: int = 3):
    """The `count` lowest slots by `key`, earliest first on ties, skipping slots without a value."""
    valued = [s for s in slots if key(s) is not None]
    return sorted(valued, key=lambda s: (key(s), s.start))[:count]


@web.get("/")
def index():
    """The next 48 h of carbon intensity and price for a selectable region."""
    now = current_app.config["CLOCK"]()
    region_text = request.args.get("region", "national")
    error, status, signal = None, 200, None
    try:
        region = parse_region(region_text)
        signal = current_app.extensions["energy_agent"].signal(get_db(), region, floor_slot(now), 48, now)
    except RegionError as exc:
        error, status = str(exc), 422
    except (PostcodePending, SignalUnavailable) as exc:
        error, status = str(exc), 503
    context = {
        "regions": selectable_regions(),
        "selected": region_text,
        "signal": signal,
        "error": error,
        "chart": signal_chart(signal.slots) if signal else None,
        "greenest": best_slots(signal.slots, lambda s: s.carbon_g_per_kwh) if signal else [],
        "cheapest": best_slots(signal.slots, lambda s: s.price_p_per_kwh) if signal else [],
    }
    return render_template("index.html", **context), status
