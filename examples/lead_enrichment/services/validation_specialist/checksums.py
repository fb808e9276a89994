"""Exact checks of company and bank identifiers, as plain functions (the tools wrap them).

A check digit is arithmetic that a model gets wrong often enough to matter,
and a verdict must say *why*, so each check returns a ``Verdict``: ``valid``
(``None`` when no algorithm applies), the ``kind`` checked, the identifier
as compacted, the ``problem`` (``format``, ``checksum``, ``unsupported`` or
None) and a ``reason`` a person can act on.

- LEI (ISO 17442): 18 letters or digits and 2 check digits, ISO 7064 MOD 97-10.
- IBAN (ISO 13616): country, 2 check digits, the national account number
  (its length per country), ISO 7064 MOD 97-10.
- Luhn: the mod-10 check digit of card numbers, French SIRENs and Italian VAT numbers.
- VAT numbers, by country prefix (or the country given):
  DE: 9 digits, ISO 7064 MOD 11,10;
  FR: a 2-digit key and the 9-digit SIREN: the SIREN's Luhn digit, and the key
  equal to (12 + 3 x (SIREN mod 97)) mod 97 (alphanumeric keys are not checked);
  IT: 11 digits, digits 8-10 a tax office code, Luhn;
  NL: 9 digits, "B", 2 digits: weighted MOD 11 (companies) or ISO 7064 MOD 97-10
  over "NL" and the number (sole proprietors' numbers since 2020);
  BE: 10 digits starting 0 or 1, the last two equal to 97 - (first eight mod 97);
  GB: 9 digits (12 with a branch suffix), weighted MOD 97 (the sum mod 97 is 0,
  or, from 100 000 000 on, 42 or 55 under the newer "9755" rule).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypedDict

__all__ = ["IBAN_LENGTHS", "VAT_COUNTRIES", "Verdict", "compact", "iban", "lei", "luhn", "vat"]

_SEPARATORS = re.compile(r"[\s.\-/,]+")


class Verdict(TypedDict):
    valid: bool | None
    kind: str
    identifier: str
    problem: str | None
    reason: str


def compact(value: str) -> str:
    """Upper case without the spaces, dots, dashes and slashes people write numbers with."""
    return _SEPARATORS.sub("", value).upper()


def _verdict(kind: str, identifier: str, problem: str | None, reason: str) -> Verdict:
    valid = None if problem == "unsupported" else problem is None
    return Verdict(valid=valid, kind=kind, identifier=identifier, problem=problem, reason=reason)


def _mod97(text: str) -> int:
    """ISO 7064 MOD 97-10 over letters and digits (A=10 ... Z=35)."""
    return int("".join(str(int(c, 36)) for c in text)) % 97


def _luhn_ok(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def lei(value: str) -> Verdict:
    code = compact(value)
    if not re.fullmatch(r"[A-Z0-9]{18}[0-9]{2}", code):
        return _verdict(
            "lei",
            code,
            "format",
            "an LEI is 20 characters: 18 letters or digits, "
            f"then 2 check digits; got {code!r} ({len(code)} characters)",
        )
    if _mod97(code) != 1:
        expected = 98 - _mod97(code[:18] + "00")
        return _verdict(
            "lei",
            code,
            "checksum",
            f"ISO 7064 MOD 97-10 check digits should be {expected:02d}, not {code[18:]}",
        )
    return _verdict("lei", code, None, "ISO 7064 MOD 97-10 check digits match")


IBAN_LENGTHS = {
    "AD": 24,
    "AT": 20,
    "BE": 16,
    "BG": 22,
    "CH": 21,
    "CY": 28,
    "CZ": 24,
    "DE": 22,
    "DK": 18,
    "EE": 20,
    "ES": 24,
    "FI": 18,
    "FR": 27,
    "GB": 22,
    "GR": 27,
    "HR": 21,
    "HU": 28,
    "IE": 22,
    "IS": 26,
    "IT": 27,
    "LI": 21,
    "LT": 20,
    "LU": 20,
    "LV": 21,
    "MC": 27,
    "MT": 31,
    "NL": 18,
    "NO": 15,
    "PL": 28,
    "PT": 25,
    "RO": 24,
    "SE": 24,
    "SI": 19,
    "SK": 24,
    "SM": 27,
}
"""The IBAN's length per country (ISO 13616 registry), for the countries checked exactly."""


def iban(value: str) -> Verdict:
    code = compact(value)
    if not re.fullmatch(r"[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}", code):
        return _verdict(
            "iban",
            code,
            "format",
            "an IBAN is a country code, 2 check digits and "
            f"up to 30 letters or digits; got {code!r}",
        )
    country, length = code[:2], IBAN_LENGTHS.get(code[:2])
    if length is not None and len(code) != length:
        return _verdict(
            "iban", code, "format", f"a {country} IBAN has {length} characters, not {len(code)}"
        )
    if _mod97(code[4:] + code[:4]) != 1:
        expected = 98 - _mod97(code[4:] + country + "00")
        return _verdict(
            "iban",
            code,
            "checksum",
            f"ISO 7064 MOD 97-10 check digits should be {expected:02d}, not {code[2:4]}",
        )
    note = "" if length else f" (the length of {country} IBANs was not checked)"
    return _verdict("iban", code, None, f"ISO 7064 MOD 97-10 check digits match{note}")


def luhn(value: str) -> Verdict:
    code = compact(value)
    if not re.fullmatch(r"[0-9]{2,}", code):
        return _verdict("luhn", code, "format", f"a Luhn number is 2 or more digits; got {code!r}")
    if not _luhn_ok(code):
        return _verdict("luhn", code, "checksum", "the Luhn (mod 10) check digit does not match")
    return _verdict("luhn", code, None, "the Luhn (mod 10) check digit matches")


