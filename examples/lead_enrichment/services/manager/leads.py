"""Reading a lead CSV into clean, keyed leads (plain functions; ``tools.py`` exposes them).

Lead lists are typed by people: blanks written as "n/a" or "-", countries as
names, websites with and without scheme, the same company twice. Each lead
is normalised here once, so the research and the checks see the same values,
and gets a key that depends only on its company and country (not its row),
so that a re-run, or a CSV with rows added or reordered, finds the same
leads in the memo.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from pathlib import Path
from typing import TypedDict

__all__ = ["COLUMNS", "MAX_LEADS", "Lead", "lead_key", "normalise", "parse_leads"]

COLUMNS = ("company", "country", "identifier", "website")
MAX_LEADS = 5000
"""A batch larger than this is refused: split it (each lead costs several model calls)."""

_BLANKS = {"", "-", "--", "n/a", "na", "none", "null", "unknown", "?", "tbd"}
_COUNTRY_NAMES = {
    "GERMANY": "DE",
    "DEUTSCHLAND": "DE",
    "FRANCE": "FR",
    "ITALY": "IT",
    "ITALIA": "IT",
    "NETHERLANDS": "NL",
    "THE NETHERLANDS": "NL",
    "HOLLAND": "NL",
    "BELGIUM": "BE",
    "UNITED KINGDOM": "GB",
    "UK": "GB",
    "GREAT BRITAIN": "GB",
    "ENGLAND": "GB",
    "SPAIN": "ES",
    "SWITZERLAND": "CH",
    "DENMARK": "DK",
    "FINLAND": "FI",
    "SWEDEN": "SE",
    "NORWAY": "NO",
    "AUSTRIA": "AT",
    "IRELAND": "IE",
    "USA": "US",
    "UNITED STATES": "US",
}


class Lead(TypedDict):
    key: str | None
    """Stable across runs: the company's slug and country, e.g. ``siemens-ag-de``."""
    row: int
    """The line of the CSV it came from (the header is line 1), as a spreadsheet shows it."""
    company: str | None
    country: str | None
    identifier: str | None
    website: str | None


def parse_leads(path: Path) -> list[Lead]:
    """The leads of a CSV with a header naming at least ``company`` (see ``COLUMNS``)."""
    with path.open(newline="", encoding="utf-8-sig") as file:  # -sig: Excel's byte-order mark
        reader = csv.DictReader(file)
        header = [(name or "").strip().lower() for name in reader.fieldnames or ()]
        if "company" not in header:
            raise ValueError(
                f"{path.name}: the header must name the columns {', '.join(COLUMNS)}"
                f" (company at least); it has {header}"
            )
        reader.fieldnames = header
        leads: list[Lead] = []
        for record in reader:
            if len(leads) == MAX_LEADS:
                raise ValueError(f"{path.name}: more than {MAX_LEADS} leads; split the batch")
            if any(_text(value) for value in record.values()):
                leads.append(normalise(record, reader.line_num))
    return leads


def normalise(record: dict[str, str | None], row: int) -> Lead:
    """One CSV record as a lead: blanks as None, a country code, a bare website domain."""
    company = _text(record.get("company"))
    country = _country(_text(record.get("country")))
    return Lead(
        key=lead_key(company, country) if company else None,
        row=row,
        company=company,
        country=country,
        identifier=_text(record.get("identifier")),
        website=_website(_text(record.get("website"))),
    )


def lead_key(company: str, country: str | None) -> str:
    """``"L'Oréal S.A.", "FR"`` -> ``"loreal-sa-fr"``: ASCII, lower case, dashes."""
    ascii_name = unicodedata.normalize("NFKD", company).encode("ascii", "ignore").decode()
    ascii_name = re.sub(r"['\u2019.]", "", ascii_name.lower())
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name).strip("-") or "company"
    return f"{slug}-{(country or 'xx').lower()}"


def _text(value: str | None) -> str | None:
    if value is None:
        return None
    text = " ".join(str(value).split())
    return None if text.lower() in _BLANKS else text


def _country(value: str | None) -> str | None:
    if value is None:
        return None
    upper = value.upper()
    if re.fullmatch(r"[A-Z]{2}", upper):
        return "GB" if upper == "UK" else upper
    return _COUNTRY_NAMES.get(upper, upper)


def _website(value: str | None) -> str | None:
    if value is None:
        return None
    domain = re.sub(r"^[a-z][a-z0-9+.-]*://", "", value.lower())
    domain = domain.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    return domain.removeprefix("www.") or None
