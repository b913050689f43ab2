"""Issue 9: a dropped connection or a lost reply during a step's setup must not end the channel.

The fault soak (benchmarks/soak_faults.py, 1 % faults) ended a Keithley channel
``instrument_fault`` on a connection dropped while the driver read the compliance back
(``:SOUR:CURR:VLIM?``) at a step's start: the setup never reconnected. The setup is idempotent
(every setting is sent again and read back), so the driver reconnects and sends all of it again,
a bounded number of times, and records every failed attempt in ``retried`` for the engine's
events. Reproduced on the old driver: ``InstrumentGone`` from ``start_current``.
"""

from __future__ import annotations

import pytest

from drivers.base import InstrumentGone, InstrumentProtocolError
from drivers.keithley2450 import SETUP_ATTEMPTS, Keithley2450, StepRefused
from rig.clock import VirtualClock
from rig.sim.cell import PRESETS, NaCell
from rig.sim.keithley import FaultProfile, SimulatedKeithley2450
from tests.support.scpi_replay import HANG_UP, ScpiReplay

NO_ERROR = '0,"No error"'
SETUP = [("*CLS", None), (":SOUR:FUNC CURR", None), (":OUTP:CURR:SMOD HIMP", None),
         (':SENS:FUNC "VOLT"', None), (":SENS:VOLT:NPLC 1", None)]
SOURCE_1MA = [(":SOUR:FUNC CURR", None), (":SOUR:CURR:RANG:AUTO 1", None),
              (":SOUR:CURR:LEV 0.00113", None)]
ON_CONFIRMED = [(":OUTP ON", None), (":OUTP?", "1")]
ARMED = [(":SOUR:CURR:VLIM 1", None), (":SOUR:CURR:VLIM?", "+1.000000E+00")]


def smu_on(dev: ScpiReplay, rm) -> Keithley2450:
    return Keithley2450(dev.resource, resource_manager=rm, timeout_s=0.5, backoff_s=0.0,
                        host_watchdog_s=None)


def test_a_connection_dropped_at_the_compliance_read_back_sets_the_step_up_again(rm):
    pairs = (SETUP + [(":SOUR:CURR:VLIM 1", None), (":SOUR:CURR:VLIM?", HANG_UP)]
             + SETUP + ARMED + SOURCE_1MA + [(":SYST:ERR?", NO_ERROR)] + ON_CONFIRMED)
    with ScpiReplay(pairs) as dev:
        smu = smu_on(dev, rm)
        smu.start_current(1.13e-3, 1.0, 60.0, -1.0, 1.0)  # the old driver: InstrumentGone
        assert dev.connections == 2
        count, why = smu.retried.take()
        assert count == 1 and "step setup" in why[0] and "InstrumentGone" in why[0]
        smu._disconnect()


def test_a_lost_output_on_is_seen_and_the_setup_sent_again(rm):
    """``:OUTP ON`` written into a connection that the instrument dropped: nothing says so but
    the ``:OUTP?`` that confirms it."""
    step = ARMED + SOURCE_1MA + [(":SYST:ERR?", NO_ERROR)]
    pairs = (SETUP + step + [(":OUTP ON", HANG_UP)] + SETUP + step + ON_CONFIRMED)
    with ScpiReplay(pairs) as dev:
        smu = smu_on(dev, rm)
        smu.start_current(1.13e-3, 1.0, 60.0, -1.0, 1.0)
        assert dev.connections == 2 and smu.retried.take()[0] == 1
        smu._disconnect()


def test_a_setup_that_keeps_failing_raises_after_its_attempts_with_the_output_off(rm):
    failing = SETUP + [(":SOUR:CURR:VLIM 1", None), (":SOUR:CURR:VLIM?", HANG_UP)]
    pairs = failing * SETUP_ATTEMPTS + [(":OUTP OFF", None), (":OUTP?", "0")]
    with ScpiReplay(pairs) as dev:
        smu = smu_on(dev, rm)
        with pytest.raises(InstrumentGone):
            smu.start_current(1.13e-3, 1.0, 60.0, -1.0, 1.0)
        count, why = smu.retried.take()
        # every attempt but the raised last one, then output-off's first try on the dead link
        assert count == SETUP_ATTEMPTS and sum("step setup" in w for w in why) == count - 1
        assert why[-1].startswith("output off:")
        smu._disconnect()


def test_a_refused_setting_is_not_asked_again(rm):
    pairs = SETUP + [(":SOUR:CURR:VLIM 1", None), (":SOUR:CURR:VLIM?", "+2.100000E+01"),
                     (":SYST:ERR?", '-222,"Data out of range"'), (":SYST:ERR?", NO_ERROR),
                     (":OUTP OFF", None), (":OUTP?", "0")]
    with ScpiReplay(pairs) as dev:
        smu = smu_on(dev, rm)
        with pytest.raises(StepRefused, match="did not accept a 1 V compliance"):
            smu.start_current(1.13e-3, 1.0, 60.0, -1.0, 1.0)
        assert issubclass(StepRefused, InstrumentProtocolError)
        assert smu.retried.take()[0] == 0
        smu._disconnect()


def test_steps_set_up_through_frequent_disconnects_on_the_simulator(rm):
    """A simulated 2450 dropping the connection on 4 % of lines: 30 steps all start, each with
    its compliance armed and the output on, and every failed attempt is recorded."""
    clock = VirtualClock()
    with SimulatedKeithley2450(NaCell("symmetric", 1.13, PRESETS["glyme"]), clock) as sim:
        smu = Keithley2450(sim.resource, resource_manager=rm, now=clock.now, timeout_s=0.3,
                           backoff_s=0.0, host_watchdog_s=None)
        sim.fault = FaultProfile(disconnect=0.04, seed=3)
        retried = 0
        for n in range(30):
            current = 1.13e-3 if n % 2 else -1.13e-3
            smu.start_current(current, 1.0, 60.0, -1.0, 1.0)
            assert sim.output_on and sim.level_A == current and sim.vlim_V == 1.0
            retried += smu.retried.take()[0]
        assert retried > 0  # the faults did hit the setups, and each was counted
        assert retried >= sim.faults_injected.get("disconnect", 0) - 1  # at most one unseen yet
        sim.fault = None
        smu.close()
        assert not sim.output_on


def test_a_keithley_channel_at_a_high_fault_rate_completes_and_logs_every_fault(tmp_path):
    """The engine's side: a Keithley channel whose link garbles 3 % of its replies and drops
    0.5 % of its lines completes its cycles, and every fault the simulator injected is one
    ``instrument_retried`` event (the fault soak's promise, in seconds: a lost reply costs a
    2 s timeout, so the soak has those)."""
    from rig.store import get_events
    from tests.support.station_runs import cycling_plan, run, station_for

    plan = cycling_plan(2)
    station = station_for(plan, keithley_channels=[0], faults={
        "k2450-ch0": FaultProfile(garbled=0.03, disconnect=0.005, seed=11)})
    sim = station.simulation.by_name["k2450-ch0"]
    result, conn = run(plan, tmp_path / "k.db", station, sensor_floor_s=None)
    injected = sum(sim.faults_injected.values())
    assert result.status == "completed"
    with conn:
        events = get_events(conn, result.run_key)
    retried = [e for e in events if e["kind"] == "instrument_retried"]
    assert injected > 5 and len(retried) == injected
