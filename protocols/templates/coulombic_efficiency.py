"""``kind = "coulombic_efficiency"``: CE of Na plating on Cu or Al (Na‖Cu, Na‖Al).

Reservoir method (Adams et al., Adv. Energy Mater. 2018, adapted to Na; domain.md), per cell
and in this order, with these step labels (``rig.analysis.outcomes`` finds them by label):

==================  =========================================================================
formation_plate     plate ``formation_capacity`` (default 5 mAh/cm²)
formation_strip     strip until E > ``cutoff`` (the Na ran out)
reservoir           plate the reservoir Q_T = ``reservoir_capacity`` (default 5 mAh/cm²)
cycle_plate/_strip  ``cycles`` = n cycles of Q_C = ``cycle_capacity`` (default 1 mAh/cm²);
                    a strip that reaches the cutoff (the reservoir is used up) goes straight
                    to the final strip
final_strip         strip everything until E > ``cutoff``: Q_S
==================  =========================================================================

CE = (n·Q_C + Q_S) / (n·Q_C + Q_T). Per-cycle method: n cycles of plate Q then strip to the
cutoff (steps ``plate`` and ``strip``), CE of each cycle = stripped / plated.

Every strip to the cutoff also has a time guard: it may pass at most ``STRIP_GUARD`` x the
charge plated before it (CE cannot exceed 1); past that the channel ends with reason
``cutoff_not_reached`` (a short, or a counter electrode that feeds the strip).

Example:
    >>> from protocols.model import CoulombicEfficiencyModel
    >>> m = CoulombicEfficiencyModel(kind="coulombic_efficiency", name="demo",
    ...     method="reservoir", cycles=10, record_interval="10 s", cells=[dict(channel=0,
    ...     cell_id="Cu1", type="na_cu", area="1 cm^2", electrolyte="1 M NaPF6 in diglyme")])
    >>> plan = expand(m)
    >>> [s.label for s in plan.channels[0].steps], plan.outcome
    (['formation_plate', 'formation_strip', 'reservoir', 'cycles', 'final_strip'], 'reservoir_ce')
"""

from __future__ import annotations

from protocols.model import CE_WINDOW_V, STRIP_GUARD, CellModel, CoulombicEfficiencyModel
from protocols.plan import (
    ChannelPlan,
    ConstantCurrent,
    EndCondition,
    FailureCriteria,
    Loop,
    Plan,
    RecordRule,
    Step,
)
from protocols.templates.common import (
    cell_spec,
    default_short_below,
    failure_criteria,
    half_cycle,
    record_rule,
    rest,
    safety_for,
)

MAH_CM2 = 3.6  # C/cm^2 per mAh/cm^2

DEFAULT_RESERVOIR = 5 * MAH_CM2
DEFAULT_FORMATION = 5 * MAH_CM2
NOT_REACHED = "end:cutoff_not_reached"


def strip_to_cutoff(current_A: float, plated_C: float, cutoff_V: float, record: RecordRule,
                    label: str, half: str | None = None, then: str = "next") -> ConstantCurrent:
    """Strip at ``current_A`` until E > ``cutoff_V`` (then ``then``), guarded in time.

    >>> s = strip_to_cutoff(1e-3, 3.6, 1.0, RecordRule(10.0), "final_strip")
    >>> [(e.kind, e.value, e.then) for e in s.ends]
    [('potential_above', 1.0, 'next'), ('time', 4500.0, 'end:cutoff_not_reached')]
    """
    ends = (EndCondition("potential_above", cutoff_V, then),
            EndCondition("time", STRIP_GUARD * plated_C / current_A, NOT_REACHED))
    return ConstantCurrent(current_A=current_A, ends=ends, record=record, label=label,
                           half_cycle=half)  # type: ignore[arg-type]


