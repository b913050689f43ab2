"""``kind = "gas_evolution"``: gas per cycle from a cell in a sealed pressure holder.

Per cell: an open-circuit rest (``rest_before``, default 2 h: the pressure and temperature
baseline), then ``cycles`` plating–stripping cycles at ``current_density`` and
``areal_capacity``. The station logs the holder's pressure and temperature with the cycling;
the channel's outcome is the gas made in each cycle, n = P·V/(R·T) with the cell's
``headspace`` (which every cell must give), cycle 1 apart from the later ones.

Example:
    >>> from protocols.model import GasEvolutionModel
    >>> m = GasEvolutionModel(kind="gas_evolution", name="demo", current_density="1 mA/cm^2",
    ...     areal_capacity="1 mAh/cm^2", cycles=20, record_interval="10 s",
    ...     cells=[dict(channel=0, cell_id="P1", type="symmetric", area="1 cm^2",
    ...                 electrolyte="1 M NaClO4 in EC:DEC", headspace="5 mL")])
    >>> plan = expand(m)
    >>> [s.kind for s in plan.channels[0].steps], plan.outcome
    (['rest', 'loop'], 'gas_per_cycle')
    >>> plan.parameters["cells"][0]["headspace_mL"]
    5.0
"""

from __future__ import annotations

from protocols.model import CellModel, GasEvolutionModel
from protocols.plan import ChannelPlan, FailureCriteria, Plan, Step
from protocols.templates.common import (
    default_short_below,
    cell_rows,
    cell_spec,
    cycles_loop,
    failure_criteria,
    record_rule,
    rest,
    safety_for,
)


def cell_steps(m: GasEvolutionModel, cell: CellModel) -> tuple[Step, ...]:
    record = record_rule(m.record_interval, m.record_dE)
    return (rest(m.rest_before, record, label="baseline"),
            cycles_loop(m.cycles, m.current_density * cell.area,
                        m.areal_capacity * cell.area, record))


def parameters(m: GasEvolutionModel, channels: tuple[ChannelPlan, ...]) -> dict:
    return {
        "rest_before_s": m.rest_before,
        "current_density_A_per_cm2": m.current_density,
        "areal_capacity_C_per_cm2": m.areal_capacity,
        "cycles": m.cycles,
        "record_interval_s": m.record_interval,
        "record_dE_V": m.record_dE,
        "cells": cell_rows(channels),
    }


def default_failure(m: GasEvolutionModel) -> FailureCriteria:
    """Shorts are named by default (hard: ``default_short_below``; soft: |E| halves within
    60 s): a shorted cell passes its current through the shunt, makes no gas, and would
    otherwise "complete" with a gas per cycle that is not the cell's."""
    return FailureCriteria(short_below_V=default_short_below(m.current_density),
                           short_drop_fraction=0.5, short_drop_window_s=60.0)


def expand(m: GasEvolutionModel) -> Plan:
    channels = tuple(ChannelPlan(cell_spec(c), cell_steps(m, c)) for c in m.cells)
    return Plan(kind=m.kind, name=m.name, safety=safety_for(m.safety, channels),
                channels=channels, total_cycles=m.cycles, parameters=parameters(m, channels),
                failure=failure_criteria(m.failure, default_failure(m), m.current_density),
                outcome="gas_per_cycle")
