"""GB regions: Carbon Intensity region ids, postcode outward codes and Octopus GSP letters, in one place."""

from __future__ import annotations

import re
from dataclasses import dataclass

NATIONAL = "national"

# Carbon Intensity API region ids -> short names, as the recorded `/regional` payload names them
# (data/api_fixtures/ci_regional_2023-03-09T2330Z.json; tests check this table against it).
REGION_NAMES: dict[int, str] = {
    1: "North Scotland",
    2: "South Scotland",
    3: "North West England",
    4: "North East England",
    5: "Yorkshire",
    6: "North Wales & Merseyside",
    7: "South Wales",
    8: "West Midlands",
    9: "East Midlands",
    10: "East England",
    11: "South West England",
    12: "South England",
    13: "London",
    14: "South East England",
    15: "England",
    16: "Scotland",
    17: "Wales",
}

# Octopus Agile GSP group letter for each DNO region (1-14). The aggregate regions 15-17 have none.
OCTOPUS_LETTER: dict[int, str] = {
    10: "A",
    9: "B",
    13: "C",
    6: "D",
    8: "E",
    4: "F",
    3: "G",
    12: "H",
    14: "J",
    7: "K",
    11: "L",
    5: "M",
    2: "N",
    1: "P",
}
OCTOPUS_REGION_NAMES: dict[str, str] = {
    "A": "Eastern England",
    "B": "East Midlands",
    "C": "London",
    "D": "Merseyside & North Wales",
    "E": "West Midlands",
    "F": "North Eastern England",
    "G": "North Western England",
    "H": "Southern England",
    "J": "South Eastern England",
    "K": "South Wales",
    "L": "South Western England",
    "M": "Yorkshire",
    "N": "Southern Scotland",
    "P": "Northern Scotland",
}

# A UK outward code: area letters, district digit(s), optional letter (RG1, SW1A, M1, EC1V).
_OUTCODE = re.compile(r"^[A-Z]{1,2}[0-9][0-9A-Z]?$")


class RegionError(ValueError):
    """A region parameter that names no GB region."""


@dataclass(frozen=True)
class Region:
    """A resolved region: national, a Carbon Intensity region id, or a postcode awaiting its region."""

    key: str  # "national", "1".."17", or the outward code
    region_id: int | None
    name: str
    postcode: str | None = None

    @property
    def octopus_letter(self) -> str | None:
        """The Agile GSP letter for this region, when it has one."""
        return OCTOPUS_LETTER.get(self.region_id) if self.region_id else None

    def as_dict(self) -> dict:
        """The region as the API reports it."""
        return {
            "key": self.key,
            "region_id": self.region_id,
            "name": self.name,
            "postcode": self.postcode,
            "octopus_letter": self.octopus_letter,
        }


def region_by_id(region_id: int) -> Region:
    """The region with this Carbon Intensity id (1-17)."""
    if region_id not in REGION_NAMES:
        raise RegionError(f"unknown region id {region_id}; use 1-17, 'national' or a postcode outward code")
    return Region(str(region_id), region_id, REGION_NAMES[region_id])


def national() -> Region:
    """The GB-wide national signal."""
    return Region(NATIONAL, None, "Great Britain (national)")


def normalise_outcode(text: str) -> str:
    """Upper-case a postcode outward code, or raise RegionError if it is not one."""
    code = text.strip().upper()
    if not _OUTCODE.match(code):
        raise RegionError(f"{text!r} is not a region id (1-17), 'national' or a UK postcode outward code")
    return code


def parse_region(text: str) -> Region:
    """Parse a region parameter: 'national', an id 1-17, or a postcode outward code (region_id unknown yet)."""
    value = (text or "").strip()
    if value.lower() == NATIONAL:
        return national()
    if value.isascii() and value.isdigit():
        return region_by_id(int(value))
    code = normalise_outcode(value)
    return Region(code, None, f"postcode {code}", postcode=code)


def letter_region_id(letter: str) -> int:
    """The Carbon Intensity region id of an Octopus GSP letter."""
    for region_id, candidate in OCTOPUS_LETTER.items():
        if candidate == letter:
            return region_id
    raise RegionError(f"unknown Octopus region letter {letter!r}; use A-P (no I or O)")


def selectable_regions() -> list[Region]:
    """National first, then regions 1-17, as offered in forms."""
    return [national(), *(region_by_id(i) for i in sorted(REGION_NAMES))]
