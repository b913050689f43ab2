"""Small simulated runs of each kind in one store, for the export, data-API and doc tests."""

from __future__ import annotations

import asyncio
from pathlib import Path

from protocols import load_protocol
from rig.clock import VirtualClock
from rig.engine.run import execute
from rig.sim.station import simulated_station
from rig.store import RunWriter
from tests.support.protocol_text import two_cells

OCV = """
kind = "ocv_impedance"
name = "small eis"
interval = "1 h"
duration = "3 h"
record_interval = "5 min"

[[cells]]
channel = 0
cell_id = "EIS-G1"
type = "symmetric"
area = "1.13 cm^2"
electrolyte = "1 M NaPF6 in diglyme"
"""

GAS = """
kind = "gas_evolution"
name = "small gas"
rest_before = "1 h"
current_density = "1 mA/cm^2"
areal_capacity = "0.5 mAh/cm^2"
cycles = 3
record_interval = "60 s"

[[cells]]
channel = 0
cell_id = "GAS-C1"
type = "symmetric"
area = "1.13 cm^2"
electrolyte = "1 M NaClO4 in EC:DEC"
headspace = "5 mL"
"""

CE = """
kind = "coulombic_efficiency"
name = "small ce"
method = "reservoir"
cycles = 2
current_density = "0.5 mA/cm^2"
cycle_capacity = "0.5 mAh/cm^2"
reservoir_capacity = "1 mAh/cm^2"
formation_capacity = "1 mAh/cm^2"
cutoff = "1 V"
record_interval = "60 s"

[safety]
min_potential = "-1 V"
max_potential = "3 V"

[[cells]]
channel = 0
cell_id = "NaCu-G1"
type = "na_cu"
area = "1.13 cm^2"
electrolyte = "1 M NaPF6 in diglyme"
"""

CYCLING = two_cells("small cycling", cycles=2)


def run_protocol(db: Path, text: str, name: str) -> str:
    """Run ``text`` on the simulated station on the virtual clock; the run's id."""
    path = db.parent / f"{name}.toml"
    path.write_text(text)
    loaded = load_protocol(path)
    clock = VirtualClock()
    station = simulated_station(loaded.plan, clock, seed=1)
    writer = RunWriter(db)
    try:
        result = asyncio.run(execute(loaded.plan, station=station, clock=clock, writer=writer,
                                     protocol_text=loaded.text, protocol_path=str(path)))
    finally:
        station.close()
        writer.close()
    assert result.status == "completed", result.reasons
    return result.run_id


def make_store(db: Path) -> dict[str, str]:
    """One store with a run of each: cycling (2 cells), eis, gas, ce; name -> run id."""
    return {name: run_protocol(db, text, name) for name, text in (
        ("eis", OCV), ("gas", GAS), ("ce", CE), ("cycling", CYCLING))}
