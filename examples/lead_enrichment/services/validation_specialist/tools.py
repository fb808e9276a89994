"""The validation specialist's tools: exact identifier checks with typed schemas.

Each tool returns the same verdict object, so a caller can pass it on
unchanged: ``{"valid": true | false | null, "kind": "lei" | "iban" | "vat" |
"luhn" | "unknown", "identifier": the identifier compacted, "problem":
"format" | "checksum" | "unsupported" | null, "reason": "..."}``. ``valid``
is null when no algorithm applies (a VAT number of a country without a rule
here), never a guess. The algorithms live in ``checksums.py``; the supported
VAT countries are listed there.
"""

from __future__ import annotations

import re
from typing import Any

from mesh import tool

from services.validation_specialist import checksums
from services.validation_specialist.checksums import Verdict

__all__ = ["check_iban", "check_identifier", "check_lei", "check_luhn", "check_vat"]


@tool
def check_lei(lei: str) -> dict[str, Any]:
    """Check a Legal Entity Identifier (ISO 17442): its format and ISO 7064 MOD 97-10 digits.

    Args:
        lei: The LEI, 20 characters; spaces and dashes are ignored.

    Returns:
        The verdict: valid, kind, identifier, problem (format, checksum or null) and reason.
    """
    return dict(checksums.lei(lei))


@tool
def check_iban(iban: str) -> dict[str, Any]:
    """Check an IBAN (ISO 13616): its format, its length for the country and its check digits.

    Args:
        iban: The IBAN; spaces are ignored.

    Returns:
        The verdict: valid, kind, identifier, problem (format, checksum or null) and reason.
    """
    return dict(checksums.iban(iban))


@tool
def check_vat(vat: str, country: str | None = None) -> dict[str, Any]:
    """Check a VAT number's format and check digits by its country's rule (DE, FR, IT, NL, BE,
    GB); other countries get valid = null and problem = "unsupported".

    Args:
        vat: The VAT number, with or without its 2-letter country prefix.
        country: The ISO 3166 country code, needed when the number has no prefix.

    Returns:
        The verdict: valid, kind, identifier, problem and reason.
    """
    return dict(checksums.vat(vat, country))


@tool
def check_luhn(number: str) -> dict[str, Any]:
    """Check a number's Luhn (mod 10) check digit: card numbers, French SIRENs, Italian VAT.

    Args:
        number: The digits; spaces are ignored.

    Returns:
        The verdict: valid, kind, identifier, problem (format, checksum or null) and reason.
    """
    return dict(checksums.luhn(number))


@tool
def check_identifier(identifier: str, country: str | None = None) -> dict[str, Any]:
    """Check a company or bank identifier of unknown kind: recognises an IBAN, an LEI or a VAT
    number by its shape and runs that check.

    Args:
        identifier: The identifier as written.
        country: The company's ISO 3166 country code, if known (VAT numbers without prefix).

    Returns:
        The verdict: valid, kind, identifier, problem and reason.
    """
    return dict(identify(identifier, country))


def identify(identifier: str, country: str | None = None) -> Verdict:
    """The check an identifier's shape calls for.

    An IBAN and an LEI can both be 20 characters (Austrian, Luxembourg, Baltic
    IBANs): a known IBAN country, two check digits and that country's IBAN
    length win, as an LEI's first four characters rarely spell them.
    """
    code = checksums.compact(identifier)
    if re.fullmatch(r"[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}", code) and (
        checksums.IBAN_LENGTHS.get(code[:2]) == len(code) or len(code) != 20
    ):
        return checksums.iban(code)
    if len(code) == 20:
        return checksums.lei(code)
    if re.match(r"[A-Z]{2}", code) or country:
        return checksums.vat(code, country)
    return Verdict(
        valid=None,
        kind="unknown",
        identifier=code,
        problem="unsupported",
        reason="not recognisable as an IBAN, an LEI or a VAT number with its country prefix",
    )
