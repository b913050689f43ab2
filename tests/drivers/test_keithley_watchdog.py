"""Issue 10: the instrument stays safe without its host.

With the engine killed, a Keithley 2450 used to keep sourcing forever. Now each step runs the
2450's trigger model as a watchdog (drivers.keithley2450.watchdog_model): it measures every
period and, after N checks in a row with no ``*TRG`` from the host, switches the output off;
the host's regular reads send ``*TRG``. The pairs are written from the reference manual's
TRIGger subsystem (``:TRIGger:BLOCk:...``, ``:INITiate``, ``:ABORt``, ``:FETCh?``); the
simulator runs the same blocks on the virtual clock, so the bound is measured on the
instrument's time.
"""

from __future__ import annotations

import logging

import pytest

from drivers.keithley2450 import (
    FETCH_2450,
    Keithley2450,
    StepRefused,
    WatchdogPlan,
    WatchdogTripped,
    watchdog_model,
    watchdog_plan,
)
from rig.clock import VirtualClock
from rig.sim.cell import PRESETS, NaCell
from rig.sim.keithley import FaultProfile, SimulatedKeithley2450
from tests.support.scpi_replay import ScpiReplay

NO_ERROR = '0,"No error"'
SETUP = [("*CLS", None), (":SOUR:FUNC CURR", None), (":OUTP:CURR:SMOD HIMP", None),
         (':SENS:FUNC "VOLT"', None), (":SENS:VOLT:NPLC 1", None)]
ARMED = [(":SOUR:CURR:VLIM 1", None), (":SOUR:CURR:VLIM?", "+1.000000E+00")]
SOURCE_1MA = [(":SOUR:FUNC CURR", None), (":SOUR:CURR:RANG:AUTO 1", None),
              (":SOUR:CURR:LEV 0.00113", None)]
TRG_FETCH = f"*TRG;{FETCH_2450};:OUTP?"


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def sim(clock):
    with SimulatedKeithley2450(NaCell("symmetric", 1.13, PRESETS["glyme"]), clock) as s:
        yield s


def watched(sim: SimulatedKeithley2450, rm, watchdog_s: float = 60.0, **kw) -> Keithley2450:
    return Keithley2450(sim.resource, command_set=sim.command_set, resource_manager=rm,
                        now=sim.clock.now, host_watchdog_s=watchdog_s, **kw)


def silent_until_off(sim: SimulatedKeithley2450, clock: VirtualClock, limit_s: float) -> float:
    """Let simulated time pass with no host, one second at a time: how long the output
    stayed on (the simulator's time), or limit_s if it never went off."""
    t0 = clock.now()
    while sim.output_on and clock.now() - t0 < limit_s:
        clock.advance(1.0)
    return sim.model_off_at - t0 if sim.model_off_at is not None else limit_s


# ----------------------------------------------------------------- the plan (pure)

@pytest.mark.parametrize("interval_s", [0.1, 1.0, 5.0, 10.0, 20.0])
def test_a_host_reading_often_enough_gets_the_bound_it_asked_for(interval_s):
    plan = watchdog_plan(interval_s, 60.0)
    assert plan.bound_s <= 60.0
    assert plan.checks * plan.period_s >= 1.5 * interval_s  # a live host never trips it


def test_a_bound_shorter_than_the_reads_allow_is_lengthened_not_faked():
    plan = watchdog_plan(60.0, 60.0)
    assert plan.checks * plan.period_s >= 1.5 * 60.0 and plan.bound_s > 60.0


def test_the_model_is_the_manuals_blocks_in_order():
    lines = watchdog_model(WatchdogPlan(7.5, 6, 52.85))
    assert lines == [':TRIG:LOAD "Empty"', ':TRIG:BLOC:MEAS 1, "defbuffer1"',
                     ":TRIG:BLOC:BRAN:EVEN 2, COMM, 5", ":TRIG:BLOC:BRAN:COUN 3, 6, 6",
                     ":TRIG:BLOC:BRAN:ALW 4, 8", ":TRIG:BLOC:BRAN:COUN:RES 5, 3",
                     ":TRIG:BLOC:DEL:CONS 6, 7.5", ":TRIG:BLOC:BRAN:ALW 7, 1",
                     ":TRIG:BLOC:SOUR:STAT 8, OFF", ":INIT"]


