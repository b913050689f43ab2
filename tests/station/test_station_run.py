"""Runs on the whole simulated station: the glovebox interlock holds and releases every
channel, a silent atmosphere sensor counts as unsafe, a gas holder over its limit ends its cell.
Everything through the production drivers (MethodSCRIPT on ptys, Modbus TCP, KELLER on ptys)."""

from __future__ import annotations

import pytest

from protocols.plan import CellSpec, ChannelPlan, Plan, Safety
from rig.clock import VirtualClock
from rig.sim.glovebox import Breach, Dropout
from rig.sim.station import open_simulated
from rig.store import get_events, get_samples, get_sensors, get_steps
from tests.support.station_runs import AREA, Q1, cycling_plan, run, station_for


def kinds(conn, key) -> list[str]:
    return [e["kind"] for e in get_events(conn, key) if e["kind"].startswith("interlock")]


def test_a_glove_breach_holds_the_channels_then_they_resume_and_complete(tmp_path):
    plan = cycling_plan(4)
    station = station_for(plan, glovebox_events=[Breach(2 * 3600, 5.0, 600.0, ("o2",))])
    result, conn = run(plan, tmp_path / "s.db", station)
    key = result.run_key
    assert kinds(conn, key) == ["interlock_hold", "interlock_release"]
    hold, release = [e for e in get_events(conn, key) if e["kind"].startswith("interlock")]
    assert "O2" in hold["message"] and 2 * 3600 < hold["t"] - result_start(conn, key) < 2.5 * 3600
    assert release["t"] - hold["t"] > 600  # the clear spell
    # held at open circuit, still recording
    held = [s for s in get_samples(conn, key, 0, t_from=hold["t"] + 60, t_to=release["t"] - 60)]
    assert held and all(abs(s[4]) < 1e-9 for s in held)
    # every half-cycle still passed its full charge, and the run completed
    assert result.status == "completed"
    for s in get_steps(conn, key, 0):
        assert abs(s["charge_C"]) == pytest.approx(Q1, rel=0.01)
    o2 = get_sensors(conn, key, quantity="o2_ppm")
    assert max(v for *_, v in o2) > 1.0 and min(v for *_, v in o2) < 0.5


def result_start(conn, key) -> float:
    return conn.execute("SELECT started_at FROM runs WHERE key = ?", (key,)).fetchone()[0]


def test_an_atmosphere_sensor_without_readings_is_unsafe_after_its_timeout(tmp_path):
    plan = cycling_plan(3)
    station = station_for(plan, glovebox_events=[
        Dropout(3600, 1800, ("o2", "h2o"))])
    result, conn = run(plan, tmp_path / "s.db", station)
    events = [e for e in get_events(conn, result.run_key) if e["kind"].startswith("interlock")]
    assert [e["kind"] for e in events] == ["interlock_hold", "interlock_release"]
    assert "no valid atmosphere reading" in events[0]["message"]
    assert result.status == "completed"


def test_already_above_threshold_at_start_holds_before_the_first_cycle_ends(tmp_path):
    plan = cycling_plan(2)
    station = station_for(plan, glovebox_events=[Breach(0, 3.0, 1200.0, ("h2o",))])
    result, conn = run(plan, tmp_path / "s.db", station)
    hold = next(e for e in get_events(conn, result.run_key) if e["kind"] == "interlock_hold")
    assert hold["t"] - result_start(conn, result.run_key) < 120
    assert "H2O" in hold["message"] and result.status == "completed"


def test_a_gas_holder_over_its_limit_ends_its_cell_with_overpressure(tmp_path):
    from rig.sim.serve import SimulatedInstruments, builtin_station_data

    plan = cycling_plan(20, electrolyte="1 M NaClO4 in EC:DEC", headspace_mL=0.5)
    clock = VirtualClock()
    data = builtin_station_data(plan)
    for sensor in data["sensors"]:
        if sensor["kind"] == "pressure":
            sensor["limit"] = "1.2 bar"
    sims = SimulatedInstruments(data, plan, clock, 2)
    station = open_simulated(sims, clock)
    station._clock = clock
    result, conn = run(plan, tmp_path / "s.db", station)
    assert result.reasons[0] == "overpressure" and result.exit_code == 1
    events = [e for e in get_events(conn, result.run_key, 0) if e["kind"] == "overpressure"]
    assert events and "above the holder's limit 1.2000 bar" in events[0]["message"]
    pressure = get_sensors(conn, result.run_key, quantity="pressure_Pa")
    assert pressure[-1][3] > 1.2e5


def test_an_instrument_that_goes_dead_ends_its_channel_and_the_others_carry_on(tmp_path):
    from rig.sim.emstat import FaultProfile

    cells = (CellSpec(0, "G0", "symmetric", AREA, "1 M NaPF6 in diglyme"),
             CellSpec(1, "G1", "symmetric", AREA, "1 M NaPF6 in diglyme"))
    steps = cycling_plan(2).channels[0].steps
    plan = Plan("sequence", "dead port", Safety(-1, 1, 0.01),
                tuple(ChannelPlan(c, steps) for c in cells), total_cycles=2)
    # channel 0's port dies at the 3rd host command (and stays dead)
    station = station_for(plan, faults={"es4-ch0": FaultProfile(disconnect=0.3, seed=3)})
    result, conn = run(plan, tmp_path / "s.db", station)
    assert result.reasons == {0: "instrument_fault", 1: "completed"}
    assert result.exit_code == 3
    events = [e["kind"] for e in get_events(conn, result.run_key, 0)]
    assert "instrument_fault" in events
    assert len(get_steps(conn, result.run_key, 1)) == 4  # the other channel ran every step


def test_sensor_faults_are_retried_and_every_lost_reading_is_logged(tmp_path):
    import re

    from rig.sim.glovebox import ModbusFaultProfile
    from rig.sim.keller import FaultProfile as KellerFaults

    plan = cycling_plan(1, headspace_mL=5.0)
    station = station_for(plan, faults={
        "box-h2o": ModbusFaultProfile(exception=0.05, seed=1),
        "keller-ch0": KellerFaults(bad_crc=0.05, truncated=0.02, seed=2)})
    result, conn = run(plan, tmp_path / "s.db", station)
    assert result.status == "completed"
    events = get_events(conn, result.run_key)
    assert not any(e["kind"] == "interlock_hold" for e in events)
    polls = 2 * 3600 / 30 + 1  # two hours, every 30 s, both ends
    for sensor, quantity in (("box-h2o", "h2o_ppm"), ("keller-ch0", "pressure_Pa")):
        readings = len(get_sensors(conn, result.run_key, quantity=quantity))
        missed = sum(int(re.search(r"after (\d+) failed", e["message"]).group(1))
                     for e in events if e["kind"] == "sensor_ok" and sensor in e["message"])
        assert readings + missed in (polls - 1, polls)  # every poll: a reading or a logged miss
        assert readings >= polls - 6  # the drivers' retries absorbed nearly all faults
