"""``kind = "plating_stripping"``: symmetric (or Na||Cu) galvanostatic cycling.

Per cell: an optional open-circuit rest, then a loop of ``cycles`` cycles, each one plating
``areal_capacity`` onto the working electrode at ``current_density`` (negative current, see
``protocols.plan``) and then stripping the same charge back (positive current). Currents and
charges scale with each cell's area, so cells of different sizes can share one file.

Example:
    >>> from protocols.model import PlatingStrippingModel
    >>> m = PlatingStrippingModel(kind="plating_stripping", name="demo",
    ...     current_density="1 mA/cm^2", areal_capacity="1 mAh/cm^2", cycles=200,
    ...     record_interval="10 s", cells=[dict(channel=0, cell_id="A", type="symmetric",
    ...     area="1.13 cm^2", electrolyte="1 M NaPF6 in diglyme")])
    >>> plan = expand(m)
    >>> plan.total_cycles, plan.channels[0].steps[0].steps[0].current_A
    (200, -0.00113)
"""

from __future__ import annotations

from protocols.model import CellModel, PlatingStrippingModel
from protocols.plan import (
    ChannelPlan,
    ConstantCurrent,
    EndCondition,
    Loop,
    Plan,
    RecordRule,
    Rest,
    Step,
)
from protocols.templates.common import cell_spec, safety_for


def record_rule(m: PlatingStrippingModel) -> RecordRule:
    """How often to record, from ``record_interval`` and ``record_dE``."""
    return RecordRule(every_s=m.record_interval, every_dE_V=m.record_dE)


def half_cycle(current_A: float, charge_C: float, which: str, record: RecordRule) -> Step:
    """One half-cycle: ``current_A`` until ``charge_C`` has passed.

    >>> half_cycle(-1e-3, 3.6, "plate", RecordRule(10.0)).half_cycle
    'plate'
    """
    return ConstantCurrent(current_A=current_A, ends=(EndCondition("charge", charge_C),),
                           record=record, label=which, half_cycle=which)  # type: ignore[arg-type]


def cell_steps(m: PlatingStrippingModel, cell: CellModel) -> tuple[Step, ...]:
    """The steps one cell runs: [rest] + loop(cycles) of plate, strip."""
    record = record_rule(m)
    current = m.current_density * cell.area
    charge = m.areal_capacity * cell.area
    cycle = (half_cycle(-current, charge, "plate", record),
             half_cycle(current, charge, "strip", record))
    rest: tuple[Step, ...] = ()
    if m.rest_before is not None:
        rest = (Rest(ends=(EndCondition("time", m.rest_before),), record=record),)
    return rest + (Loop(count=m.cycles, steps=cycle, counts_cycles=True, label="cycle"),)


def parameters(m: PlatingStrippingModel) -> dict:
    """The template's parameters in SI with the unit in each name, for display."""
    return {
        "current_density_A_per_cm2": m.current_density,
        "areal_capacity_C_per_cm2": m.areal_capacity,
        "cycles": m.cycles,
        "record_interval_s": m.record_interval,
        "record_dE_V": m.record_dE,
        "rest_before_s": m.rest_before,
    }


def expand(m: PlatingStrippingModel) -> Plan:
    """The validated file as a Plan (one ChannelPlan per cell)."""
    channels = tuple(ChannelPlan(cell_spec(c), cell_steps(m, c)) for c in m.cells)
    return Plan(kind=m.kind, name=m.name, safety=safety_for(m.safety, channels),
                channels=channels, total_cycles=m.cycles, parameters=parameters(m))
