"""The Keithley 2450 driver against the simulated 2450 on a real TCP socket (pyvisa-py).

The simulator records every line it receives (``sim.received``): that is the transcript the
driver tests compare with. Nothing here patches the driver.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator

import pytest
import pyvisa
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.base import (
    InstrumentError,
    InstrumentGone,
    InstrumentProtocolError,
    InstrumentTimeout,
    Potentiostat,
)
from drivers.keithley2450 import (
    Keithley2450,
    compliance_for,
    parse_error,
    parse_read,
    parse_reading,
)
from rig.clock import VirtualClock
from rig.sim.cell import PRESETS, NaCell
from rig.sim.keithley import FaultProfile, SimulatedKeithley2450, canonical_header

I_1MA_CM2 = 1.13e-3  # 1 mA/cm² on a 1.13 cm² electrode

READ_2450 = ':READ? "defbuffer1", READ, SOUR, SOURSTAT'
SETUP = {
    "2450": ["*CLS", ":SOUR:FUNC CURR", ":OUTP:CURR:SMOD HIMP", ':SENS:FUNC "VOLT"',
             ":SENS:VOLT:NPLC 1"],
    "2400": ["*CLS", ":SOUR:FUNC CURR", ":OUTP:SMOD HIMP", ':SENS:FUNC "VOLT"',
             ":SENS:VOLT:NPLC 1"],
}
ARM = {"2450": [":SOUR:CURR:VLIM 1.5", ":SOUR:CURR:VLIM?"],
       "2400": [":SENS:VOLT:PROT 1.5", ":SENS:VOLT:PROT?"]}


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


def glyme_cell(seed: int = 0) -> NaCell:
    return NaCell("symmetric", 1.13, PRESETS["glyme"], seed=seed)


@pytest.fixture(params=["2450", "2400"])
def command_set(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def sim(clock: VirtualClock, command_set: str) -> Iterator[SimulatedKeithley2450]:
    with SimulatedKeithley2450(glyme_cell(), clock, command_set=command_set) as s:
        yield s


@pytest.fixture
def sim2450(clock: VirtualClock) -> Iterator[SimulatedKeithley2450]:
    with SimulatedKeithley2450(glyme_cell(), clock) as s:
        yield s


def driver(sim: SimulatedKeithley2450, clock: VirtualClock, rm: pyvisa.ResourceManager,
           **kw: object) -> Keithley2450:
    """The one-shot command flow (no host watchdog: tests/test_keithley_watchdog.py has it)."""
    kw.setdefault("host_watchdog_s", None)
    return Keithley2450(sim.resource, command_set=sim.command_set, now=clock.now,
                        resource_manager=rm, **kw)  # type: ignore[arg-type]


def sent(sim: SimulatedKeithley2450, smu: Keithley2450) -> list[str]:
    """What the instrument has received so far (writes are not answered: sync with *OPC?)."""
    smu.wait()
    assert sim.received[-1] == "*OPC?"
    return sim.received[:-1]


# ----------------------------------------------------------------- the simulator, plain pyvisa

def test_simulator_answers_idn_to_a_plain_pyvisa_client(sim2450, rm):
    assert sim2450.resource == f"TCPIP0::127.0.0.1::{sim2450.port}::SOCKET"
    inst = rm.open_resource(sim2450.resource, read_termination="\n", write_termination="\n",
                            timeout=2000)
    try:
        idn = inst.query("*IDN?")
    finally:
        inst.close()
    maker, model, serial, firmware = idn.split(",")
    assert (maker, model) == ("KEITHLEY INSTRUMENTS", "MODEL 2450")
    assert serial and firmware


def test_simulator_queues_undefined_header_and_sends_no_reply(sim2450, rm):
    inst = rm.open_resource(sim2450.resource, read_termination="\n", write_termination="\n",
                            timeout=200)
    try:
        inst.write(":SOUR:BOGUS 1")
        with pytest.raises(pyvisa.errors.VisaIOError):
            inst.query(":NOT:A:QUERY?")  # a failing query stays silent, as on the instrument
        assert inst.query(":SYST:ERR?") == '-113,"Undefined header"'
        assert inst.query(":SYST:ERR?") == '-113,"Undefined header"'
        assert inst.query(":SYST:ERR?") == '0,"No error"'
    finally:
        inst.close()


def test_simulator_takes_long_forms_and_compound_lines(sim2450, rm):
    inst = rm.open_resource(sim2450.resource, read_termination="\n", write_termination="\n",
                            timeout=2000)
    try:
        inst.write(":SOURce1:CURRent:LEVel:IMMediate:AMPLitude 2.5e-3;:sour:curr:vlim 3")
        assert float(inst.query(":SOUR:CURR?")) == 2.5e-3
        assert float(inst.query(":SOURce:CURRent:VLIMit?")) == 3.0
        assert inst.query(":OUTPut:STATe?") == "0"
    finally:
        inst.close()
    assert canonical_header(":SENSe1:VOLTage:PROTection:LEVel") == "VOLT:PROT"


def test_simulator_works_inside_a_running_event_loop(clock):
    async def main() -> str:
        with SimulatedKeithley2450(glyme_cell(), clock) as s:
            smu = await asyncio.to_thread(Keithley2450, s.resource, now=clock.now)
            try:
                return await asyncio.to_thread(smu.identify)
            finally:
                smu.close()

    assert "MODEL 2450" in asyncio.run(main())


def test_simulator_close_is_idempotent_and_joins_threads(clock, rm):
    s = SimulatedKeithley2450(glyme_cell(), clock).start()
    smu = driver(s, clock, rm)
    smu.identify()
    s.close()
    s.close()
    assert s._thread is not None and not s._thread.is_alive()
    smu.close()


# ----------------------------------------------------------------- transcripts

def test_start_current_arms_compliance_before_output_on(sim, clock, rm, command_set):
    smu = driver(sim, clock, rm)
    smu.start_current(I_1MA_CM2, 1.0, 60.0, -1.5, 1.0)
    assert sent(sim, smu) == SETUP[command_set] + ARM[command_set] + [
        ":SOUR:FUNC CURR", ":SOUR:CURR:RANG:AUTO 1", ":SOUR:CURR:LEV 0.00113", ":SYST:ERR?",
        ":OUTP ON", ":OUTP?"]
    assert sim.output_on and sim.vlim_V == 1.5 and sim.off_state == "HIMP"
    smu.close()
    assert sim.received[-2:] == [":OUTP OFF", ":OUTP?"] and not sim.output_on


def test_second_step_does_not_repeat_the_setup(sim2450, clock, rm):
    smu = driver(sim2450, clock, rm)
    smu.start_current(I_1MA_CM2, 1.0, 60.0, -1.5, 1.5)
    n = len(sent(sim2450, smu)) + 1
    smu.start_current(-I_1MA_CM2, 1.0, 60.0, -1.5, 1.5)
    assert sent(sim2450, smu)[n:] == ARM["2450"] + [
        ":SOUR:FUNC CURR", ":SOUR:CURR:RANG:AUTO 1", ":SOUR:CURR:LEV -0.00113", ":SYST:ERR?",
        ":OUTP ON", ":OUTP?"]
    smu.close()


def test_refused_compliance_never_switches_the_output_on(sim, clock, rm, command_set):
    smu = driver(sim, clock, rm)
    with pytest.raises(InstrumentProtocolError, match="did not accept a 300 V compliance"):
        smu.start_current(I_1MA_CM2, 1.0, 60.0, -300.0, 1.0)  # the limit tops out at 210 V
    assert ":OUTP ON" not in sim.received
    assert not sim.output_on
    assert ":SOUR:CURR:LEV 0.00113" not in sim.received  # refused before sourcing anything
    with pytest.raises(InstrumentProtocolError, match="compliance not armed"):
        smu.output(True)
    smu.close()


def test_an_error_during_setup_refuses_the_step_and_switches_the_output_off(sim2450, clock, rm):
    smu = driver(sim2450, clock, rm)
    smu.start_current(I_1MA_CM2, 1.0, 60.0, -1.0, 1.0)
    smu._write(":SOUR:NONSENSE")  # something went wrong on the wire since the last step
    with pytest.raises(InstrumentProtocolError, match="refused the step setup: -113"):
        smu.start_current(-I_1MA_CM2, 1.0, 60.0, -1.0, 1.0)
    assert not sim2450.output_on
    assert smu.read_samples(1.0) == ([], True)
    smu.close()


def test_identify_refuses_the_wrong_model(clock, rm):
    with SimulatedKeithley2450(glyme_cell(), clock, command_set="2400") as s:
        smu = Keithley2450(s.resource, command_set="2450", resource_manager=rm)
        with pytest.raises(InstrumentProtocolError, match="is not a 2450"):
            smu.identify()
        smu.close()


def test_errors_drains_the_queue(sim2450, clock, rm):
    smu = driver(sim2450, clock, rm)
    smu._write(":SOUR:WHAT 1")
    smu._write(":SOUR:CURR:LEV 5")  # beyond 1.05 A
    assert smu.errors() == [(-113, "Undefined header"), (-222, "Data out of range")]
    assert smu.errors() == []
    smu.close()


# ----------------------------------------------------------------- pure parsing

def test_parse_read_both_formats():
    assert parse_read("2.100000E-02,1.130000E-03", "2450") == (0.021, 0.00113)
    assert parse_reading("1.000000E+00,9.9E-04,1.600000E+02", "2450").compliance is True
    assert parse_reading("1.0E-02,1.13E-03,1.280000E+02", "2450").compliance is False
    full = "+2.100000E-02,-1.130000E-03,+9.910000E+37,+4.569600E+03,+0.000000E+00"
    assert parse_read(full, "2400") == (0.021, -0.00113)
    assert parse_reading(full.replace("+0.000000E+00", "+8.000000E+00"), "2400").compliance
    assert parse_read("+2.1E-02,+1.13E-03", "2400") == (0.021, 0.00113)  # FORM:ELEM VOLT,CURR
    assert parse_error('-113,"Undefined header"') == (-113, "Undefined header")
    assert compliance_for(-0.5, 1.0) == 1.0


@pytest.mark.parametrize("reply,command_set", [
    ("", "2450"), ("2.1E-02", "2450"), ("abc,def", "2450"), ("1,2,3,4", "2450"),
    ("nan,1", "2450"), ("inf,1", "2400"), ("1e999,1", "2450"), ("9.9E37,1E-3", "2450"),
    ("1,2,3", "2400"), ("1_0,1", "2400"), ("1,1,1.5", "2450"), ("1,1,R,t,s", "2400"),
])
def test_parse_read_refuses_garbage(reply, command_set):
    with pytest.raises(InstrumentProtocolError):
        parse_read(reply, command_set)


@settings(max_examples=300, deadline=None)
@given(st.text(), st.sampled_from(["2450", "2400"]))
def test_parse_read_of_any_text_raises_only_protocol_errors(reply, command_set):
    try:
        v, i = parse_read(reply, command_set)
    except InstrumentProtocolError:
        return
    assert math.isfinite(v) and math.isfinite(i)


finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False)


@settings(max_examples=100, deadline=None)
@given(finite, finite, st.integers(0, 255))
def test_parse_read_round_trips_what_the_instruments_send(v, i, status):
    assert parse_reading(f"{v:.6E},{i:.6E},{float(status):.6E}", "2450") == (
        float(f"{v:.6E}"), float(f"{i:.6E}"), bool(status & 32))
    full = f"{v:+.6E},{i:+.6E},+9.910000E+37,+1.000000E+01,{float(status):+.6E}"
    assert parse_reading(full, "2400") == (float(f"{v:.6E}"), float(f"{i:.6E}"),
                                           bool(status & 8))


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_parse_error_of_any_text_raises_only_protocol_errors(reply):
    try:
        code, _ = parse_error(reply)
    except InstrumentProtocolError:
        return
    assert isinstance(code, int)


# ----------------------------------------------------------------- measuring the cell

def test_measure_glyme_symmetric_cell_gives_tens_of_mV_with_the_sign_of_I(
        sim, clock, rm, command_set):
    smu = driver(sim, clock, rm)
    for current in (I_1MA_CM2, -I_1MA_CM2):
        smu.start_current(current, 1.0, 600.0, -1.0, 1.0)
        clock.advance(60.0)
        v, i = smu.measure()
        assert i == pytest.approx(current)
        assert 0.005 < abs(v) < 0.1 and math.copysign(1, v) == math.copysign(1, current)
    smu.close()


def test_2400_reading_in_two_field_format(clock, rm):
    with SimulatedKeithley2450(glyme_cell(), clock, command_set="2400") as s:
        smu = driver(s, clock, rm)
        smu.start_current(I_1MA_CM2, 1.0, 600.0, -1.0, 1.0)
        smu._write(":FORM:ELEM VOLT,CURR")
        clock.advance(10.0)
        v, i = smu.measure()
        assert 0.005 < v < 0.1 and i == pytest.approx(I_1MA_CM2)
        smu.close()


def test_compliance_clamps_the_voltage(sim, clock, rm):
    smu = driver(sim, clock, rm)
    smu.configure()
    smu.arm_compliance(0.02)  # below the ~24 mV this cell needs at 1 mA/cm²
    smu.source_current(I_1MA_CM2)
    smu.output(True)
    clock.advance(10.0)
    first = smu.read()
    assert first.potential_V == pytest.approx(0.02) and first.compliance
    clock.advance(10.0)
    held = smu.read()  # now a voltage source at the limit: the cell takes less current
    assert held.potential_V == pytest.approx(0.02) and held.compliance
    assert 0 < held.current_A < I_1MA_CM2
    smu.close()


def test_streaming_step_ends_at_its_duration_at_zero_current(sim2450, clock, rm):
    smu = driver(sim2450, clock, rm)
    assert isinstance(smu, Potentiostat)
    smu.start_current(I_1MA_CM2, 10.0, 30.0, -1.0, 1.0)
    seen = []
    for _ in range(3):
        clock.advance(10.0)
        samples, ended = smu.read_samples(10.0 * (len(seen) + 1))
        seen += samples
    assert [s.t_s for s in seen] == [10.0, 20.0, 30.0] and ended
    assert all(0.005 < s.potential_V < 0.1 and not s.overload for s in seen)
    assert sent(sim2450, smu)[-1] == ":SOUR:CURR:LEV 0"  # rests at 0 A, relay not cycled
    assert sim2450.output_on and sim2450.level_A == 0.0
    assert smu.read_samples(math.inf) == ([], True)
    smu.close()


def test_window_crossing_switches_the_output_off(sim2450, clock, rm):
    smu = driver(sim2450, clock, rm)
    smu.start_current(-I_1MA_CM2, 1.0, 600.0, -0.01, 1.0)  # plating drives E to about -24 mV
    clock.advance(5.0)
    samples, ended = smu.read_samples(5.0)
    assert ended and samples[0].potential_V < -0.01
    assert not sim2450.output_on
    assert sim2450.received[-2:] == [":OUTP OFF", ":OUTP?"]
    smu.close()


def test_compliance_during_a_step_switches_the_output_off(sim, clock, rm):
    smu = driver(sim, clock, rm)
    smu.start_current(I_1MA_CM2, 1.0, 600.0, -0.02, 0.02)
    clock.advance(5.0)
    samples, ended = smu.read_samples(5.0)
    assert ended and samples[0].overload and samples[0].potential_V == pytest.approx(0.02)
    assert not sim.output_on
    smu.close()


def test_open_circuit_sources_zero_amps_with_compliance_armed(sim2450, clock, rm):
    smu = driver(sim2450, clock, rm)
    smu.start_open_circuit(1.0, 60.0)
    assert sent(sim2450, smu)[-8:] == [":SOUR:CURR:VLIM 21", ":SOUR:CURR:VLIM?",
                                       ":SOUR:FUNC CURR", ":SOUR:CURR:RANG:AUTO 1",
                                       ":SOUR:CURR:LEV 0", ":SYST:ERR?", ":OUTP ON", ":OUTP?"]
    clock.advance(30.0)
    (sample,), ended = smu.read_samples(30.0)
    assert not ended and sample.current_A == 0.0 and abs(sample.potential_V) < 0.005
    smu.close()


def test_no_impedance(sim2450, clock, rm):
    # potentiostatic steps now run: tests/drivers/test_keithley_potentiostatic.py
    smu = driver(sim2450, clock, rm)
    with pytest.raises(InstrumentProtocolError, match="no impedance"):
        smu.eis([1e3, 1.0], 0.01)
    smu.close()


# ----------------------------------------------------------------- faults, typed

def test_closed_server_raises_typed_errors_only(clock, rm):
    s = SimulatedKeithley2450(glyme_cell(), clock).start()
    smu = driver(s, clock, rm, timeout_s=0.2, retries=1)
    smu.start_current(I_1MA_CM2, 1.0, 60.0, -1.0, 1.0)
    s.close()
    for call in (lambda: smu.read_samples(1.0), smu.measure, smu.identify, smu.output_is_on,
                 smu.output_off):
        with pytest.raises((InstrumentGone, InstrumentTimeout)):
            call()
    smu.close()  # best effort: no error
    with pytest.raises(InstrumentGone):
        smu.measure()


def test_nothing_listening_is_instrument_gone(rm):
    with pytest.raises(InstrumentGone):
        Keithley2450("TCPIP0::127.0.0.1::1::SOCKET", resource_manager=rm)


def test_no_reply_is_retried_then_a_timeout(sim2450, clock, rm):
    smu = driver(sim2450, clock, rm, timeout_s=0.1, retries=2)
    sim2450.fault = FaultProfile(no_reply=1.0)
    n = len(sim2450.received)
    t = time.monotonic()
    with pytest.raises(InstrumentTimeout, match="after 3 tries"):
        smu.measure()
    assert sim2450.received[n:] == [READ_2450] * 3
    assert time.monotonic() - t < 2.0
    sim2450.fault = None
    smu.close()


def test_garbled_replies_are_protocol_errors(sim2450, clock, rm):
    smu = driver(sim2450, clock, rm, timeout_s=0.2, retries=1)
    sim2450.fault = FaultProfile(garbled=1.0)
    with pytest.raises(InstrumentProtocolError):
        smu.measure()
    smu.close()


def test_disconnect_is_instrument_gone_and_the_instrument_keeps_sourcing(sim2450, clock, rm):
    smu = driver(sim2450, clock, rm, timeout_s=0.2)
    smu.start_current(I_1MA_CM2, 1.0, 60.0, -1.0, 1.0)
    smu.wait()  # :OUTP ON executed before the link breaks
    sim2450.fault = FaultProfile(disconnect=1.0)
    with pytest.raises(InstrumentGone):
        smu.measure()
    smu.close()
    assert sim2450.output_on  # a dropped LAN link does not stop the source: compliance holds
    sim2450.fault = None
    again = driver(sim2450, clock, rm)
    again.output_off()
    assert not sim2450.output_on
    again.close()


def test_occasional_faults_are_ridden_out_by_retries(sim2450, clock, rm):
    smu = driver(sim2450, clock, rm, timeout_s=0.05, retries=4, backoff_s=0.0)
    smu.start_current(I_1MA_CM2, 1.0, 600.0, -1.0, 1.0)
    smu.wait()
    sim2450.fault = FaultProfile(no_reply=0.2, garbled=0.1, seed=7)
    readings = []
    for _ in range(15):
        clock.advance(1.0)
        try:
            readings.append(smu.measure())
        except InstrumentError as exc:  # possible, but then typed
            pytest.fail(f"5 tries should ride out 30 % faults here: {exc}")
    assert all(0.005 < v < 0.1 for v, _ in readings)
    sim2450.fault = None
    smu.close()
