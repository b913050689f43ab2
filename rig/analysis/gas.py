"""Gas per cycle from a sealed holder's pressure and temperature (domain.md: Gas evolution).

The amount of gas in the headspace is the ideal gas law with the *measured* temperature,
n = P·V/(R·T), so a temperature swing alone (P ∝ T at fixed n) gives no gas: 1 K at 1 bar moves
P by ~3.4 mbar, about one cycle's signal, which is why the compensation is mandatory. A cycle's
gas is n at its end minus n at its start (the cycle's steps' ``t_start`` of the first and
``t_end`` of the last), reported in µmol and in µL at STP (22.414 L/mol, 273.15 K, 1 atm).
Cycle 1 forms the SEI and is reported apart from the mean of the later cycles.

Example (domain.md's: a 10 mbar rise in 5 mL at 25 °C is 2.0 µmol, about 45 µL at STP)::

    >>> n = moles_in_headspace(101325.0 + 1000.0, 5.0, 298.15) - moles_in_headspace(
    ...     101325.0, 5.0, 298.15)
    >>> round(n * 1e6, 2), round(n * 1e6 * STP_UL_PER_UMOL, 1)
    (2.02, 45.2)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

R_J_MOL_K = 8.314462618
STP_UL_PER_UMOL = 22.414  # µL of ideal gas per µmol at 273.15 K and 1 atm (22.414 L/mol)
PRESSURE_QUANTITIES = ("pressure_Pa", "pressure", "P")
TEMPERATURE_QUANTITIES = ("temperature_K", "temperature", "T")
EDGE_S = 60.0  # n at a cycle boundary: the mean of the samples within this much of it


def moles_in_headspace(pressure_Pa: Any, headspace_mL: float, temperature_K: Any) -> Any:
    """n = P·V/(R·T) in mol (arrays work too).

    >>> round(moles_in_headspace(1e5, 5.0, 300.0) * 1e6, 2)
    200.45
    """
    return pressure_Pa * headspace_mL * 1e-6 / (R_J_MOL_K * temperature_K)


def pt_from_sensor_rows(rows: Iterable[Sequence[Any]]) -> tuple[np.ndarray, ...]:
    """Store rows ``(t, sensor, quantity, value)`` -> arrays ``(t, P Pa, T K)`` on the pressure
    readings' times (temperature interpolated onto them). Quantities are named
    ``pressure_Pa`` / ``temperature_K`` (``pressure`` / ``temperature`` also accepted).

    >>> t, p, temp = pt_from_sensor_rows([(0, "g", "pressure_Pa", 1e5), (0, "g", "temperature_K",
    ...     298.0), (10, "g", "pressure_Pa", 1.01e5), (10, "g", "temperature_K", 300.0)])
    >>> temp.tolist()
    [298.0, 300.0]
    """
    pressure, temperature = [], []
    for t, _, quantity, value in rows:
        if quantity in PRESSURE_QUANTITIES:
            pressure.append((float(t), float(value)))
        elif quantity in TEMPERATURE_QUANTITIES:
            temperature.append((float(t), float(value)))
    if not pressure or not temperature:
        missing = "pressure" if not pressure else "temperature"
        raise ValueError(f"no {missing} readings among the sensor rows (quantities "
                         f"{', '.join(PRESSURE_QUANTITIES + TEMPERATURE_QUANTITIES)})")
    pressure.sort()
    temperature.sort()
    t = np.array([r[0] for r in pressure])
    p = np.array([r[1] for r in pressure])
    tt = np.array([r[0] for r in temperature])
    return t, p, np.interp(t, tt, np.array([r[1] for r in temperature]))


def cycle_bounds(steps: Iterable[dict[str, Any]]) -> list[tuple[int, float, float]]:
    """``[(cycle, t_start, t_end)]`` of every cycle >= 1 in the steps table, in order.

    >>> cycle_bounds([{"cycle": 0, "t_start": 0, "t_end": 5}, {"cycle": 1, "t_start": 5,
    ...     "t_end": 8}, {"cycle": 1, "t_start": 8, "t_end": 12}])
    [(1, 5.0, 12.0)]
    """
    spans: dict[int, list[float]] = {}
    for s in steps:
        c = s.get("cycle") or 0
        if c < 1:
            continue
        span = spans.setdefault(c, [float(s["t_start"]), float(s["t_end"])])
        span[0], span[1] = min(span[0], float(s["t_start"])), max(span[1], float(s["t_end"]))
    return [(c, a, b) for c, (a, b) in sorted(spans.items())]


def _n_at(t: np.ndarray, n: np.ndarray, when: float, edge_s: float) -> float:
    """n at ``when``: the mean over samples within ``edge_s``, else interpolated."""
    near = np.abs(t - when) <= edge_s
    return float(n[near].mean()) if near.any() else float(np.interp(when, t, n))


def gas_per_cycle(t: Sequence[float] | np.ndarray,
                  pressure_Pa: Sequence[float] | np.ndarray,
                  temperature_K: Sequence[float] | np.ndarray,
                  bounds: Sequence[tuple[int, float, float]],
                  headspace_mL: float, edge_s: float = EDGE_S) -> dict[str, Any]:
    """Gas made in each cycle, cycle 1 apart from the mean of the later ones.

    Returns ``cycles`` (a row per cycle: ``cycle``, ``gas_umol``, ``gas_uL_stp``),
    ``first_cycle_umol``, ``later_mean_umol`` (None with one cycle), ``total_umol``,
    ``total_uL_stp``, ``before_cycling_umol`` (the drift before cycle 1: a leak check) and
    ``headspace_mL``. A cycle outside the sensor record is left out.
    """
    tt = np.asarray(t, dtype=float)
    order = np.argsort(tt)
    tt = tt[order]
    n = moles_in_headspace(np.asarray(pressure_Pa, float)[order], headspace_mL,
                           np.asarray(temperature_K, float)[order]) * 1e6  # µmol
    rows = []
    for cycle, start, end in bounds:
        if len(tt) == 0 or start < tt[0] - edge_s or end > tt[-1] + edge_s:
            continue
        half = min(edge_s, (end - start) / 4)
        gas = _n_at(tt, n, end, half) - _n_at(tt, n, start, half)
        rows.append({"cycle": cycle, "gas_umol": gas, "gas_uL_stp": gas * STP_UL_PER_UMOL})
    first = next((r["gas_umol"] for r in rows if r["cycle"] == 1), None)
    later = [r["gas_umol"] for r in rows if r["cycle"] > 1]
    total = sum(r["gas_umol"] for r in rows)
    before = None
    if bounds and len(tt) and tt[0] < bounds[0][1]:
        before = _n_at(tt, n, bounds[0][1], edge_s) - float(n[0])
    return {
        "cycles": rows,
        "first_cycle_umol": first,
        "later_mean_umol": float(np.mean(later)) if later else None,
        "total_umol": total,
        "total_uL_stp": total * STP_UL_PER_UMOL,
        "before_cycling_umol": before,
        "headspace_mL": headspace_mL,
    }
