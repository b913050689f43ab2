"""``kind = "critical_current_density"``: step the current density up until the cell fails.

Per cell: an optional rest, then ``cycles_per_step`` plating–stripping cycles at each current
density in turn (``current_densities``, or a ``[ramp]``), all at the same ``areal_capacity``,
one counting loop per current density (labels ``rate_1``, ``rate_2``...; cycles numbered across
them). Short detection is on by default (``DEFAULT_FAILURE``): the run is meant to end on a
short or at the safety window, so those end reasons are the plan's expected ends, and the
channel's outcome is the last current density whose cycles all completed.

Example:
    >>> from protocols.model import CriticalCurrentDensityModel
    >>> m = CriticalCurrentDensityModel(kind="critical_current_density", name="demo",
    ...     ramp=dict(start="0.5 mA/cm^2", factor=2.0, max="4 mA/cm^2"),
    ...     areal_capacity="1 mAh/cm^2", cycles_per_step=5, record_interval="10 s",
    ...     cells=[dict(channel=0, cell_id="A", type="symmetric", area="1 cm^2",
    ...                 electrolyte="1 M NaPF6 in diglyme")])
    >>> plan = expand(m)
    >>> [lp.steps[1].current_A for lp in plan.channels[0].steps], plan.total_cycles
    ([0.0005, 0.001, 0.002, 0.004], 20)
"""

from __future__ import annotations

import dataclasses

from protocols.model import CellModel, CriticalCurrentDensityModel
from protocols.plan import ChannelPlan, FailureCriteria, Loop, Plan, Step
from protocols.templates.common import (
    default_short_below,
    cell_spec,
    cycles_loop,
    failure_criteria,
    record_rule,
    rest,
    rung_table,
    safety_for,
)

DEFAULT_FAILURE = FailureCriteria(short_below_V=0.005, short_drop_fraction=0.5,
                                  short_drop_window_s=60.0, soft_short_ends=True)
EXPECTED_ENDS = ("short_hard", "short_soft", "safety_window")


def default_failure(m: CriticalCurrentDensityModel) -> FailureCriteria:
    """``DEFAULT_FAILURE`` with its hard-short threshold scaled to the lowest current density
    (5 mV from 0.5 mA/cm^2 up; below that a healthy glyme cell reads under 5 mV)."""
    return dataclasses.replace(DEFAULT_FAILURE,
                               short_below_V=default_short_below(min(m.densities())))


def rungs(m: CriticalCurrentDensityModel) -> list[tuple[float, int]]:
    return [(j, m.cycles_per_step) for j in m.densities()]


def cell_steps(m: CriticalCurrentDensityModel, cell: CellModel) -> tuple[Step, ...]:
    record = record_rule(m.record_interval, m.record_dE)
    first: tuple[Step, ...] = () if m.rest_before is None else (rest(m.rest_before, record),)
    q = m.areal_capacity * cell.area
    loops: tuple[Loop, ...] = tuple(cycles_loop(n, j * cell.area, q, record, label=f"rate_{k}")
                                    for k, (j, n) in enumerate(rungs(m), 1))
    return first + loops


def parameters(m: CriticalCurrentDensityModel) -> dict:
    return {
        "current_densities_A_per_cm2": m.densities(),
        "areal_capacity_C_per_cm2": m.areal_capacity,
        "cycles_per_step": m.cycles_per_step,
        "record_interval_s": m.record_interval,
        "record_dE_V": m.record_dE,
        "rest_before_s": m.rest_before,
        "rungs": rung_table(rungs(m)),
    }


def expand(m: CriticalCurrentDensityModel) -> Plan:
    channels = tuple(ChannelPlan(cell_spec(c), cell_steps(m, c)) for c in m.cells)
    return Plan(kind=m.kind, name=m.name, safety=safety_for(m.safety, channels),
                channels=channels, total_cycles=len(m.densities()) * m.cycles_per_step,
                parameters=parameters(m),
                failure=failure_criteria(m.failure, default_failure(m), min(m.densities())),
                outcome="ccd", expected_ends=EXPECTED_ENDS)
