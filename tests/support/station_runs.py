"""Runs on the whole built-in simulated station on the virtual clock (every instrument and
sensor through its production driver): the cycling plan, the station and the run the station
tests (tests/station/) and the EmStat4 fault run (tests/drivers/test_emstat_vendor.py) share."""

from __future__ import annotations

import asyncio
from pathlib import Path

from protocols.plan import (
    CellSpec,
    ChannelPlan,
    ConstantCurrent,
    EndCondition,
    Loop,
    Plan,
    RecordRule,
    Safety,
)
from rig.clock import VirtualClock
from rig.engine.run import execute
from rig.sim.station import simulated_station
from rig.store import RunWriter, open_reader

AREA = 1.13
Q1 = 3.6 * AREA
REC = RecordRule(every_s=10.0)


def cycling_plan(cycles: int, electrolyte: str = "1 M NaPF6 in diglyme",
                 headspace_mL: float | None = None, *, cell_ids: tuple[str, ...] = ("G1",),
                 charge_C: float = Q1) -> Plan:
    """Symmetric cells (one a channel, 0, 1, ...) plating then stripping ``charge_C`` a cycle."""
    steps = (Loop(cycles, (
        ConstantCurrent(-1.13e-3, (EndCondition("charge", charge_C),), REC, "plate", "plate"),
        ConstantCurrent(1.13e-3, (EndCondition("charge", charge_C),), REC, "strip", "strip"),
    ), counts_cycles=True),)
    channels = tuple(ChannelPlan(CellSpec(k, cell_id, "symmetric", AREA, electrolyte,
                                          headspace_mL), steps)
                     for k, cell_id in enumerate(cell_ids))
    return Plan("sequence", "station run", Safety(-1, 1, 0.01), channels, total_cycles=cycles)


def run(plan: Plan, db: Path, station, *, clock=None, sensor_floor_s: float | None = 0):
    """Execute ``plan`` on ``station`` (from station_for, or ``clock`` given) into a new store;
    the station is closed after; (result, reader)."""
    clock = clock if clock is not None else station._clock
    writer = RunWriter(db)
    try:
        result = asyncio.run(execute(plan, station=station, clock=clock, writer=writer,
                                     protocol_text="", protocol_path="test",
                                     sensor_floor_s=sensor_floor_s))
    finally:
        station.close()
        writer.close()
    return result, open_reader(db)


def station_for(plan: Plan, **kw):
    """The built-in simulated station for ``plan`` (seed 2) on a fresh virtual clock."""
    clock = VirtualClock()
    station = simulated_station(plan, clock, seed=2, **kw)
    station._clock = clock
    return station