# Each national rule gets the number without its country prefix and returns
# (problem, reason); the shape is checked first, from the pattern.
_Rule = Callable[[str], tuple[str | None, str]]


def _de(number: str) -> tuple[str | None, str]:
    product = 10
    for digit in number[:8]:
        total = (int(digit) + product) % 10 or 10
        product = 2 * total % 11
    check = (11 - product) % 10
    if int(number[8]) != check:
        return "checksum", f"ISO 7064 MOD 11,10 check digit should be {check}, not {number[8]}"
    return None, "ISO 7064 MOD 11,10 check digit matches"


def _fr(number: str) -> tuple[str | None, str]:
    key, siren = number[:2], number[2:]
    # Monaco's companies have French VAT numbers whose "SIREN" starts 000 and has no Luhn digit.
    if not siren.startswith("000") and not _luhn_ok(siren):
        return "checksum", f"the SIREN {siren} fails its Luhn check digit"
    if not key.isdigit():
        return "unsupported", "the SIREN's Luhn digit matches; alphanumeric keys are not checked"
    expected = (12 + 3 * (int(siren) % 97)) % 97
    if int(key) != expected:
        return "checksum", f"the key should be {expected:02d} for SIREN {siren}, not {key}"
    return None, "the SIREN's Luhn digit and the key (12 + 3 x SIREN mod 97) match"


def _it(number: str) -> tuple[str | None, str]:
    office = int(number[7:10])  # digits 8-10: the tax office that issued the number
    if int(number[:7]) == 0 or not (1 <= office <= 100 or office in (120, 121, 888, 999)):
        return (
            "format",
            f"digits 8-10 name no tax office (001-100, 120, 121, 888, 999): {office:03d}",
        )
    if not _luhn_ok(number):
        return "checksum", "the Luhn check digit (the 11th digit) does not match"
    return None, "the Luhn check digit matches"


def _nl(number: str) -> tuple[str | None, str]:
    if int(number[:9]) == 0 or number.endswith("B00"):
        return "format", "the 9 digits and the 2 after B (a sequence number) cannot be all zeros"
    weighted = sum(int(d) * w for d, w in zip(number[:8], range(9, 1, -1), strict=True)) % 11
    if weighted == int(number[8]):
        return None, "the weighted MOD 11 check digit matches"
    if _mod97("NL" + number) == 1:
        return None, "ISO 7064 MOD 97-10 over NL and the number matches"
    return "checksum", "neither the MOD 11 check digit nor ISO 7064 MOD 97-10 matches"


def _be(number: str) -> tuple[str | None, str]:
    expected = 97 - int(number[:8]) % 97
    if int(number[8:]) != expected:
        return "checksum", f"the last two digits should be {expected:02d}, not {number[8:]}"
    return None, "the check digits (97 - first eight mod 97) match"


def _gb(number: str) -> tuple[str | None, str]:
    weights = (8, 7, 6, 5, 4, 3, 2, 10, 1)
    remainder = sum(int(d) * w for d, w in zip(number[:9], weights, strict=True)) % 97
    # Numbers from 100 000 000 on may also use the newer "9755" check (remainder 42 or 55).
    allowed = (0, 42, 55) if int(number[:3]) >= 100 else (0,)
    if remainder not in allowed:
        expected = " or ".join(map(str, allowed))
        return "checksum", f"the weighted MOD 97 sum leaves {remainder}, not {expected}"
    return None, "the weighted MOD 97 check digits match"


VAT_COUNTRIES: dict[str, tuple[str, str, _Rule]] = {
    "DE": (r"[1-9][0-9]{8}", "DE and 9 digits, the first not 0", _de),
    "FR": (r"[0-9A-HJ-NP-Z]{2}[0-9]{9}", "FR, a 2-character key and the 9-digit SIREN", _fr),
    "IT": (r"[0-9]{11}", "IT and 11 digits", _it),
    "NL": (r"[0-9]{9}B[0-9]{2}", "NL, 9 digits, B and 2 digits", _nl),
    "BE": (r"[01][0-9]{9}", "BE and 10 digits starting 0 or 1", _be),
    "GB": (r"[0-9]{9}(?:[0-9]{3})?", "GB and 9 digits (12 with a branch)", _gb),
}
"""Country: (pattern of the number after the prefix, that pattern in words, its check)."""


def vat(value: str, country: str | None = None) -> Verdict:
    code = compact(value)
    given = compact(country or "")
    prefix = code[:2] if re.match(r"[A-Z]{2}", code) else ""
    if prefix and given and prefix != given:
        return _verdict(
            "vat", code, "format", f"the prefix {prefix} does not match the country {given}"
        )
    prefix = prefix or given
    number = code[2:] if code.startswith(prefix) else code
    if not prefix:
        return _verdict("vat", code, "format", "no country: give the VAT number with its prefix")
    if prefix not in VAT_COUNTRIES:
        supported = ", ".join(VAT_COUNTRIES)
        return _verdict(
            "vat",
            prefix + number,
            "unsupported",
            f"no checksum rule for {prefix} VAT numbers (checked: {supported})",
        )
    if prefix == "BE" and re.fullmatch(r"[0-9]{9}", number):
        number = "0" + number  # the old 9-digit form of a Belgian enterprise number
    pattern, shape, rule = VAT_COUNTRIES[prefix]
    if not re.fullmatch(pattern, number):
        return _verdict(
            "vat",
            prefix + number,
            "format",
            f"a {prefix} VAT number is {shape}; got {prefix + number!r}",
        )
    problem, reason = rule(number)
    return _verdict("vat", prefix + number, problem, reason)
