"""The Keithley driver against the manual, not against our simulator.

Each test is a transcript in the style of pymeasure's ``expected_protocol``: (command, reply)
pairs written from the Keithley 2450 reference manual (2450-901-01) and the 2400 Series user's
manual (2400S-900-01), replayed over a real TCP socket by ``support/scpi_replay.py``. The replies
are what those instruments send: real ``*IDN?`` strings, NR3 numbers (the 2400 signs them),
``:SYST:ERR?`` entries such as ``-113,"Undefined header"``, the 2450's ``READ, SOUR, SOURSTAT``
reading (SOURSTAT bit 5 = 32: the source was limited; bit 7 = 128: output on) and the 2400's
``V,I,R,t,status`` (status bit 3 = 8: compliance). A driver that sends anything else, in any
other order, or stops short, fails. The last test sends the same pairs to the simulator.
"""

from __future__ import annotations

import itertools

import pytest

from drivers.base import InstrumentProtocolError
from drivers.keithley2450 import Keithley2450, parse_error
from rig.clock import VirtualClock
from rig.sim.cell import PRESETS, NaCell
from rig.sim.keithley import SimulatedKeithley2450
from tests.support.scpi_replay import ScpiReplay

IDN_2450 = "KEITHLEY INSTRUMENTS,MODEL 2450,04365704,1.6.4c"
IDN_2400 = "KEITHLEY INSTRUMENTS INC.,MODEL 2400,1207317,C30   Mar 17 2006 09:29:29/A02  /K/J"
NO_ERROR = '0,"No error"'
READ_2450 = ':READ? "defbuffer1", READ, SOUR, SOURSTAT'

SETUP_2450 = [("*CLS", None), (":SOUR:FUNC CURR", None), (":OUTP:CURR:SMOD HIMP", None),
              (':SENS:FUNC "VOLT"', None), (":SENS:VOLT:NPLC 1", None)]
SETUP_2400 = [("*CLS", None), (":SOUR:FUNC CURR", None), (":OUTP:SMOD HIMP", None),
              (':SENS:FUNC "VOLT"', None), (":SENS:VOLT:NPLC 1", None)]
SOURCE_1MA = [(":SOUR:FUNC CURR", None), (":SOUR:CURR:RANG:AUTO 1", None),
              (":SOUR:CURR:LEV 0.00113", None)]
OFF_CONFIRMED = [(":OUTP OFF", None), (":OUTP?", "0")]


def ticking(step_s: float = 1.0):
    """A clock for the driver's time stamps: each call one step later."""
    counter = itertools.count()
    return lambda: next(counter) * step_s


def smu(dev: ScpiReplay, rm, command_set: str = "2450", **kw) -> Keithley2450:
    kw.setdefault("host_watchdog_s", None)  # the watchdog's pairs: test_keithley_watchdog.py
    return Keithley2450(dev.resource, command_set=command_set, resource_manager=rm,
                        timeout_s=2.0, **kw)


def test_identify_accepts_a_real_2450_and_a_real_2400(rm):
    with ScpiReplay([("*IDN?", IDN_2450)]) as dev:
        k = smu(dev, rm)
        assert k.identify() == IDN_2450
        k._disconnect()
    with ScpiReplay([("*IDN?", IDN_2400)]) as dev:
        k = smu(dev, rm, "2400")
        assert k.identify() == IDN_2400
        k._disconnect()


def test_identify_refuses_a_2400_where_the_station_says_2450(rm):
    with ScpiReplay([("*IDN?", IDN_2400)]) as dev:
        k = smu(dev, rm)
        with pytest.raises(InstrumentProtocolError, match="is not a 2450"):
            k.identify()
        k._disconnect()


def test_errors_drains_the_queue_as_the_manual_writes_it(rm):
    with ScpiReplay([(":SYST:ERR?", '-113,"Undefined header"'),
                     (":SYST:ERR?", '-222,"Data out of range"'),
                     (":SYST:ERR?", NO_ERROR)]) as dev:
        k = smu(dev, rm)
        assert k.errors() == [(-113, "Undefined header"), (-222, "Data out of range")]
        k._disconnect()


