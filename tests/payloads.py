"""Upstream payloads for `responses`, all built from the real recorded data in data/ (see data/PROVENANCE.md).

Where a response shape was not recorded byte-for-byte (regional by id, Octopus rate pages, history), the
values are the recorded ones and only the envelope is assembled, following the shapes PROVENANCE documents.
"""

from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path

from timeutil import SLOT, parse_utc

DATA = Path(__file__).resolve().parent.parent / "data"
FUELS = ("biomass", "coal", "imports", "gas", "nuclear", "other", "hydro", "solar", "wind")  # API order


def fixture(name: str) -> dict:
    """A recorded API response from data/api_fixtures."""
    return json.loads((DATA / "api_fixtures" / name).read_text())


def fmt(moment: datetime) -> str:
    """Carbon Intensity API time format."""
    return moment.strftime("%Y-%m-%dT%H:%MZ")


def regional_by_id(region_id: int, snapshot: str = "2023-03-15T1701Z") -> dict:
    """A `/regional/intensity/{from}/fw48h/regionid/{id}` body from a recorded regional snapshot."""
    names = {r["regionid"]: r for r in fixture("ci_regional_2023-03-09T2330Z.json")["data"][0]["regions"]}
    rows = []
    with (DATA / "forecast_snapshots" / "regional_fw48h" / f"{snapshot}.csv").open() as handle:
        for row in csv.DictReader(handle):
            if int(row["regions.regionid"]) != region_id:
                continue
            start = parse_utc(row["from"])
            rows.append(
                {
                    "from": fmt(start),
                    "to": fmt(start + SLOT),
                    "intensity": {"forecast": int(row["regions.intensity.forecast"])},
                    "generationmix": [{"fuel": f, "perc": float(row[f])} for f in FUELS],
                }
            )
    meta = names[region_id]
    return {
        "data": {"regionid": region_id, "dnoregion": meta["dnoregion"], "shortname": meta["shortname"], "data": rows}
    }


def national_rows(start: datetime, end: datetime) -> list[dict]:
    """Recorded national slots in `[start, end)` as API items (from the 2023 national series)."""
    items = []
    with (DATA / "ci_national_2023_halfhourly.csv").open() as handle:
        for row in csv.DictReader(handle):
            slot_start = parse_utc(row["from"])
            if start <= slot_start < end:
                items.append(
                    {
                        "from": fmt(slot_start),
                        "to": fmt(parse_utc(row["to"])),
                        "intensity": {
                            "forecast": int(row["forecast"]),
                            "actual": round(float(row["actual"])) if row["actual"] else None,
                            "index": row["index"],
                        },
                    }
                )
    return items


def agile_j_rates(start: datetime, end: datetime) -> list[dict]:
    """Recorded Agile J prices in `[start, end)` as Octopus rate items, newest first as the API sends them.

    The recording holds inc-VAT prices only; exc VAT is derived at the 5 % domestic rate.
    """
    items = []
    with (DATA / "agile_J_south_eastern_england_2020-2024.csv").open() as handle:
        for row in csv.DictReader(handle):
            slot_start = parse_utc(row["timestamp"])
            if start <= slot_start < end:
                inc = float(row["price"])
                items.append(
                    {
                        "value_exc_vat": round(inc / 1.05, 4),
                        "value_inc_vat": inc,
                        "valid_from": slot_start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "valid_to": (slot_start + SLOT).strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "payment_method": None,
                    }
                )
    return sorted(items, key=lambda r: r["valid_from"], reverse=True)


def rate_pages(items: list[dict], base_url: str, page_size: int) -> list[dict]:
    """Split rate items into Octopus pages linked by `next`."""
    pages = [items[i : i + page_size] for i in range(0, len(items), page_size)] or [[]]
    out = []
    for number, page in enumerate(pages, start=1):
        nxt = f"{base_url}?page={number + 1}" if number < len(pages) else None
        prev = f"{base_url}?page={number - 1}" if number > 1 else None
        out.append({"count": len(items), "next": nxt, "previous": prev, "results": page})
    return out


# Product codes are real Octopus product codes (PROVENANCE lists the Agile generations); the envelope is
# the products list shape (code, direction, full_name, display_name, available_from/to, brand).
PRODUCTS = {
    "count": 4,
    "next": None,
    "previous": None,
    "results": [
        {
            "code": "AGILE-22-08-31",
            "direction": "IMPORT",
            "full_name": "Agile Octopus August 2022 v1",
            "display_name": "Agile Octopus",
            "available_from": "2022-08-31T00:00:00Z",
            "available_to": "2022-11-25T00:00:00Z",
            "brand": "OCTOPUS_ENERGY",
        },
        {
            "code": "AGILE-FLEX-22-11-25",
            "direction": "IMPORT",
            "full_name": "Agile Octopus November 2022 v1",
            "display_name": "Agile Octopus",
            "available_from": "2022-11-25T00:00:00Z",
            "available_to": None,
            "brand": "OCTOPUS_ENERGY",
        },
        {
            "code": "AGILE-OUTGOING-19-05-13",
            "direction": "EXPORT",
            "full_name": "Agile Outgoing Octopus May 2019",
            "display_name": "Agile Outgoing Octopus",
            "available_from": "2019-05-13T00:00:00Z",
            "available_to": None,
            "brand": "OCTOPUS_ENERGY",
        },
        {
            "code": "VAR-22-11-01",
            "direction": "IMPORT",
            "full_name": "Flexible Octopus November 2022 v1",
            "display_name": "Flexible Octopus",
            "available_from": "2022-11-01T00:00:00Z",
            "available_to": None,
            "brand": "OCTOPUS_ENERGY",
        },
    ],
}
LIVE_PRODUCT = "AGILE-FLEX-22-11-25"
