"""Issue 9 item 3: a Keithley whose connection drops mid-run must not be left sourcing.

The simulated 2450 keeps its state when the socket drops, as a real one does: only a new
connection can switch it off. Reproduced on the old driver: one failed ``:OUTP OFF``
(``Broken pipe``), no reconnect, and the simulated instrument stays on at 1.13 mA.
"""

from __future__ import annotations

import pytest

from drivers.base import InstrumentError, OutputNotConfirmedOff
from drivers.keithley2450 import Keithley2450
from rig.clock import VirtualClock
from rig.sim.cell import PRESETS, NaCell
from rig.sim.keithley import FaultProfile, SimulatedKeithley2450
from tests.support.scpi_replay import HANG_UP, ScpiReplay


@pytest.fixture
def sim():
    clock = VirtualClock()
    with SimulatedKeithley2450(NaCell("symmetric", 1.13, PRESETS["glyme"]), clock) as s:
        yield s


def running(sim: SimulatedKeithley2450, rm) -> Keithley2450:
    smu = Keithley2450(sim.resource, resource_manager=rm, now=sim.clock.now, timeout_s=0.5,
                       backoff_s=0.01, host_watchdog_s=None)  # watched: test_keithley_watchdog
    smu.start_current(-1.13e-3, 1.0, 3600.0, -1.0, 1.0)
    smu.wait()
    assert sim.output_on and sim.level_A == -1.13e-3
    return smu


def test_a_dropped_connection_mid_run_still_ends_with_the_output_off(sim, rm):
    smu = running(sim, rm)
    assert sim.drop_connections() == 1
    assert sim.output_on  # the instrument kept sourcing when its link dropped
    smu.output_off()  # reconnects and confirms
    assert not sim.output_on
    assert sim.received[-2:] == [":OUTP OFF", ":OUTP?"]
    smu.close()


def test_safe_off_after_a_drop_reports_success(sim, rm):
    smu = running(sim, rm)
    sim.drop_connections()
    assert smu.safe_off() is True and not sim.output_on
    smu.close()


def test_an_instrument_that_cannot_be_reached_raises_output_not_confirmed_off(sim, rm):
    smu = running(sim, rm)
    sim.fault = FaultProfile(disconnect=1.0)  # every line: the connection drops first
    with pytest.raises(OutputNotConfirmedOff, match="OUTPUT MAY STILL BE ON"):
        smu.output_off()
    assert sim.output_on  # really still on: the error says so, it does not pretend
    assert smu.safe_off() is False
    sim.fault = None
    assert smu.safe_off() is True and not sim.output_on
    smu.close()


def test_an_output_that_keeps_reading_on_is_not_confirmed_off(rm):
    pairs = [(":OUTP OFF", None), (":OUTP?", "1")] * 4
    with ScpiReplay(pairs) as dev:
        smu = Keithley2450(dev.resource, resource_manager=rm, timeout_s=1.0, backoff_s=0.0,
                           host_watchdog_s=None)
        with pytest.raises(OutputNotConfirmedOff, match=r"still reads 1"):
            smu.output_off()
        smu._disconnect()


def test_output_off_reconnects_after_the_instrument_hangs_up(rm):
    with ScpiReplay([(":OUTP OFF", HANG_UP), (":OUTP OFF", None), (":OUTP?", "0")]) as dev:
        smu = Keithley2450(dev.resource, resource_manager=rm, timeout_s=0.5, backoff_s=0.0,
                           host_watchdog_s=None)
        smu.output_off()
        assert dev.connections == 2
        smu._disconnect()


def test_output_not_confirmed_off_is_a_typed_instrument_error():
    assert issubclass(OutputNotConfirmedOff, InstrumentError)


def test_a_reading_after_a_dropped_connection_reconnects_and_the_step_goes_on(sim, rm):
    """The fault soak (benchmarks/soak_faults.py) ended Keithley channels `instrument_fault` on
    one dropped connection during `:READ?`; a query is safe to ask again on a new connection
    (the instrument kept sourcing), so the driver reconnects and reads."""
    smu = running(sim, rm)
    sim.drop_connections()
    samples, _ended = smu.read_samples(0.0)
    assert samples and sim.output_on  # read on a new connection; the step carries on
    smu.output_off()
    assert not sim.output_on
    smu.close()