def test_the_2400s_signed_no_error_reply_ends_the_queue(rm):
    # the 2400 manual lists the no-error entry as +000; units answer +0,"No error"
    assert parse_error('+0,"No error"') == (0, "No error")
    with ScpiReplay([(":SYST:ERR?", '-113,"Undefined header"'),
                     (":SYST:ERR?", '+0,"No error"')]) as dev:
        k = smu(dev, rm, "2400")
        assert k.errors() == [(-113, "Undefined header")]
        k._disconnect()


def test_2450_galvanostatic_step_arms_vlim_reads_it_back_then_switches_on(rm):
    with ScpiReplay([*SETUP_2450, (":SOUR:CURR:VLIM 1.5", None),
                     (":SOUR:CURR:VLIM?", "1.500000E+00"), *SOURCE_1MA,
                     (":SYST:ERR?", NO_ERROR), (":OUTP ON", None), (":OUTP?", "1"),
                     (READ_2450, "2.412300E-02,1.130000E-03,1.280000E+02"),
                     (":OUTP?", "1"), *OFF_CONFIRMED]) as dev:
        k = smu(dev, rm, now=ticking())
        k.start_current(1.13e-3, 1.0, 60.0, -1.5, 1.0)
        (sample,), ended = k.read_samples(1.0)
        assert (sample.potential_V, sample.current_A, sample.overload) == (
            0.024123, 0.00113, False) and not ended
        assert k.output_is_on()
        k.close()


def test_2400_galvanostatic_step_arms_sens_volt_prot_and_reads_five_fields(rm):
    with ScpiReplay([*SETUP_2400, (":SENS:VOLT:PROT 1.5", None),
                     (":SENS:VOLT:PROT?", "+1.500000E+00"), *SOURCE_1MA,
                     (":SYST:ERR?", '+0,"No error"'), (":OUTP ON", None), (":OUTP?", "1"),
                     (":READ?", "+2.412300E-02,+1.130000E-03,+9.910000E+37,+4.569600E+03,"
                                "+0.000000E+00"),
                     *OFF_CONFIRMED]) as dev:
        k = smu(dev, rm, "2400", now=ticking())
        k.start_current(1.13e-3, 1.0, 60.0, -1.5, 1.0)
        (sample,), ended = k.read_samples(1.0)
        assert (sample.potential_V, sample.current_A, sample.overload) == (
            0.024123, 0.00113, False) and not ended
        k.close()


def test_a_compliance_the_instrument_did_not_take_never_switches_the_output_on(rm):
    # VLIM tops out at 210 V: the 2450 queues -222 and keeps its 21 V default
    with ScpiReplay([*SETUP_2450, (":SOUR:CURR:VLIM 300", None),
                     (":SOUR:CURR:VLIM?", "2.100000E+01"),
                     (":SYST:ERR?", '-222,"Data out of range"'), (":SYST:ERR?", NO_ERROR),
                     *OFF_CONFIRMED]) as dev:
        k = smu(dev, rm)
        with pytest.raises(InstrumentProtocolError, match="did not accept a 300 V compliance"
                           r".*-222 Data out of range"):
            k.start_current(1.13e-3, 1.0, 60.0, -300.0, 1.0)
        k._disconnect()


def test_an_error_queued_during_setup_refuses_the_step_with_the_output_off(rm):
    with ScpiReplay([*SETUP_2450, (":SOUR:CURR:VLIM 1", None),
                     (":SOUR:CURR:VLIM?", "1.000000E+00"), *SOURCE_1MA,
                     (":SYST:ERR?", '-113,"Undefined header"'), (":SYST:ERR?", NO_ERROR),
                     *OFF_CONFIRMED]) as dev:
        k = smu(dev, rm)
        with pytest.raises(InstrumentProtocolError, match="refused the step setup: -113"):
            k.start_current(1.13e-3, 1.0, 60.0, -1.0, 1.0)
        k._disconnect()


