"""Command line: `flask --app app signals show|fetch`."""

from __future__ import annotations

import json

import click
from flask import current_app
from flask.cli import AppGroup

from energy_agent import PostcodePending, SignalUnavailable
from regions import RegionError, parse_region
from storage import get_db
from timeutil import floor_slot, to_london


@click.group(cls=AppGroup)
def signals():
    """Grid signals: show them, or refresh the stored copy from the live APIs."""


@signals.command("show")
@click.option("--region", default="national", show_default=True, help="national, 1-17 or a postcode outward code")
@click.option("--hours", default=48, show_default=True, type=click.IntRange(1, 48))
@click.option("--json", "as_json", is_flag=True, help="print the API's JSON instead of a table")
def show(region: str, hours: int, as_json: bool):
    """Print the merged half-hourly signal for a region."""
    try:
        parsed = parse_region(region)
        now = current_app.config["CLOCK"]()
        signal = current_app.extensions["energy_agent"].signal(get_db(), parsed, floor_slot(now), hours, now)
    except (RegionError, PostcodePending, SignalUnavailable) as exc:
        raise click.UsageError(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(signal.model_dump(mode="json"), indent=2))
        return
    click.echo(f"{signal.region['name']} - carbon: {signal.carbon.source} {signal.carbon.detail}")
    click.echo(f"price: {signal.price.source} (Agile {signal.price.region_letter}) {signal.price.detail}")
    click.echo(f"{'start (UK)':<17} {'gCO2/kWh':>8} {'kind':<8} {'p/kWh':>7} {'price':<9}")
    for slot in signal.slots:
        price = "" if slot.price_p_per_kwh is None else f"{slot.price_p_per_kwh:7.2f}"
        click.echo(
            f"{to_london(slot.start):%a %d %b %H:%M}  {slot.carbon_g_per_kwh:>8.0f} {slot.carbon_kind:<8} "
            f"{price:>7} {slot.price_source or '':<9}"
        )


@signals.command("fetch")
def fetch():
    """Refresh the stored signal from the live APIs (what a cron job or timer runs in production)."""
    from app import refresh_once

    outcome = refresh_once(current_app._get_current_object())
    failed = 0
    for feed, text in sorted(outcome.items()):
        click.echo(f"{feed:<20} {text}")
        failed += not text.startswith(("ok", "skipped: GRID_SOURCE"))
    if failed:
        raise click.exceptions.Exit(1)
