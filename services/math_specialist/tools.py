"""The math specialist's own tools, beside the built-in ones the config names."""

from __future__ import annotations

import math

from mesh import tool

__all__ = ["greatest_common_divisor", "least_common_multiple"]


@tool
def greatest_common_divisor(a: int, b: int) -> int:
    """The greatest common divisor of two whole numbers (0 when both are 0).

    Args:
        a: A whole number.
        b: Another whole number.
    """
    return math.gcd(a, b)


@tool
def least_common_multiple(a: int, b: int) -> int:
    """The least common multiple of two whole numbers (0 when either is 0).

    Args:
        a: A whole number.
        b: Another whole number.
    """
    return math.lcm(a, b)
