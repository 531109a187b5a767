"""Numbers that enter Baton from outside (request bodies, keys files, router files, API arguments): finite and in range.

One check for all of them, because NaN makes every comparison false (a NaN cap capped nothing) and a
number past a double (1e400 written out) overflows where it is used. Each caller turns the `ValueError`
into its own kind of error (a 400, a `KeysError`, E312, an `InputError`).
"""

from __future__ import annotations

import math


def finite(value: object, what: str, low: float | None = None, high: float | None = None) -> float:
    """`value` as a float: a real number (not a bool), finite, within [low, high]; else `ValueError` naming `what`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number, not {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number) or (low is not None and number < low) or (high is not None and number > high):
        if low is not None and high is not None:
            span = f" from {low:g} to {high:g}"
        else:
            span = f" >= {low:g}" if low is not None else f" <= {high:g}" if high is not None else ""
        raise ValueError(f"{what} must be a finite number{span}, got {value!r}")
    return number
