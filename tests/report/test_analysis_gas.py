"""Gas per cycle from pressure and temperature: n = P·V/(R·T), temperature compensated."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rig.analysis.gas import (
    R_J_MOL_K,
    STP_UL_PER_UMOL,
    cycle_bounds,
    gas_per_cycle,
    moles_in_headspace,
    pt_from_sensor_rows,
)

V_ML = 5.0
P0 = 101325.0
T0 = 298.15
HOUR = 3600.0


def trace(gas_umol_per_cycle: list[float], swing_K: float = 0.0, noise_Pa: float = 0.0,
          rest_h: float = 2.0, cycle_h: float = 2.0, every_s: float = 60.0, seed: int = 0):
    """A sealed holder's (t, P, T) and its cycles: gas made at a steady rate within each cycle,
    the temperature swinging by ``swing_K`` with a 5 h period."""
    n_cycles = len(gas_umol_per_cycle)
    t = np.arange(0.0, (rest_h + n_cycles * cycle_h + 0.5) * HOUR, every_s)
    made = np.zeros_like(t)
    bounds = []
    for k, gas in enumerate(gas_umol_per_cycle):
        start = (rest_h + k * cycle_h) * HOUR
        end = start + cycle_h * HOUR
        made += gas * 1e-6 * np.clip((t - start) / (end - start), 0.0, 1.0)
        bounds.append((k + 1, start, end))
    n0 = P0 * V_ML * 1e-6 / (R_J_MOL_K * T0)
    temp = T0 + swing_K * np.sin(2 * math.pi * t / (5 * HOUR))
    p = (n0 + made) * R_J_MOL_K * temp / (V_ML * 1e-6)
    p += np.random.default_rng(seed).normal(0.0, noise_Pa, len(t)) if noise_Pa else 0.0
    return t, p, temp, bounds


def test_domain_example_10_mbar_in_5_mL_at_25_C_is_2_umol_and_45_uL_at_stp():
    gas = moles_in_headspace(P0 + 1000.0, V_ML, T0) - moles_in_headspace(P0, V_ML, T0)
    assert gas * 1e6 == pytest.approx(2.02, abs=0.01)
    assert gas * 1e6 * STP_UL_PER_UMOL == pytest.approx(45.2, abs=0.1)


def test_a_temperature_swing_alone_moves_the_pressure_but_makes_no_gas():
    t, p, temp, bounds = trace([0.0] * 10, swing_K=1.0)
    assert p.max() - p.min() > 600.0  # ±1 K moves 1 bar by ±3.4 mbar
    result = gas_per_cycle(t, p, temp, bounds, V_ML)
    assert all(abs(row["gas_umol"]) < 1e-6 for row in result["cycles"])
    assert abs(result["total_umol"]) < 1e-5


def test_without_temperature_compensation_the_same_swing_would_look_like_gas():
    t, p, temp, bounds = trace([0.0] * 10, swing_K=1.0)
    naive = gas_per_cycle(t, p, np.full_like(temp, T0), bounds, V_ML)
    assert max(abs(row["gas_umol"]) for row in naive["cycles"]) > 0.5


def test_cycle_one_is_reported_apart_from_the_mean_of_later_cycles():
    made = [3.0] + [1.0] * 19
    t, p, temp, bounds = trace(made, swing_K=1.0, noise_Pa=5.0)
    result = gas_per_cycle(t, p, temp, bounds, V_ML)
    assert [row["cycle"] for row in result["cycles"]] == list(range(1, 21))
    assert result["first_cycle_umol"] == pytest.approx(3.0, abs=0.05)
    assert result["later_mean_umol"] == pytest.approx(1.0, abs=0.02)
    assert result["total_umol"] == pytest.approx(22.0, abs=0.2)
    assert result["total_uL_stp"] == pytest.approx(22.0 * 22.414, rel=0.01)
    row = result["cycles"][0]
    assert row["gas_uL_stp"] == pytest.approx(row["gas_umol"] * 22.414)
    assert result["before_cycling_umol"] == pytest.approx(0.0, abs=0.05)
    assert result["headspace_mL"] == V_ML


def test_a_single_cycle_has_no_later_mean_and_cycles_outside_the_record_are_left_out():
    t, p, temp, bounds = trace([2.0])
    result = gas_per_cycle(t, p, temp, bounds + [(2, 1e9, 1e9 + 10)], V_ML)
    assert [row["cycle"] for row in result["cycles"]] == [1]
    assert result["later_mean_umol"] is None


def test_sensor_rows_become_pressure_with_temperature_interpolated_onto_its_times():
    rows = [(0.0, "holder0", "pressure_Pa", 1e5), (0.0, "holder0", "temperature_K", 298.0),
            (20.0, "holder0", "temperature_K", 300.0), (10.0, "holder0", "pressure_Pa", 1.01e5),
            (5.0, "glovebox", "o2_ppm", 0.1)]
    t, p, temp = pt_from_sensor_rows(rows)
    assert t.tolist() == [0.0, 10.0]
    assert p.tolist() == [1e5, 1.01e5]
    assert temp.tolist() == [298.0, 299.0]


def test_sensor_rows_without_temperature_are_an_error_that_says_so():
    with pytest.raises(ValueError, match="no temperature readings"):
        pt_from_sensor_rows([(0.0, "holder0", "pressure_Pa", 1e5)])


def test_cycle_bounds_span_each_cycles_steps_and_skip_cycle_zero():
    steps = [{"cycle": 0, "t_start": 0.0, "t_end": 7200.0},
             {"cycle": 1, "t_start": 7200.0, "t_end": 10800.0},
             {"cycle": 1, "t_start": 10800.0, "t_end": 14400.0},
             {"cycle": 2, "t_start": 14400.0, "t_end": 18000.0}]
    assert cycle_bounds(steps) == [(1, 7200.0, 14400.0), (2, 14400.0, 18000.0)]
