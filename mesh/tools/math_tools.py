"""Arithmetic tools of the seed scenario: unit conversion, factorial, primes.

They are small on purpose, but they guard their inputs the way every tool
should: a model will pass negative, huge and absurd values, and each of
those must come back as a clear error rather than a hang or a crash.
"""

from __future__ import annotations

import math
import random
import time

from mesh.errors import ToolExecutionError
from mesh.tools.base import Tool
from mesh.tools.decorator import tool

__all__ = ["MAX_FACTORIAL_N", "PrimeTool", "celsius_to_fahrenheit", "factorial"]

MAX_FACTORIAL_N = 1000
ABSOLUTE_ZERO_C = -273.15


@tool
def celsius_to_fahrenheit(celsius: float) -> float:
    """Convert a temperature from degrees Celsius to degrees Fahrenheit.

    Args:
        celsius: Temperature in degrees Celsius (not below absolute zero, -273.15).
    """
    if celsius < ABSOLUTE_ZERO_C:
        raise ValueError(f"{celsius} C is below absolute zero ({ABSOLUTE_ZERO_C} C)")
    return celsius * 9 / 5 + 32


@tool
def factorial(n: int) -> int:
    """Compute n! exactly.

    Args:
        n: A whole number from 0 to 1000.
    """
    if n < 0:
        raise ValueError(f"factorial is not defined for negative numbers (got {n})")
    if n > MAX_FACTORIAL_N:
        raise ValueError(f"n={n} is too large; this tool accepts n <= {MAX_FACTORIAL_N}")
    return math.factorial(n)


# Miller-Rabin with these bases is exact for every n below this bound.
_MR_BASES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41)
MAX_PRIME_N = 3_317_044_064_679_887_385_961_981
_TRIAL_LIMIT = 10_000


class PrimeTool(Tool):
    """Smallest prime factor of n, or that n is prime; exact and time-bounded."""

    name = "smallest_prime_factor"
    description = (
        "Tell whether a whole number n is prime. For a composite n, return its smallest "
        "prime factor. Exact for 0 <= n < 3.3e24."
    )
    inputs = {"n": {"type": "integer", "description": "The whole number to examine."}}
    output_type = "string"

    def __init__(self, time_limit_s: float = 5.0) -> None:
        self.time_limit_s = time_limit_s
        super().__init__()

    def forward(self, n: int) -> str:
        if n < 0:
            raise ValueError(f"n must be >= 0 (got {n})")
        if n < 2:
            return f"{n} is neither prime nor composite."
        if n >= MAX_PRIME_N:
            raise ValueError(f"n must be below {MAX_PRIME_N} (about 3.3e24); got {n}")
        factor = smallest_prime_factor(n, deadline=time.monotonic() + self.time_limit_s)
        if factor == n:
            return f"{n} is prime."
        return f"{n} is composite; its smallest prime factor is {factor}."


def smallest_prime_factor(n: int, deadline: float) -> int:
    """Smallest prime factor of n >= 2 (n itself when prime)."""
    for p in range(2, min(_TRIAL_LIMIT, math.isqrt(n)) + 1):
        if n % p == 0:
            return p
    if n < _TRIAL_LIMIT * _TRIAL_LIMIT or is_prime(n):
        return n
    return min(_prime_factors(n, deadline))


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    for p in _MR_BASES:
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for a in _MR_BASES:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def _prime_factors(n: int, deadline: float) -> list[int]:
    if is_prime(n):
        return [n]
    d = _pollard_brent(n, deadline)
    return _prime_factors(d, deadline) + _prime_factors(n // d, deadline)


def _pollard_brent(n: int, deadline: float) -> int:
    """A non-trivial factor of composite n (Brent's variant of Pollard's rho)."""
    rng = random.Random(n)
    while True:
        y, c, m = rng.randrange(1, n), rng.randrange(1, n), 128
        g = r = q = 1
        x = ys = y
        while g == 1:
            if time.monotonic() > deadline:
                raise ToolExecutionError(f"could not factor {n} within the time limit")
            x = y
            for _ in range(r):
                y = (y * y + c) % n
            k = 0
            while k < r and g == 1:
                ys = y
                for _ in range(min(m, r - k)):
                    y = (y * y + c) % n
                    q = q * abs(x - y) % n
                g = math.gcd(q, n)
                k += m
            r *= 2
        if g == n:
            g = 1
            while g == 1:
                ys = (ys * ys + c) % n
                g = math.gcd(abs(x - ys), n)
        if g != n:
            return g