# ----------------------------------------------------------------- transcripts (the manual)

def model_pairs(interval_s: float) -> list[tuple[str, str | None]]:
    return [(line, None) for line in watchdog_model(watchdog_plan(interval_s, 60.0))]


def test_a_watched_step_arms_compliance_then_output_then_the_model(rm):
    pairs = ([(":ABOR", None)] + SETUP + ARMED + SOURCE_1MA + [(":SYST:ERR?", NO_ERROR),
             (":OUTP ON", None), (":OUTP?", "1")] + model_pairs(10.0)
             + [(":SYST:ERR?", NO_ERROR),
                (TRG_FETCH, "+2.100000E-02,+1.130000E-03,+1.280000E+02;1"),
                (":OUTP OFF", None), (":ABOR", None), (":OUTP?", "0")])
    with ScpiReplay(pairs) as dev:
        k = Keithley2450(dev.resource, resource_manager=rm, timeout_s=2.0, host_watchdog_s=60.0)
        k.start_current(1.13e-3, 10.0, 600.0, -1.0, 1.0)
        (sample,), ended = k.read_samples(10.0)
        assert not ended and sample.potential_V == pytest.approx(0.021)
        assert k.watchdog_bound_s == pytest.approx(52.85)
        k.close()


def test_a_reading_with_the_output_off_is_a_tripped_watchdog(rm):
    pairs = ([(":ABOR", None)] + SETUP + ARMED + SOURCE_1MA + [(":SYST:ERR?", NO_ERROR),
             (":OUTP ON", None), (":OUTP?", "1")] + model_pairs(10.0)
             + [(":SYST:ERR?", NO_ERROR),
                (TRG_FETCH, "+2.100000E-02,+1.130000E-03,+1.280000E+02;0")])
    with ScpiReplay(pairs) as dev:
        k = Keithley2450(dev.resource, resource_manager=rm, timeout_s=2.0, host_watchdog_s=60.0)
        k.start_current(1.13e-3, 10.0, 600.0, -1.0, 1.0)
        with pytest.raises(WatchdogTripped, match="host watchdog switched the output off"):
            k.read_samples(10.0)
        k._disconnect()


def test_an_instrument_that_refuses_the_model_refuses_the_step_with_the_output_off(rm):
    pairs = ([(":ABOR", None)] + SETUP + ARMED + SOURCE_1MA + [(":SYST:ERR?", NO_ERROR),
             (":OUTP ON", None), (":OUTP?", "1")] + model_pairs(10.0)
             + [(":SYST:ERR?", '-113,"Undefined header"'), (":SYST:ERR?", NO_ERROR),
                (":OUTP OFF", None), (":ABOR", None), (":OUTP?", "0")])
    with ScpiReplay(pairs) as dev:
        k = Keithley2450(dev.resource, resource_manager=rm, timeout_s=2.0, host_watchdog_s=60.0)
        with pytest.raises(StepRefused, match="refused the watchdog trigger model"):
            k.start_current(1.13e-3, 10.0, 600.0, -1.0, 1.0)
        k._disconnect()


# ----------------------------------------------------------------- the simulator's time

@pytest.mark.parametrize("interval_s", [1.0, 10.0])
def test_a_host_that_stops_talking_has_its_output_off_within_the_bound(sim, clock, rm,
                                                                       interval_s):
    k = watched(sim, rm)
    k.start_current(1.13e-3, interval_s, 3600.0, -1.0, 1.0)
    for _ in range(3):
        clock.advance(interval_s)
        k.read_samples(clock.now())
    on_for = silent_until_off(sim, clock, 600.0)  # the host is gone: nothing reads any more
    assert not sim.output_on
    assert 0 < on_for <= 60.0
    k._disconnect()


