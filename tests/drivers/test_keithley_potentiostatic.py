"""Potentiostatic steps on the Keithley: source voltage with a current limit, measure current.

Transcripts from the manuals (2450 ``:SOUR:VOLT:ILIM``, 2400 ``:SENS:CURR:PROT``), the
simulator against the cell model, validation against the Keithley's modes, and a sequence
with a constant_potential step run by the engine on a simulated Keithley channel.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from drivers.keithley2450 import Keithley2450, parse_reading
from protocols.load import parse_protocol
from rig.clock import VirtualClock
from rig.engine.run import execute
from rig.sim.cell import PRESETS, NaCell
from rig.sim.keithley import SimulatedKeithley2450
from rig.sim.station import simulated_station
from rig.store import RunWriter, get_samples, get_steps, open_reader
from rig.validate import check_ranges
from tests.support.scpi_replay import ScpiReplay

READ_2450 = ':READ? "defbuffer1", READ, SOUR, SOURSTAT'
NO_ERROR = '0,"No error"'
SETUP_2450 = [("*CLS", None), (":SOUR:FUNC CURR", None), (":OUTP:CURR:SMOD HIMP", None),
              (':SENS:FUNC "VOLT"', None), (":SENS:VOLT:NPLC 1", None)]
SETUP_2400 = [("*CLS", None), (":SOUR:FUNC CURR", None), (":OUTP:SMOD HIMP", None),
              (':SENS:FUNC "VOLT"', None), (":SENS:VOLT:NPLC 1", None)]
SOURCE_20MV = [(":SOUR:VOLT:RANG:AUTO 1", None), (":SOUR:VOLT:LEV 0.02", None),
               (":SOUR:FUNC VOLT", None), (':SENS:FUNC "CURR"', None),
               (":SENS:CURR:RANG:AUTO 1", None), (":SENS:CURR:NPLC 1", None)]


def ticking():
    counter = itertools.count()
    return lambda: float(next(counter))


def test_the_2450_reads_measured_current_first_when_sourcing_voltage():
    assert parse_reading("9.412000E-04,2.000000E-02,1.280000E+02", "2450", "VOLT") == (
        0.02, 9.412e-4, False)
    assert parse_reading("5.000000E-03,2.000000E-02,1.600000E+02", "2450", "VOLT").compliance


def test_2450_potential_step_arms_ilim_reads_it_back_and_rests_at_zero_amps(rm):
    with ScpiReplay([*SETUP_2450, (":SOUR:VOLT:ILIM 0.005", None),
                     (":SOUR:VOLT:ILIM?", "5.000000E-03"), *SOURCE_20MV,
                     (":SYST:ERR?", NO_ERROR), (":OUTP ON", None), (":OUTP?", "1"),
                     (READ_2450, "9.412000E-04,2.000000E-02,1.280000E+02"),
                     (READ_2450, "9.100000E-04,2.000000E-02,1.280000E+02"),
                     (":SOUR:CURR:LEV 0", None), (":SOUR:FUNC CURR", None),
                     (":OUTP OFF", None), (":OUTP?", "0")]) as dev:
        k = Keithley2450(dev.resource, resource_manager=rm, now=ticking(), host_watchdog_s=None)
        k.start_potential(0.02, 1.0, 2.0, 5e-3)
        (s1,), ended = k.read_samples(1.0)
        assert (s1.potential_V, s1.current_A, ended) == (0.02, 9.412e-4, False)
        (s2,), ended = k.read_samples(2.0)
        assert ended and s2.current_A == 9.1e-4  # at its duration: back to 0 A
        k.close()


def test_2400_potential_step_arms_sens_curr_prot(rm):
    with ScpiReplay([*SETUP_2400, (":SENS:CURR:PROT 0.005", None),
                     (":SENS:CURR:PROT?", "+5.000000E-03"), *SOURCE_20MV,
                     (":SYST:ERR?", NO_ERROR), (":OUTP ON", None), (":OUTP?", "1"),
                     (":READ?", "+2.000000E-02,+5.000000E-03,+9.910000E+37,+1.0E+01,"
                                "+8.000000E+00"),  # status bit 3: in compliance
                     (":OUTP OFF", None), (":OUTP?", "0")]) as dev:
        k = Keithley2450(dev.resource, command_set="2400", resource_manager=rm, now=ticking(),
                         host_watchdog_s=None)
        k.start_potential(0.02, 1.0, 60.0, 5e-3)
        (s,), ended = k.read_samples(1.0)
        assert ended and s.overload and s.current_A == 5e-3  # the limit: output off
        k._disconnect()


def test_a_current_limit_the_instrument_did_not_take_never_switches_on(rm):
    with ScpiReplay([*SETUP_2450, (":SOUR:VOLT:ILIM 0.005", None),
                     (":SOUR:VOLT:ILIM?", "1.050000E-04"), (":SYST:ERR?", NO_ERROR),
                     (":OUTP OFF", None), (":OUTP?", "0")]) as dev:
        k = Keithley2450(dev.resource, resource_manager=rm, host_watchdog_s=None)
        with pytest.raises(Exception, match="did not accept a 0.005 A current limit"):
            k.start_potential(0.02, 1.0, 60.0, 5e-3)
        k._disconnect()


@pytest.mark.parametrize("command_set", ["2450", "2400"])
def test_simulated_keithley_holds_the_cell_at_the_potential(rm, command_set):
    clock = VirtualClock()
    with SimulatedKeithley2450(NaCell("symmetric", 1.13, PRESETS["glyme"]), clock,
                               command_set=command_set) as sim:
        k = Keithley2450(sim.resource, command_set=command_set, resource_manager=rm,
                         now=clock.now)
        for potential in (0.02, -0.02):
            k.start_potential(potential, 1.0, 600.0, 5e-3)
            clock.advance(10.0)
            (s,), ended = k.read_samples(10.0)
            assert not ended and s.potential_V == pytest.approx(potential)
            assert 1e-4 < abs(s.current_A) < 5e-3 and s.current_A * potential > 0
        k.start_potential(0.5, 1.0, 600.0, 1e-3)  # far more than 1 mA would flow
        clock.advance(5.0)
        (s,), ended = k.read_samples(5.0)
        assert ended and s.overload and abs(s.current_A) == pytest.approx(1e-3)
        assert not sim.output_on
        k.start_current(1.13e-3, 1.0, 60.0, -1.0, 1.0)  # back to a galvanostat
        clock.advance(5.0)
        (s,), _ = k.read_samples(5.0)
        assert s.current_A == pytest.approx(1.13e-3) and 0.005 < s.potential_V < 0.1
        k.close()


SEQUENCE = """
kind = "sequence"
name = "keithley potentiostatic"
[record]
every = "10 s"
[safety]
min_potential = "-1 V"
max_potential = "1 V"
max_current = "5 mA"
[[steps]]
type = "current_density"
label = "plate"
current_density = "-1 mA/cm^2"
until = {time = "2 min"}
[[steps]]
type = "potential"
label = "hold"
potential = "20 mV"
until = [{current_below = "10 uA"}, {time = "5 min"}]
[[cells]]
channel = 0
cell_id = "k0"
type = "symmetric"
area = "1.13 cm^2"
electrolyte = "1 M NaPF6 in diglyme"
"""


def test_a_constant_potential_step_validates_on_a_keithley_channel():
    plan = parse_protocol(SEQUENCE, "k.toml")
    assert check_ranges(plan, {0: ("Keithley 2450", Keithley2450.ranges)}, "k.toml") == []


def test_a_sequence_with_a_potential_step_runs_on_the_simulated_keithley(tmp_path):
    plan = parse_protocol(SEQUENCE, "k.toml")
    clock = VirtualClock()
    station = simulated_station(plan, clock, keithley_channels=[0])
    db = tmp_path / "s.db"
    writer = RunWriter(db)
    try:
        result = asyncio.run(execute(plan, station=station, clock=clock, writer=writer,
                                     protocol_text=SEQUENCE, protocol_path="k.toml"))
    finally:
        station.close()
        writer.close()
    assert result.status == "completed"
    conn = open_reader(db)
    steps = get_steps(conn, result.run_key, 0)
    assert [s["label"] for s in steps] == ["plate", "hold"]
    assert steps[1]["kind"] == "constant_potential" and steps[1]["end_reason"] == "time"
    hold = [r for r in get_samples(conn, result.run_key, 0) if r[0] > steps[1]["t_start"]]
    assert hold and all(r[3] == pytest.approx(0.02) for r in hold)
    assert all(0 < r[4] < 5e-3 for r in hold)  # 20 mV drives an anodic current
