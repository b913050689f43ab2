"""Per-cycle answers from the half-cycles a run recorded.

A cycle is one plating half-cycle and one stripping half-cycle with the same cycle number
(the engine numbers them explicitly; nothing is guessed from current signs).

>>> per_cycle([{"cycle": 1, "half_cycle": "plate", "charge_C": -4.0, "e_mean_abs_V": 0.02,
...             "e_end_V": -0.021},
...            {"cycle": 1, "half_cycle": "strip", "charge_C": 3.996, "e_mean_abs_V": 0.021,
...             "e_end_V": 0.022}])[0]["ce"]
0.999
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


def per_cycle(steps: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Plated and stripped charge (C), CE, and the mean |E| of each half-cycle (V)."""
    cycles: dict[int, dict[str, Any]] = {}
    for s in steps:
        half = s.get("half_cycle")
        if half not in ("plate", "strip"):
            continue
        row = cycles.setdefault(s["cycle"], {
            "cycle": s["cycle"], "plated_C": math.nan, "stripped_C": math.nan, "ce": math.nan,
            "eta_plate_V": math.nan, "eta_strip_V": math.nan,
            "eta_plate_end_V": math.nan, "eta_strip_end_V": math.nan,
        })
        key = "plated_C" if half == "plate" else "stripped_C"
        # several steps of one half-cycle (a rate change mid-way) add up
        prev = row[key]
        row[key] = abs(s["charge_C"]) + (0.0 if math.isnan(prev) else prev)
        # NULL when the step passed no time (ended at once, e.g. aborted while paused)
        mean = s["e_mean_abs_V"]
        row[f"eta_{half}_V"] = math.nan if mean is None else mean
        row[f"eta_{half}_end_V"] = abs(s["e_end_V"]) if s["e_end_V"] is not None else math.nan
    out = []
    for c in sorted(cycles):
        row = cycles[c]
        if row["plated_C"] > 0 and not math.isnan(row["stripped_C"]):
            row["ce"] = row["stripped_C"] / row["plated_C"]
        out.append(row)
    return out