def reservoir_steps(m: CoulombicEfficiencyModel, area: float,
                    record: RecordRule) -> tuple[Step, ...]:
    """Formation, reservoir, n cycles, final strip (see the module docstring)."""
    i = m.current_density * area
    q_f = (m.formation_capacity or DEFAULT_FORMATION) * area
    q_t = (m.reservoir_capacity or DEFAULT_RESERVOIR) * area
    q_c = m.cycle_capacity * area
    cycle_strip = ConstantCurrent(
        current_A=i, ends=(EndCondition("charge", q_c),
                           EndCondition("potential_above", m.cutoff, "final_strip")),
        record=record, label="cycle_strip", half_cycle="strip")
    return (
        ConstantCurrent(-i, (EndCondition("charge", q_f),), record, label="formation_plate"),
        strip_to_cutoff(i, q_f, m.cutoff, record, "formation_strip"),
        ConstantCurrent(-i, (EndCondition("charge", q_t),), record, label="reservoir"),
        Loop(count=m.cycles, counts_cycles=True, label="cycles",
             steps=(half_cycle(-i, q_c, "plate", record, label="cycle_plate"), cycle_strip)),
        strip_to_cutoff(i, q_t, m.cutoff, record, "final_strip"),
    )


def per_cycle_steps(m: CoulombicEfficiencyModel, area: float,
                    record: RecordRule) -> tuple[Step, ...]:
    """n cycles of plate Q, strip to the cutoff."""
    i, q = m.current_density * area, m.cycle_capacity * area
    body = (half_cycle(-i, q, "plate", record),
            strip_to_cutoff(i, q, m.cutoff, record, "strip", half="strip"))
    return (Loop(count=m.cycles, steps=body, counts_cycles=True, label="cycles"),)


def cell_steps(m: CoulombicEfficiencyModel, cell: CellModel) -> tuple[Step, ...]:
    record = record_rule(m.record_interval, m.record_dE)
    first: tuple[Step, ...] = () if m.rest_before is None else (rest(m.rest_before, record),)
    method = reservoir_steps if m.method == "reservoir" else per_cycle_steps
    return first + method(m, cell.area, record)


def parameters(m: CoulombicEfficiencyModel) -> dict:
    reservoir = m.method == "reservoir"
    return {
        "method": m.method,
        "cycles": m.cycles,
        "current_density_A_per_cm2": m.current_density,
        "cycle_capacity_C_per_cm2": m.cycle_capacity,
        "reservoir_capacity_C_per_cm2": (m.reservoir_capacity or DEFAULT_RESERVOIR)
        if reservoir else None,
        "formation_capacity_C_per_cm2": (m.formation_capacity or DEFAULT_FORMATION)
        if reservoir else None,
        "cutoff_V": m.cutoff,
        "record_interval_s": m.record_interval,
        "record_dE_V": m.record_dE,
        "rest_before_s": m.rest_before,
    }


def default_failure(m: CoulombicEfficiencyModel) -> FailureCriteria:
    """A short is named: hard (``short_hard``, the threshold scaled to the current density by
    ``default_short_below``) or soft (``short_soft``: |E| halves within 60 s); the file's ``[failure]`` table overrides it (``short_below =
    "0 V"`` switches it off). Without it a short during a strip passes charge through the
    shunt until the time guard ends the channel as ``cutoff_not_reached``, naming nothing.

    >>> from protocols.model import CoulombicEfficiencyModel as M
    >>> default_failure(M(kind="coulombic_efficiency", name="x", method="per_cycle", cycles=1,
    ...     current_density="2 mA/cm^2", record_interval="10 s", cells=[dict(channel=0,
    ...     cell_id="A", type="na_cu", area="1 cm^2", electrolyte="x")])).short_below_V
    0.005
    """
    return FailureCriteria(short_below_V=default_short_below(m.current_density),
                           short_drop_fraction=0.5, short_drop_window_s=60.0)


def expand(m: CoulombicEfficiencyModel) -> Plan:
    channels = tuple(ChannelPlan(cell_spec(c), cell_steps(m, c)) for c in m.cells)
    return Plan(kind=m.kind, name=m.name, safety=safety_for(m.safety, channels, CE_WINDOW_V),
                channels=channels, total_cycles=m.cycles, parameters=parameters(m),
                failure=failure_criteria(m.failure, default_failure(m), m.current_density),
                outcome="reservoir_ce" if m.method == "reservoir" else "per_cycle_ce")
