"""Every fault injected on a sensor's wire reaches an event, even when the driver's retry cured
it (issue 9: of 669 injected Modbus/KELLER faults, 1 became an event)."""

from __future__ import annotations

import asyncio
import re

from rig.engine.run import execute
from rig.store import RunWriter, get_events, open_reader
from tests.support.station_runs import cycling_plan, station_for


def _counted(events: list[dict], sensor: str, attempts_per_poll: int) -> int:
    """Faults the events account for: retried attempts, plus every attempt of a failed poll."""
    retried = sum(int(re.search(r": (\d+) failed attempts?", e["message"]).group(1))
                  for e in events if e["kind"] == "sensor_retried" and f" {sensor}:" in e["message"])
    failed_polls = sum(int(re.search(r"after (\d+) failed", e["message"]).group(1))
                       for e in events if e["kind"] == "sensor_ok" and f" {sensor} " in e["message"])
    return retried + failed_polls * attempts_per_poll


def test_every_injected_sensor_fault_is_counted_in_an_event(tmp_path):
    from rig.sim.glovebox import ModbusFaultProfile
    from rig.sim.keller import FaultProfile as KellerFaults

    plan = cycling_plan(1, headspace_mL=5.0)
    # an exact count: the sensors wait 2 s, so only the injected faults fail an attempt
    station = station_for(plan, timeouts={"sensors": "2 s"}, faults={
        "box-h2o": ModbusFaultProfile(exception=0.06, seed=4),
        "keller-ch0": KellerFaults(bad_crc=0.06, seed=5)})
    db = tmp_path / "s.db"
    writer = RunWriter(db)
    try:
        result = asyncio.run(execute(plan, station=station, clock=station._clock, writer=writer,
                                     protocol_text="", protocol_path="test", sensor_floor_s=0))
        sims = station.simulation.by_name
        modbus_faults = sum(n for k, n in sims["box-h2o"].faults.items() if k != "requests")
        keller_faults = len(sims["keller-ch0"].faults)
    finally:
        station.close()
        writer.close()
    assert result.status == "completed"
    with open_reader(db) as conn:
        events = get_events(conn, result.run_key)
    assert modbus_faults > 5 and keller_faults > 5  # the profile really injected faults
    assert _counted(events, "box-h2o", 3) == modbus_faults
    assert _counted(events, "keller-ch0", 3) == keller_faults