@pytest.mark.parametrize("interval_s", [1.0, 10.0, 60.0])
def test_a_host_that_keeps_reading_is_never_interrupted(sim, clock, rm, interval_s):
    k = watched(sim, rm)
    k.start_current(1.13e-3, interval_s, 1e6, -1.0, 1.0)
    for _ in range(round(1200 / interval_s)):  # 20 minutes, 20 bounds
        clock.advance(interval_s)
        (sample,), ended = k.read_samples(clock.now())
        assert not ended and sample.current_A == pytest.approx(1.13e-3)
        assert sim.output_on
    assert sim.model_off_at is None
    k.close()
    assert not sim.output_on


def test_a_bound_the_reads_cannot_honour_is_still_a_bound_and_is_said(sim, clock, rm, caplog):
    k = watched(sim, rm)
    with caplog.at_level(logging.WARNING, logger="drivers.keithley2450"):
        k.start_current(1.13e-3, 60.0, 3600.0, -1.0, 1.0)
    assert "bounded to 105.7 s" in caplog.text
    on_for = silent_until_off(sim, clock, 600.0)
    assert not sim.output_on and on_for <= k.watchdog_bound_s
    k._disconnect()


def test_a_finished_step_rests_at_zero_amps_only_while_the_host_reads(sim, clock, rm):
    """A completed channel used to stay on at 0 A until the station closed."""
    k = watched(sim, rm)
    k.start_current(1.13e-3, 1.0, 5.0, -1.0, 1.0)
    ended = False
    while not ended:
        clock.advance(1.0)
        _, ended = k.read_samples(clock.now())
    assert sim.output_on and sim.level_A == 0.0  # at rest, watched
    assert 0 < silent_until_off(sim, clock, 600.0) <= 60.0
    k._disconnect()


def test_a_potentiostatic_step_is_watched_too(sim, clock, rm):
    k = watched(sim, rm)
    k.start_potential(0.02, 1.0, 600.0, 5e-3)
    clock.advance(10.0)
    (s,), ended = k.read_samples(10.0)
    assert not ended and s.potential_V == pytest.approx(0.02) and 1e-4 < s.current_A < 5e-3
    assert 0 < silent_until_off(sim, clock, 600.0) <= 60.0
    k._disconnect()


def test_a_late_host_learns_that_the_watchdog_tripped(sim, clock, rm):
    k = watched(sim, rm, watchdog_s=10.0)
    k.start_current(1.13e-3, 1.0, 3600.0, -1.0, 1.0)
    clock.advance(30.0)  # the host stalled for three bounds
    with pytest.raises(WatchdogTripped):
        k.read_samples(clock.now())
    assert not sim.output_on
    k.close()


def test_a_dropped_connection_leaves_the_watchdog_running_and_reading_goes_on(sim, clock, rm):
    k = watched(sim, rm, timeout_s=0.5, backoff_s=0.0)
    k.start_current(1.13e-3, 1.0, 3600.0, -1.0, 1.0)
    clock.advance(1.0)
    sim.drop_connections()
    (sample,), ended = k.read_samples(clock.now())  # reconnects, *TRG, the model's reading
    assert not ended and sim.output_on and sim.model_running
    assert k.retried.take()[0] == 1
    assert 0 < silent_until_off(sim, clock, 600.0) <= 60.0  # still guarding after the drop
    k._disconnect()


def test_watched_steps_ride_out_wire_faults(sim, clock, rm):
    k = watched(sim, rm, timeout_s=0.2, backoff_s=0.0, retries=3)
    sim.fault = FaultProfile(no_reply=0.005, garbled=0.005, disconnect=0.005, seed=5)
    for n in range(6):
        k.start_current(1.13e-3 if n % 2 else -1.13e-3, 1.0, 5.0, -1.0, 1.0)
        ended = False
        while not ended:
            clock.advance(1.0)
            _, ended = k.read_samples(clock.now())
    sim.fault = None
    k.close()
    assert not sim.output_on


