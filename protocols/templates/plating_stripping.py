"""``kind = "plating_stripping"``: symmetric (or Na||Cu) galvanostatic cycling.

Per cell: an optional open-circuit rest, then a loop of ``cycles`` cycles, each one plating
``areal_capacity`` onto the working electrode at ``current_density`` (negative current, see
``protocols.plan``) and then stripping the same charge back (positive current). A
``rate_ladder`` replaces ``current_density`` and ``cycles`` with one such loop per rung, cycles
numbered across the rungs. Currents and charges scale with each cell's area, so cells of
different sizes can share one file. The channel's outcome is the cycle it failed in, if any
(``[failure]``: shorts, overpotential divergence; off unless the file asks).

Example:
    >>> from protocols.model import PlatingStrippingModel
    >>> m = PlatingStrippingModel(kind="plating_stripping", name="demo",
    ...     current_density="1 mA/cm^2", areal_capacity="1 mAh/cm^2", cycles=200,
    ...     record_interval="10 s", cells=[dict(channel=0, cell_id="A", type="symmetric",
    ...     area="1.13 cm^2", electrolyte="1 M NaPF6 in diglyme")])
    >>> plan = expand(m)
    >>> plan.total_cycles, plan.channels[0].steps[0].steps[0].current_A, plan.outcome
    (200, -0.00113, 'failure_cycle')
"""

from __future__ import annotations

from protocols.model import CellModel, PlatingStrippingModel
from protocols.plan import ChannelPlan, Plan, Step
from protocols.templates.common import (
    cell_spec,
    failure_criteria,
    ladder,
    record_rule,
    rest,
    rung_table,
    safety_for,
)


def cell_steps(m: PlatingStrippingModel, cell: CellModel) -> tuple[Step, ...]:
    """The steps one cell runs: [rest] + one loop of plate, strip per rung."""
    record = record_rule(m.record_interval, m.record_dE)
    first: tuple[Step, ...] = () if m.rest_before is None else (rest(m.rest_before, record),)
    return first + ladder(m.rungs(), cell.area, m.areal_capacity * cell.area, record)


def parameters(m: PlatingStrippingModel) -> dict:
    """The template's parameters in SI with the unit in each name, for display."""
    rungs = m.rungs()
    return {
        "current_density_A_per_cm2": m.current_density,
        "areal_capacity_C_per_cm2": m.areal_capacity,
        "cycles": sum(n for _, n in rungs),
        "record_interval_s": m.record_interval,
        "record_dE_V": m.record_dE,
        "rest_before_s": m.rest_before,
        "rungs": rung_table(rungs),
    }


def expand(m: PlatingStrippingModel) -> Plan:
    """The validated file as a Plan (one ChannelPlan per cell)."""
    channels = tuple(ChannelPlan(cell_spec(c), cell_steps(m, c)) for c in m.cells)
    return Plan(kind=m.kind, name=m.name, safety=safety_for(m.safety, channels),
                channels=channels, total_cycles=sum(n for _, n in m.rungs()),
                parameters=parameters(m),
                failure=failure_criteria(m.failure, j_min_A_cm2=min(j for j, _ in m.rungs())),
                outcome="failure_cycle")