@pytest.mark.parametrize("command_set,setup,arm,reading", [
    ("2450", SETUP_2450, [(":SOUR:CURR:VLIM 0.02", None), (":SOUR:CURR:VLIM?", "2.000000E-02")],
     (READ_2450, "2.000000E-02,1.130000E-03,1.600000E+02")),      # 160 = on + limited
    ("2400", SETUP_2400, [(":SENS:VOLT:PROT 0.02", None), (":SENS:VOLT:PROT?", "+2.000000E-02")],
     (":READ?", "+2.000000E-02,+1.130000E-03,+9.910000E+37,+1.000000E+01,+8.000000E+00")),
])
def test_a_reading_in_compliance_switches_the_output_off(rm, command_set, setup, arm, reading):
    with ScpiReplay([*setup, *arm, *SOURCE_1MA, (":SYST:ERR?", NO_ERROR), (":OUTP ON", None),
                     (":OUTP?", "1"), reading, *OFF_CONFIRMED]) as dev:
        k = smu(dev, rm, command_set, now=ticking())
        k.start_current(1.13e-3, 1.0, 60.0, -0.02, 0.02)
        (sample,), ended = k.read_samples(1.0)
        assert ended and sample.overload and sample.potential_V == 0.02
        k._disconnect()


def test_output_off_sends_off_again_while_outp_reads_on(rm):
    with ScpiReplay([(":OUTP OFF", None), (":OUTP?", "1"), *OFF_CONFIRMED]) as dev:
        k = smu(dev, rm)
        k.output_off()
        k._disconnect()


# ----------------------------------------------------------------- the simulator, same pairs

@pytest.mark.parametrize("command_set,pairs", [
    ("2450", [("*IDN?", IDN_2450), (":SYST:ERR?", NO_ERROR), (":SOUR:BOGUS 1", None),
              (":SYST:ERR?", '-113,"Undefined header"'), (":SOUR:CURR:VLIM 300", None),
              (":SYST:ERR?", '-222,"Data out of range"'), (":SYST:ERR?", NO_ERROR),
              (":SOUR:CURR:VLIM 1.5", None), (":SOUR:CURR:VLIM?", "1.500000E+00"),
              (":SOUR:VOLT:ILIM 0.005", None), (":SOUR:VOLT:ILIM?", "5.000000E-03"),
              (":OUTP?", "0"), (":OUTP ON", None), (":OUTP?", "1"), (":OUTP OFF", None),
              (":OUTP?", "0")]),
    ("2400", [("*IDN?", IDN_2400), (":SENS:VOLT:PROT 1.5", None),
              (":SENS:VOLT:PROT?", "+1.500000E+00"), (":SENS:CURR:PROT 0.005", None),
              (":SENS:CURR:PROT?", "+5.000000E-03"), (":SOUR:CURR:VLIM 1", None),
              (":SYST:ERR?", '-113,"Undefined header"'), (":OUTP?", "0")]),
])
def test_the_simulator_answers_the_manuals_pairs(rm, command_set, pairs):
    idn = dict(pairs)["*IDN?"]
    serial = idn.split(",")[2]
    clock = VirtualClock()
    cell = NaCell("symmetric", 1.13, PRESETS["glyme"])
    with SimulatedKeithley2450(cell, clock, command_set=command_set, serial_number=serial) as sim:
        inst = rm.open_resource(sim.resource, read_termination="\n", write_termination="\n",
                                timeout=2000)
        try:
            for command, reply in pairs:
                if reply is None:
                    inst.write(command)
                    continue
                got = inst.query(command)
                if command == "*IDN?":
                    assert got.split(",")[:3] == idn.split(",")[:3], command
                elif reply[0] in "+-0123456789" and "," not in reply:
                    assert float(got) == float(reply), command
                else:
                    assert got == reply, command
        finally:
            inst.close()