def test_output_off_stops_another_hosts_model(sim, clock, rm):
    """`rig abort` of a dead run opens the station afresh: its output-off must stop the model
    the dead engine left running, not only the output."""
    dead = watched(sim, rm)
    dead.start_current(1.13e-3, 1.0, 3600.0, -1.0, 1.0)
    dead._disconnect()  # the engine is gone
    fresh = watched(sim, rm)
    fresh.output_off()
    assert not sim.output_on and not sim.model_running
    fresh.close()


def test_the_2400_command_set_has_no_watchdog_and_says_so(clock, rm, caplog):
    with SimulatedKeithley2450(NaCell("symmetric", 1.13, PRESETS["glyme"]), clock,
                               command_set="2400") as sim:
        with caplog.at_level(logging.WARNING, logger="drivers.keithley2450"):
            k = watched(sim, rm)
        assert "has no trigger model" in caplog.text and not k.watchdog
        k.start_current(1.13e-3, 1.0, 3600.0, -1.0, 1.0)
        clock.advance(3600.0)
        assert sim.output_on  # a documented limitation: nothing on the instrument stops it
        k.close()
        assert not sim.output_on


def test_the_simulator_refuses_read_while_its_model_runs(sim, clock, rm):
    k = watched(sim, rm)
    k.start_current(1.13e-3, 1.0, 3600.0, -1.0, 1.0)
    k._write(':READ? "defbuffer1", READ')
    assert k.errors() == [(-221, "Settings conflict")]
    k.close()


# ----------------------------------------------------------------- an accelerated served clock

def test_a_host_late_by_no_more_than_its_slack_is_not_tripped(sim, clock, rm):
    """On `rig sim serve --clock x100` the 2450's model counts 100 of its seconds for each of
    the host's: a host stalled 3 s (load, a swap) reads 300 s late in the model's time. With
    the slack scaled (500 s, what opening on x100 gives) that is a late read, not a dead host."""
    def silent_for(k: Keithley2450, silence_s: float) -> bool:
        k.start_current(1.13e-3, 1.0, 1e6, -1.0, 1.0)
        for _ in range(3):
            clock.advance(1.0)
            k.read_samples(clock.now())
        silent_until_off(sim, clock, silence_s)
        return sim.output_on

    late_but_alive = watched(sim, rm, host_slack_s=500.0)
    assert silent_for(late_but_alive, 300.0)
    (sample,), ended = late_but_alive.read_samples(clock.now())
    assert not ended and sample.current_A == pytest.approx(1.13e-3)
    assert late_but_alive.watchdog_bound_s > 500.0  # the honest bound, said when armed
    late_but_alive.close()
    assert not silent_for(watched(sim, rm), 300.0)  # the wall-time slack alone trips it


def test_opening_a_keithley_on_an_accelerated_clock_scales_the_hosts_slack(caplog):
    from rig.clock import RealClock
    from rig.station.opening import open_instrument
    from rig.station.schema import Keithley2450Entry

    clock = RealClock(speed=100)
    with SimulatedKeithley2450(NaCell("symmetric", 1.13, PRESETS["glyme"]), clock) as served:
        entry = Keithley2450Entry(name="k", driver="keithley2450", resource=served.resource)
        k = open_instrument(entry, clock, host_watchdog_s=60.0)
        try:
            with caplog.at_level(logging.WARNING, logger="drivers.keithley2450"):
                k.start_current(1.13e-3, 10.0, 3600.0, -1.0, 1.0)
            assert k.watchdog_bound_s is not None and k.watchdog_bound_s > 500.0
            assert "not the 60 s asked (a live host may read 500 s late" in caplog.text
        finally:
            k.close()
        assert not served.output_on
