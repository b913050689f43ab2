"""Keithley 2450 SourceMeter as a galvanostat (and potentiostat), over pyvisa (SCPI; the 2400's command set too).

    >>> smu = Keithley2450("TCPIP0::192.168.1.50::5025::SOCKET")
    >>> smu.identify()
    'KEITHLEY INSTRUMENTS,MODEL 2450,04412345,1.7.3b'
    >>> smu.start_current(1.13e-3, interval_s=1.0, duration_s=3600.0, e_min_V=-1.0, e_max_V=1.0)
    >>> smu.read_samples(1.0)
    ([Sample(t_s=1.0, potential_V=0.0212, current_A=0.00113, overload=False)], False)
    >>> smu.close()      # output off, then the connection

The instrument at a glance (SI units; :class:`CommandSet` holds one line per setting):

=====================  ==============================  ==============================  ==========
setting                2450                            2400 command set                range
=====================  ==============================  ==============================  ==========
source function        ``:SOUR:FUNC CURR``             same
source current (A)     ``:SOUR:CURR:LEV <A>``          same                            +-1.05 A
current range          ``:SOUR:CURR:RANG:AUTO 1``      same
voltage compliance     ``:SOUR:CURR:VLIM <V>``         ``:SENS:VOLT:PROT <V>``         0.02-210 V
output-off state       ``:OUTP:CURR:SMOD HIMP``        ``:OUTP:SMOD HIMP``
sense function         ``:SENS:FUNC "VOLT"``           same
integration (PLC)      ``:SENS:VOLT:NPLC 1``           same
reading                ``:READ? "defbuffer1", READ,    ``:READ?`` -> V,I,R,t,status
                       SOUR, SOURSTAT`` -> V,I,status  (or V,I after FORM:ELEM VOLT,CURR)
output                 ``:OUTP ON|OFF``, ``:OUTP?``    same
errors                 ``:SYST:ERR?`` -> ``0,"No error"``  same
=====================  ==============================  ==============================  ==========

Safety, in this order, every step:

1. the instrument's own limit: the voltage compliance is armed to ``max(|e_min|, |e_max|)`` and
   read back *before* the output goes on; if it reads back otherwise, or the instrument queued an
   error during the setup, the step is refused (:class:`InstrumentProtocolError`): ``:OUTP ON``
   is never sent and the output is switched off (a previous step may have left it on at 0 A).
   A crashed host then cannot drive the cell beyond the window's magnitude.
2. the host's window: the 2450 limits symmetrically, so an asymmetric window is checked here on
   every sample; a sample outside ``[e_min, e_max]`` or in compliance (the source was limited)
   switches the output off and ends the step. The sample is returned (``overload`` marks
   compliance) so the caller sees why.

Output-off state is HIMP (relay open): the 2450's NORMAL off-state is a 0 V source, which would
load a cell. Because the manual warns against cycling the relay often in HIMP, steps do not
switch the output off when they end: a finished or aborted step leaves the source at 0 A (the
cell at open circuit, compliance still armed). Only ``output_off``, a window trip and ``close``
open the output.

The streaming interface (``start_*`` then ``read_samples``) of the Potentiostat role: the 2450
runs no script, so each ``read_samples`` call takes ONE reading (``:READ?``), stamped with the
caller's clock (``now``, default ``time.monotonic``). The caller sleeps until its next sample time
and then calls; the driver never waits for ``until_s``. Open circuit is 0 A sourced with the
output on (a current source at 0 A is the high-impedance voltmeter the cell needs; with the
output off the relay is open and there is nothing to measure).

Potentiostatic steps (``start_potential``): the current limit (2450 ``:SOUR:VOLT:ILIM``,
2400 ``:SENS:CURR:PROT``) is armed to the step's ``i_max_A`` and read back first, then the level
(``:SOUR:VOLT:LEV``) before ``:SOUR:FUNC VOLT`` (never a stale level), then ``:SENS:FUNC
"CURR"``; the 2450's reading is then I, V, status (READ is the measured value). A reading in the
limit switches the output off. At the step's end the cell goes back to 0 A (current source).

The host watchdog (2450, ``host_watchdog_s``, default 60 s; None: none). A killed host must not
leave the cell driven, so every step, once its output is on and confirmed, loads and starts a
trigger model (:func:`watchdog_model`): measure into defbuffer1, then, if no ``*TRG`` arrived
since the last check for N checks in a row, a source-output-OFF block; else wait one period and
measure again. Each read sends ``*TRG`` with it (``*TRG;:FETC? ...;:OUTP?``: the model's latest
reading, and whether the output is still on), so the output has no gap while the host reads and
goes off within the bound (:func:`watchdog_plan`) once it stops. A read that finds the output
off raises :class:`WatchdogTripped`. Settings change only after ``:ABOR`` (a step's setup, the
0 A rest after it, which runs the watchdog again); output-off sends ``:ABOR`` after ``:OUTP OFF``
(the model may be a dead host's). The 2400 command set has no trigger model: there the output
stays unbounded without the host, and the constructor logs a warning saying so.

Not here: EIS (the 2450 has no impedance analyser; ``eis`` raises).

A step's setup is idempotent and read back (compliance, the error queue, ``:OUTP?``): a
dropped connection or a lost or garbled reply anywhere in it is cured by a new connection and
the whole setup sent again, ``SETUP_ATTEMPTS`` times; a refusal (:class:`StepRefused`) is not
retried. Every retried attempt (setup, query, reading) is recorded in ``retried``
(:class:`drivers.base.RetriedFaults`): the engine logs each as an event.

Transport faults: a timeout (VI_ERROR_TMO) or a garbled reply is retried ``retries`` times with a
bounded exponential backoff, and the input is drained before each retry so a late reply cannot
be taken for the next one; then :class:`InstrumentTimeout` / :class:`InstrumentProtocolError`.
A connection the peer closed or reset, or a closed resource, is :class:`InstrumentGone` at once.
No raw pyvisa error leaves this module.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import re
import select
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NamedTuple, Self

import pyvisa
from pyvisa import constants as visa_constants
from pyvisa import errors as visa_errors

from drivers.base import (
    InstrumentError,
    InstrumentGone,
    InstrumentProtocolError,
    InstrumentTimeout,
    OutputNotConfirmedOff,
    Ranges,
    RetriedFaults,
    Sample,
)

log = logging.getLogger(__name__)

MAX_CURRENT_A = 1.05  # the 1 A range, with its 5 % over-range
MAX_POTENTIAL_V = 21.0  # the default compliance, and the 20 V range the rig uses
MAX_BACKOFF_S = 1.0
END_EPS_S = 1e-6  # a step has ended when t >= duration - END_EPS_S (clock float resolution)
MAX_ERRORS = 64  # errors() stops after this many, in case the queue never reports 0
OFF_ATTEMPTS = 4  # output_off: tries, each on a fresh connection after a failed one
SETUP_ATTEMPTS = 5  # a step's setup: tries, each on a fresh connection after a failed one

# 2450 source status (SOURSTAT element): bit 5 the source was limited (in compliance), bit 7 on.
STAT_2450_LIMIT = 32
STAT_2450_OUTPUT = 128
# 2400 status word (5th field of :READ?): bit 3 real compliance.
STAT_2400_COMPLIANCE = 8
OVERFLOW = 9.9e37  # both models send 9.9E37 (2400: 9.91E37) for "no value"
# the host watchdog (2450 trigger model, see watchdog_plan)
WATCHDOG_CHECKS_PER_BOUND = 8  # the model checks for *TRG at least this often per bound
MIN_PERIOD_S = 0.05  # the fastest the model measures and checks
MAX_DELAY_S = 10_000.0  # the longest constant delay block
MEASURE_ALLOWANCE_S = 0.05  # one measure block at NPLC 1 (20 ms) and the blocks around it
HOST_SLACK_S = 5.0  # how late the host may read beyond 1.5 intervals before the model trips
# (wall seconds: on an accelerated simulated clock the instrument's are `speed` times more)
FETCH_2450 = ':FETC? "defbuffer1", READ, SOUR, SOURSTAT'  # the latest reading of the model

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d{1,4})?", re.ASCII)
_ERROR = re.compile(r'([+-]?\d{1,9})\s*,\s*"?([^"]*)"?', re.ASCII)


@dataclass(frozen=True, slots=True)
class CommandSet:
    """The SCPI of one model, one line per setting (``{}`` is the value, SI units)."""

    name: str
    model: str  # what *IDN? must contain
    compliance: str  # voltage limit while sourcing current (V)
    compliance_query: str
    off_state: str  # output-off state: relay open
    read: str  # one reading: V, I and a status that flags compliance
    current_limit: str = ""  # current limit while sourcing voltage (A)
    current_limit_query: str = ""
    source_function: str = ":SOUR:FUNC CURR"
    voltage_function: str = ":SOUR:FUNC VOLT"
    voltage_autorange: str = ":SOUR:VOLT:RANG:AUTO 1"
    voltage: str = ":SOUR:VOLT:LEV {:.6g}"  # V, +-MAX_POTENTIAL_V here
    sense_current: str = ':SENS:FUNC "CURR"'
    current_sense_autorange: str = ":SENS:CURR:RANG:AUTO 1"
    current_nplc: str = ":SENS:CURR:NPLC 1"
    current_autorange: str = ":SOUR:CURR:RANG:AUTO 1"
    current: str = ":SOUR:CURR:LEV {:.6g}"  # A, +-MAX_CURRENT_A
    sense_function: str = ':SENS:FUNC "VOLT"'
    nplc: str = ":SENS:VOLT:NPLC 1"  # power-line cycles per reading
    output: str = ":OUTP {}"  # ON | OFF
    output_query: str = ":OUTP?"
    abort: str = ":ABOR"  # stop the trigger model (the output stays as it is)
    clear_status: str = "*CLS"
    error_query: str = ":SYST:ERR?"
    idn: str = "*IDN?"
    operation_complete: str = "*OPC?"
    reset: str = "*RST"


COMMAND_SETS: dict[str, CommandSet] = {
    "2450": CommandSet(
        name="2450", model="2450",
        compliance=":SOUR:CURR:VLIM {:.6g}", compliance_query=":SOUR:CURR:VLIM?",
        current_limit=":SOUR:VOLT:ILIM {:.6g}", current_limit_query=":SOUR:VOLT:ILIM?",
        off_state=":OUTP:CURR:SMOD HIMP",
        read=':READ? "defbuffer1", READ, SOUR, SOURSTAT'),
    "2400": CommandSet(
        name="2400", model="2400",
        compliance=":SENS:VOLT:PROT {:.6g}", compliance_query=":SENS:VOLT:PROT?",
        current_limit=":SENS:CURR:PROT {:.6g}", current_limit_query=":SENS:CURR:PROT?",
        off_state=":OUTP:SMOD HIMP",
        read=":READ?"),
}


class StepRefused(InstrumentProtocolError):
    """The instrument answered and refused a step's setting (a compliance that reads back
    otherwise, an error queued during the setup): asking again would not help."""


# ----------------------------------------------------------------- pure parsing (fuzzable)

class Reading(NamedTuple):
    """One reading: potential V, current A, and whether the source was limited (compliance)."""

    potential_V: float
    current_A: float
    compliance: bool


def parse_number(text: str) -> float:
    """An SCPI number (NR1/NR2/NR3): ``parse_number("+1.130000E-03") -> 0.00113``."""
    t = text.strip()
    if not _NUMBER.fullmatch(t):
        raise InstrumentProtocolError(f"not a number: {text!r}")
    value = float(t)
    if not math.isfinite(value):
        raise InstrumentProtocolError(f"number out of range: {text!r}")
    return value


def _value(text: str, what: str) -> float:
    value = parse_number(text)
    if abs(value) >= OVERFLOW:
        raise InstrumentProtocolError(f"the instrument reported no {what} (overflow {text!r})")
    return value


def _status(text: str) -> int:
    value = parse_number(text)
    if value < 0 or value >= 2**32 or value != int(value):
        raise InstrumentProtocolError(f"bad status {text!r}")
    return int(value)


def parse_reading(reply: str, command_set: str, source: str = "CURR") -> Reading:
    """A ``:READ?`` reply of either command set.

    2450, ``READ, SOUR[, SOURSTAT]``: ``"2.1E-02,1.13E-03,1.28E+02"`` -> V, I, limited = bit 5;
    READ is the measured value and SOUR the sourced one, so sourcing voltage (``source="VOLT"``)
    the reply is I, V, status. 2400, always ``V,I,R,t,status`` (compliance = status bit 3) or
    ``V,I`` after ``:FORM:ELEM VOLT,CURR``.
    """
    if command_set not in COMMAND_SETS:
        raise ValueError(f"command_set must be one of {sorted(COMMAND_SETS)}, not {command_set!r}")
    fields = reply.strip().split(",")
    n = len(fields)
    if command_set == "2450":
        if n not in (2, 3):
            raise InstrumentProtocolError(f"2450 reading needs V,I[,status], got {reply!r}")
        limited = n == 3 and bool(_status(fields[2]) & STAT_2450_LIMIT)
    else:
        if n not in (2, 5):
            raise InstrumentProtocolError(f"2400 reading needs V,I or V,I,R,t,status, got {reply!r}")
        if n == 5:
            parse_number(fields[2])  # resistance (9.91E37 when not measured) and time:
            parse_number(fields[3])  # checked for shape only
        limited = n == 5 and bool(_status(fields[4]) & STAT_2400_COMPLIANCE)
    if command_set == "2450" and source == "VOLT":
        return Reading(_value(fields[1], "potential"), _value(fields[0], "current"), limited)
    return Reading(_value(fields[0], "potential"), _value(fields[1], "current"), limited)


def parse_read(reply: str, command_set: str) -> tuple[float, float]:
    """``parse_read("+2.1E-02,+1.13E-03,+9.91E+37,+1.2E+01,+0", "2400") -> (0.021, 0.00113)``"""
    v, i, _ = parse_reading(reply, command_set)
    return v, i


def parse_watched(reply: str, source: str = "CURR") -> tuple[Reading, bool]:
    """The reply to ``*TRG;:FETC? ...;:OUTP?``: the model's latest 2450 reading (``READ, SOUR,
    SOURSTAT``) and whether the output is on now:
    ``parse_watched("2.1E-02,1.13E-03,1.28E+02;1") -> (Reading(0.021, 0.00113, False), True)``
    (the buffered reading may predate the model switching the output off: ``:OUTP?`` says)."""
    reading_text, sep, output_text = reply.strip().rpartition(";")
    if not sep:
        raise InstrumentProtocolError(f"2450 reading needs V,I,status;output, got {reply!r}")
    return parse_reading(reading_text, "2450", source), parse_bool(output_text)


def parse_error(reply: str) -> tuple[int, str]:
    """``parse_error('-113,"Undefined header"') -> (-113, 'Undefined header')``"""
    m = _ERROR.fullmatch(reply.strip())
    if not m:
        raise InstrumentProtocolError(f"not an error queue entry: {reply!r}")
    return int(m.group(1)), m.group(2)


def parse_bool(reply: str) -> bool:
    """``:OUTP?`` -> ``"1"``/``"0"`` (also ON/OFF)."""
    t = reply.strip().upper()
    if t in ("1", "ON"):
        return True
    if t in ("0", "OFF"):
        return False
    raise InstrumentProtocolError(f"not a boolean: {reply!r}")


class WatchdogPlan(NamedTuple):
    """How the 2450's trigger model guards a step: measure and check every ``period_s``; after
    ``checks`` checks in a row with no ``*TRG`` from the host, output off. ``bound_s``: the
    longest the output stays on after the host's last read."""

    period_s: float
    checks: int
    bound_s: float


def watchdog_plan(interval_s: float, watchdog_s: float,
                  host_slack_s: float = HOST_SLACK_S) -> WatchdogPlan:
    """The trigger model's period and count for a host that reads every ``interval_s``.

    A check sees a ``*TRG`` sent any time since the previous check, so the output goes off at
    most (checks + 1) periods after the host's last read, and a host that reads every
    interval never trips it while checks x period exceeds the interval (with ``host_slack_s``
    of the instrument's time for a late read). The whole bound is used as tolerance when it can be; a bound shorter than about
    1.5 intervals cannot be honoured without tripping a live host, so then ``bound_s`` is
    longer than asked (the caller should say so).

    >>> watchdog_plan(10.0, 60.0)
    WatchdogPlan(period_s=7.5, checks=6, bound_s=52.85)
    >>> watchdog_plan(60.0, 60.0).bound_s > 60    # records less often than the bound allows
    True
    """
    if not (interval_s > 0 and watchdog_s > 0):
        raise ValueError(f"interval and watchdog must be > 0 s, not {interval_s!r}, "
                         f"{watchdog_s!r}")
    period = min(max(min(interval_s, watchdog_s / WATCHDOG_CHECKS_PER_BOUND), MIN_PERIOD_S),
                 MAX_DELAY_S)
    loop = period + MEASURE_ALLOWANCE_S
    checks = max(2, math.floor(watchdog_s / loop) - 1)
    needed = 1.5 * interval_s + host_slack_s
    if checks * period < needed:
        checks = math.ceil(needed / period)
    return WatchdogPlan(period, checks, round((checks + 1) * loop, 6))


def watchdog_model(plan: WatchdogPlan) -> list[str]:
    """The 2450 trigger model (SCPI, reference manual 2450-901-01, section 6 TRIGger) that
    measures every period and switches the output off after ``plan.checks`` checks in a row
    without a ``*TRG``. It never switches the output on (the host does, after compliance)::

        1 measure into defbuffer1
        2 a *TRG (COMMand event) since the last check?  -> 5
        3 fewer than N silent checks in a row?          -> 6 (counter, incremented here)
        4                                               -> 8
        5 reset the counter of block 3
        6 wait one period
        7                                               -> 1
        8 source output OFF; the model ends
    """
    return [
        ':TRIG:LOAD "Empty"',
        ':TRIG:BLOC:MEAS 1, "defbuffer1"',
        ":TRIG:BLOC:BRAN:EVEN 2, COMM, 5",
        f":TRIG:BLOC:BRAN:COUN 3, {plan.checks}, 6",
        ":TRIG:BLOC:BRAN:ALW 4, 8",
        ":TRIG:BLOC:BRAN:COUN:RES 5, 3",
        f":TRIG:BLOC:DEL:CONS 6, {plan.period_s:.6g}",
        ":TRIG:BLOC:BRAN:ALW 7, 1",
        ":TRIG:BLOC:SOUR:STAT 8, OFF",
        ":INIT",
    ]


class WatchdogTripped(InstrumentProtocolError):
    """The instrument's own watchdog switched the output off: the host read too late."""


def compliance_for(e_min_V: float, e_max_V: float) -> float:
    """The symmetric voltage limit that covers a window: ``compliance_for(-0.5, 1.0) -> 1.0``."""
    if not (math.isfinite(e_min_V) and math.isfinite(e_max_V)) or e_min_V >= e_max_V:
        raise ValueError(f"bad potential window [{e_min_V!r}, {e_max_V!r}] V")
    return max(abs(e_min_V), abs(e_max_V))


# ----------------------------------------------------------------- the driver

@dataclass
class _Step:
    t_start: float
    duration_s: float
    e_min_V: float | None
    e_max_V: float | None
    ended: bool = False


class Keithley2450:
    """One Keithley 2450 (or a 2400, ``command_set="2400"``) as a galvanostat channel."""

    ranges = Ranges(max_current_A=MAX_CURRENT_A, max_potential_V=MAX_POTENTIAL_V,
                    modes=("current", "potential", "open_circuit"),  # no EIS
                    min_interval_s=0.05)  # one :READ? at NPLC 1 (20 ms) plus its round trip
    streaming = False  # one reading per read_samples call: read once per recording interval

    def __init__(
        self, resource: str, *, command_set: str = "2450", timeout_s: float = 2.0,
        retries: int = 2, resource_manager: pyvisa.ResourceManager | None = None,
        now: Callable[[], float] = time.monotonic, backoff_s: float = 0.05,
        host_watchdog_s: float | None = 60.0, host_slack_s: float = HOST_SLACK_S,
    ) -> None:
        if command_set not in COMMAND_SETS:
            raise ValueError(f"command_set must be one of {sorted(COMMAND_SETS)}, "
                             f"not {command_set!r}")
        if timeout_s <= 0 or retries < 0 or backoff_s < 0:
            raise ValueError("timeout_s must be > 0, retries and backoff_s >= 0")
        if host_watchdog_s is not None and not (host_watchdog_s > 0):
            raise ValueError(f"host_watchdog_s must be > 0 s (or None: no bound), "
                             f"not {host_watchdog_s!r}")
        self.host_watchdog_s = host_watchdog_s
        self.host_slack_s = host_slack_s  # how late a live host may read, instrument seconds
        # the 2450's trigger model bounds the output without the host; the 2400 has none
        self.watchdog = command_set == "2450" and host_watchdog_s is not None
        if command_set != "2450" and host_watchdog_s is not None:
            log.warning("%s: the %s command set has no trigger model: its output is NOT "
                        "switched off if the host dies (host_watchdog ignored)", resource,
                        command_set)
        self.watchdog_bound_s: float | None = None  # the running step's, once armed
        self._model_running = False  # our watchdog trigger model runs on the instrument
        self._interval_s = 1.0  # how often the host reads the running step
        self._said: set[WatchdogPlan] = set()  # lengthened bounds already warned about
        self.resource_name = resource
        self.command_set = command_set
        self.scpi = COMMAND_SETS[command_set]
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._now = now
        # pyvisa shares one ResourceManager per library, so the driver never closes it (that
        # would close every other driver's connection too): close() closes our resource only.
        self._rm = resource_manager
        self._res: Any = None
        self._configured = False  # function, off-state, sense set since connect/reset
        self._compliance_V: float | None = None  # armed and read back
        self._current_limit_A: float | None = None  # armed and read back (voltage source)
        self._source = "CURR"  # what the instrument sources: CURR or VOLT
        self._sense = "VOLT"  # what it measures
        self._step: _Step | None = None
        self.retried = RetriedFaults()  # failed attempts that were retried: the engine logs them
        self._open()

    # --- connection
    def _open(self) -> None:
        try:
            if self._rm is None:
                self._rm = pyvisa.ResourceManager("@py")
            self._res = self._rm.open_resource(
                self.resource_name, read_termination="\n", write_termination="\n",
                timeout=round(self.timeout_s * 1000))
        except Exception as exc:  # noqa: BLE001 - pyvisa-py raises a bare Exception on connect
            raise InstrumentGone(f"cannot open {self.resource_name}: {exc}") from None
        sock = self._socket()
        if sock is not None:  # pyvisa-py's connect reports success on a refused port
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._disconnect()
                raise InstrumentGone(f"cannot open {self.resource_name}: "
                                     f"{errno.errorcode.get(err, err)}")
            try:  # commands are small lines: do not let Nagle hold one back for an ACK
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def close(self) -> None:
        """Output off (best effort, with reconnects), then the connection. Idempotent."""
        if self._res is None:
            return
        self._off_quietly()
        self._disconnect()

    def _disconnect(self) -> None:
        with contextlib.suppress(visa_errors.Error, OSError, AttributeError):
            self._res.close()  # already gone is fine here
        self._res = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- the instrument
    def identify(self) -> str:
        """``*IDN?``; refuses an instrument that is not the expected model."""
        idn = self._query(self.scpi.idn)
        fields = idn.split(",")
        if len(fields) < 2 or self.scpi.model not in fields[1]:
            raise InstrumentProtocolError(
                f"{self.resource_name} is not a {self.scpi.model}: *IDN? gave {idn!r}")
        return idn

    def reset(self) -> None:
        """``*RST``: output off, every setting to its default (compliance disarmed)."""
        self._write(self.scpi.reset)
        self._model_running = False
        self._configured = False
        self._compliance_V = None
        self._step = None

    def wait(self) -> None:
        """``*OPC?``: return once the instrument has executed everything sent before."""
        self._query(self.scpi.operation_complete, parse_bool)

    def errors(self) -> list[tuple[int, str]]:
        """Drain the error queue (``:SYST:ERR?`` until 0): ``[(-113, 'Undefined header')]``."""
        found: list[tuple[int, str]] = []
        for _ in range(MAX_ERRORS):
            code, message = self._query(self.scpi.error_query, parse_error)
            if code == 0:
                break
            found.append((code, message))
        return found

    def configure(self) -> None:
        """Once per connection: clear status, source current, HIMP off-state, sense voltage."""
        s = self.scpi
        for line in (s.clear_status, s.source_function, s.off_state, s.sense_function, s.nplc):
            self._write(line)
        self._configured = True
        self._source, self._sense = "CURR", "VOLT"
        self._current_limit_A = None

    def arm_current_limit(self, i_limit_A: float) -> None:
        """Set the current limit of the voltage source and read it back; refuse otherwise."""
        if not (math.isfinite(i_limit_A) and 0 < i_limit_A <= MAX_CURRENT_A):
            raise ValueError(f"current limit must be in (0, {MAX_CURRENT_A}] A, not {i_limit_A!r}")
        self._current_limit_A = None
        self._write(self.scpi.current_limit.format(i_limit_A))
        armed = self._query(self.scpi.current_limit_query, parse_number)
        if not math.isclose(armed, i_limit_A, rel_tol=1e-5, abs_tol=1e-12):
            errs = self._errors_quietly()
            raise StepRefused(
                f"the {self.scpi.model} did not accept a {i_limit_A:g} A current limit (it reads "
                f"{armed:g} A{'; errors: ' + _fmt_errors(errs) if errs else ''})")
        self._current_limit_A = armed

    def source_voltage(self, potential_V: float) -> None:
        """Source ``potential_V`` (level first, then the function, so the instrument never
        sources a stale level). Output unchanged."""
        if not (math.isfinite(potential_V) and abs(potential_V) <= MAX_POTENTIAL_V):
            raise ValueError(f"potential {potential_V!r} V is outside +-{MAX_POTENTIAL_V} V")
        s = self.scpi
        for line in (s.voltage_autorange, s.voltage.format(potential_V), s.voltage_function):
            self._write(line)
        self._source = "VOLT"

    def _sense_to(self, what: str) -> None:
        if what == self._sense:
            return
        s = self.scpi
        lines = ((s.sense_current, s.current_sense_autorange, s.current_nplc) if what == "CURR"
                 else (s.sense_function, s.nplc))
        for line in lines:
            self._write(line)
        self._sense = what

    def arm_compliance(self, v_limit_V: float) -> None:
        """Set the voltage limit and read it back; refuse if the instrument did not take it."""
        if not (math.isfinite(v_limit_V) and v_limit_V > 0):
            raise ValueError(f"compliance must be a positive voltage, not {v_limit_V!r}")
        self._compliance_V = None
        self._write(self.scpi.compliance.format(v_limit_V))
        armed = self._query(self.scpi.compliance_query, parse_number)
        if not math.isclose(armed, v_limit_V, rel_tol=1e-5, abs_tol=1e-9):
            errs = self._errors_quietly()
            raise StepRefused(
                f"the {self.scpi.model} did not accept a {v_limit_V:g} V compliance (it reads "
                f"{armed:g} V{'; errors: ' + _fmt_errors(errs) if errs else ''})")
        self._compliance_V = armed

    def source_current(self, current_A: float) -> None:
        """Source ``current_A`` (positive: anodic at the WE), autoranged. Output unchanged."""
        if not (math.isfinite(current_A) and abs(current_A) <= MAX_CURRENT_A):
            raise ValueError(f"current {current_A!r} A is outside +-{MAX_CURRENT_A} A")
        s = self.scpi
        for line in (s.source_function, s.current_autorange, s.current.format(current_A)):
            self._write(line)
        self._source = "CURR"

    def measure(self) -> tuple[float, float]:
        """One reading: (potential V, current A)."""
        v, i, _ = self.read()
        return v, i

    def read(self) -> Reading:
        """One reading with its compliance flag. With the watchdog running: ``*TRG`` (the
        host is alive) and the model's latest reading; an output the model switched off is
        :class:`WatchdogTripped`."""
        source = self._source
        if not self._model_running:
            return self._query(self.scpi.read,
                               lambda r: parse_reading(r, self.command_set, source),
                               reconnect=True)
        reading, on = self._query(f"*TRG;{FETCH_2450};{self.scpi.output_query}",
                                  lambda r: parse_watched(r, source), reconnect=True)
        if not on:
            self._model_running = False
            raise WatchdogTripped(
                f"{self.resource_name}: the instrument's host watchdog switched the output off "
                f"(no read within {self.watchdog_bound_s} s)")
        return reading

    def output(self, on: bool) -> None:
        """``:OUTP ON|OFF``; on only after compliance was armed and read back."""
        armed = self._current_limit_A if self._source == "VOLT" else self._compliance_V
        if on and armed is None:
            raise StepRefused("refusing output on: compliance not armed")
        self._write(self.scpi.output.format("ON" if on else "OFF"))

    def output_is_on(self) -> bool:
        return self._query(self.scpi.output_query, parse_bool)

    def output_off(self) -> None:
        """The safety path: ``:OUTP OFF``, confirmed by ``:OUTP?`` reading 0. Works in any state.

        A failed attempt (a dropped connection: ``Broken pipe``, a timeout, a garbled reply, an
        output that still reads on) is retried up to ``OFF_ATTEMPTS`` times, each after a
        reconnect: the instrument keeps sourcing when its LAN link drops, so a new connection
        is what switches it off. If it still cannot be confirmed: :class:`OutputNotConfirmedOff`
        (the output may be on; the caller must say so in an alarm)."""
        if self._step is not None:
            self._step.ended = True
        failures: list[str] = []
        for attempt in range(OFF_ATTEMPTS):
            if attempt:
                self._backoff(attempt - 1)
            try:
                if self._res is None:
                    self._reconnect()
                self._write(self.scpi.output.format("OFF"))
                if self.watchdog:  # off first, then stop the model (it may be another host's)
                    self._write(self.scpi.abort)
                    self._model_running = False
                if not self.output_is_on():
                    return
                failures.append(":OUTP? still reads 1")
            except InstrumentError as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
                self._disconnect()  # the next attempt starts on a fresh connection
            if attempt < OFF_ATTEMPTS - 1:
                self.retried.record(f"output off: {failures[-1]}; tried again on a new "
                                    "connection")
        raise OutputNotConfirmedOff(
            f"{self.resource_name}: output-off not confirmed after {OFF_ATTEMPTS} attempts "
            f"with reconnects; THE OUTPUT MAY STILL BE ON (last: {failures[-1]})")

    def safe_off(self) -> bool:
        """``output_off`` that never raises: True once the output was seen off."""
        try:
            self.output_off()
        except InstrumentError:
            return False
        return True

    def _reconnect(self) -> None:
        """A new connection; settings are re-sent before the next step (the instrument kept
        them, but nothing read back since says so)."""
        self._disconnect()
        self._open()
        self._configured = False
        self._compliance_V = None

    # --- the Potentiostat role (streaming)
    def start_current(
        self, current_A: float, interval_s: float, duration_s: float,
        e_min_V: float, e_max_V: float,
    ) -> None:
        """Galvanostatic step: arm compliance to the window, source, check errors, output on."""
        limit = compliance_for(e_min_V, e_max_V)
        self._begin(current_A, limit, duration_s, e_min_V, e_max_V, interval_s)

    def start_open_circuit(self, interval_s: float, duration_s: float) -> None:
        """Rest: 0 A sourced, output on, compliance the last window's (or 21 V)."""
        limit = self._compliance_V or MAX_POTENTIAL_V
        self._begin(0.0, limit, duration_s, None, None, interval_s)

    def start_potential(
        self, potential_V: float, interval_s: float, duration_s: float, i_max_A: float,
    ) -> None:
        """Potentiostatic step: arm the current limit to ``i_max_A`` and read it back, set the
        level, source voltage, measure current, check errors, output on. A reading in the
        limit switches the output off and ends the step (the instrument's own limit)."""
        if not duration_s > 0:
            raise ValueError(f"duration must be > 0 s, not {duration_s!r}")
        if not (math.isfinite(potential_V) and abs(potential_V) <= MAX_POTENTIAL_V):
            raise ValueError(f"potential {potential_V!r} V is outside +-{MAX_POTENTIAL_V} V")
        self._step = None

        def setup() -> None:
            self.arm_current_limit(min(i_max_A, MAX_CURRENT_A))
            self.source_voltage(potential_V)
            self._sense_to("CURR")
        self._set_up_step(setup, interval_s)
        self._step = _Step(self._now(), duration_s, None, None)

    def _begin(
        self, current_A: float, limit_V: float, duration_s: float,
        e_min_V: float | None, e_max_V: float | None, interval_s: float,
    ) -> None:
        if not duration_s > 0:
            raise ValueError(f"duration must be > 0 s, not {duration_s!r}")
        if not (math.isfinite(current_A) and abs(current_A) <= MAX_CURRENT_A):
            raise ValueError(f"current {current_A!r} A is outside +-{MAX_CURRENT_A} A")
        self._step = None

        def setup() -> None:
            self.arm_compliance(limit_V)
            self.source_current(current_A)
            self._sense_to("VOLT")
        self._set_up_step(setup, interval_s)
        self._step = _Step(self._now(), duration_s, e_min_V, e_max_V)

    def _set_up_step(self, setup: Callable[[], None], interval_s: float) -> None:
        """A step's whole configuration, then output on, confirmed by ``:OUTP?``, then (2450)
        the watchdog trigger model that switches it off if the host stops reading.

        Every setting is idempotent and read back (compliance, the error queue, the output),
        so a dropped connection or a lost or garbled reply anywhere in it is cured by a new
        connection and the whole setup sent again, up to ``SETUP_ATTEMPTS`` times; each
        failed attempt is recorded in ``retried``. A refusal (:class:`StepRefused`) is not
        retried. Whatever fails in the end leaves the output off, never half set up."""
        if not (math.isfinite(interval_s) and interval_s > 0):
            raise ValueError(f"interval must be > 0 s, not {interval_s!r}")
        self._interval_s = interval_s
        for attempt in range(SETUP_ATTEMPTS):
            try:
                if attempt:
                    self._backoff(attempt - 1)
                    self._reconnect()
                self._stop_model()  # settings are not changed under a running model
                if not self._configured:
                    self.configure()
                setup()
                errs = self.errors()
                if errs:
                    raise StepRefused(
                        f"the {self.scpi.model} refused the step setup: {_fmt_errors(errs)}")
                self.output(True)
                if not self.output_is_on():  # the line was lost with a dropped connection
                    raise InstrumentProtocolError(":OUTP? reads 0 after :OUTP ON")
                self._start_model()
                return
            except StepRefused:
                self._off_quietly()
                raise
            except InstrumentError as exc:
                if attempt == SETUP_ATTEMPTS - 1:
                    self._off_quietly()
                    raise
                self.retried.record(f"step setup: {type(exc).__name__}: {exc}; set up again "
                                    "on a new connection")

    def read_samples(self, until_s: float) -> tuple[list[Sample], bool]:
        """ONE reading now (``until_s`` is not waited for); ended once t >= duration or on a trip.

        A sample outside the window or in compliance switches the output off and ends the step;
        at the planned end the source goes to 0 A (output stays on, see the module notes).
        """
        step = self._step
        if step is None or step.ended:
            return [], True
        t0 = self._now()
        v, i, limited = self.read()
        t_s = (t0 + self._now()) / 2 - step.t_start
        sample = Sample(t_s, v, i, overload=limited)
        outside = (step.e_min_V is not None and v < step.e_min_V) or (
            step.e_max_V is not None and v > step.e_max_V)
        if limited or outside:
            self.output_off()
            return [sample], True
        if t_s >= step.duration_s - END_EPS_S:
            self._rest()
            return [sample], True
        return [sample], False

    def abort(self) -> None:
        """End the running step: source 0 A (output stays on, compliance armed)."""
        self._rest()

    # --- the host watchdog (2450 trigger model)
    def _stop_model(self) -> None:
        if self.watchdog:
            self._write(self.scpi.abort)
            self._model_running = False

    def _start_model(self) -> None:
        """Load and start the watchdog model for the step's read interval; an instrument that
        refuses a block refuses the step (:class:`StepRefused`)."""
        if not self.watchdog:
            return
        assert self.host_watchdog_s is not None
        plan = watchdog_plan(self._interval_s, self.host_watchdog_s, self.host_slack_s)
        if plan.bound_s > self.host_watchdog_s * (1 + 1e-9) and plan not in self._said:
            self._said.add(plan)  # once per interval, not at every step
            hint = ("read more often to honour it" if self.host_slack_s <= HOST_SLACK_S else
                    f"a live host may read {self.host_slack_s:g} s late on this accelerated "
                    "clock")
            log.warning("%s: reading every %g s, the output is bounded to %g s without the "
                        "host, not the %g s asked (%s)", self.resource_name, self._interval_s,
                        plan.bound_s, self.host_watchdog_s, hint)
        for line in watchdog_model(plan):
            self._write(line)
        self._model_running = True
        self.watchdog_bound_s = plan.bound_s
        errs = self.errors()
        if errs:
            raise StepRefused(f"the {self.scpi.model} refused the watchdog trigger model: "
                              f"{_fmt_errors(errs)}")

    def _rest(self) -> None:
        if self._step is not None:
            self._step.ended = True
        if self._model_running:
            self._rest_watched()
            return
        if self._source == "VOLT":  # the cell to open circuit: a current source at 0 A
            self._write(self.scpi.current.format(0.0))
            self._write(self.scpi.source_function)
            self._source = "CURR"
            return
        self._write(self.scpi.current.format(0.0))

    def _rest_watched(self) -> None:
        """0 A under the watchdog: stop the model, source 0 A, start it again (the output
        stays on at 0 A only as long as the host keeps reading). Retried on new connections
        like a step's setup; the error queue read at the end says every line arrived."""
        for attempt in range(SETUP_ATTEMPTS):
            try:
                if attempt:
                    self._backoff(attempt - 1)
                    self._reconnect()
                self._stop_model()
                self._write(self.scpi.current.format(0.0))
                if self._source == "VOLT":
                    self._write(self.scpi.source_function)
                    self._source = "CURR"
                self._start_model()
                return
            except StepRefused:
                raise
            except InstrumentError as exc:
                if attempt == SETUP_ATTEMPTS - 1:
                    raise
                self.retried.record(f"rest at 0 A: {type(exc).__name__}: {exc}; sent again "
                                    "on a new connection")

    def eis(
        self, frequencies_Hz: Sequence[float], amplitude_V: float, dc_V: float | None = None
    ) -> list[tuple[float, complex]]:
        raise InstrumentProtocolError("the 2450 has no impedance")

    def start_eis(self, f_start_Hz: float, f_end_Hz: float, n_points: int, amplitude_V: float,
                  dc_V: float) -> None:
        raise InstrumentProtocolError("the 2450 has no impedance")

    def read_eis(self, until_s: float) -> tuple[list[tuple[float, float, complex]], bool]:
        raise InstrumentProtocolError("the 2450 has no impedance")

    def eis_sweep_duration_s(self, f_start_Hz: float, f_end_Hz: float, n_points: int) -> float:
        raise InstrumentProtocolError("the 2450 has no impedance")

    @property
    def rejected(self) -> list[str]:
        """Garbled replies are retried, never skipped: always empty (drivers.base)."""
        return []

    # --- transport: every byte goes through these
    def _write(self, line: str) -> None:
        res = self._resource()
        try:
            res.write(line)
        except visa_errors.VisaIOError as exc:
            raise self._typed(exc, line) from None
        except (OSError, visa_errors.InvalidSession) as exc:
            raise InstrumentGone(f"{self.resource_name}: {line!r}: {exc}") from None

    def _read_line(self, command: str) -> str:
        res = self._resource()
        try:
            raw = res.read_raw()
        except visa_errors.VisaIOError as exc:
            raise self._typed(exc, command) from None
        except (OSError, visa_errors.InvalidSession) as exc:
            raise InstrumentGone(f"{self.resource_name}: {command!r}: {exc}") from None
        return raw.decode("ascii", errors="replace").strip("\r\n")

    def _query(self, command: str, parse: Callable[[str], Any] = str, *,
               reconnect: bool = False) -> Any:
        """Write, read one line, parse; timeouts and garbled replies retried ``retries`` times
        with backoff. ``reconnect``: a dropped connection is reopened and the query asked again,
        up to ``SETUP_ATTEMPTS - 1`` times (for a reading: the instrument kept sourcing;
        output-off has its own reconnecting loop). Every retried attempt is in ``retried``."""
        failed = dropped = 0
        while True:
            if failed or dropped:
                self._backoff(min(failed + dropped, self.retries + 1) - 1)
                self._drain()
            try:
                self._write(command)
                return parse(self._read_line(command))
            except (InstrumentTimeout, InstrumentProtocolError) as exc:
                if isinstance(exc, InstrumentTimeout) and self._peer_closed():
                    gone = InstrumentGone(
                        f"{self.resource_name} closed the connection ({command!r})")
                    if not reconnect or dropped == SETUP_ATTEMPTS - 1:
                        raise gone from None
                    dropped += 1
                    self.retried.record(f"InstrumentGone: {gone}; reconnected, asked again")
                    self._reconnect()  # the instrument kept its state: ask again
                    continue
                failed += 1
                if failed > self.retries:
                    raise type(exc)(f"{exc} (after {failed} tries)") from None
                self.retried.record(f"{type(exc).__name__}: {exc}; asked again")
            except InstrumentGone as exc:
                if not reconnect or dropped == SETUP_ATTEMPTS - 1:
                    raise
                dropped += 1
                self.retried.record(f"{type(exc).__name__}: {exc}; reconnected, asked again")
                self._reconnect()  # raises InstrumentGone itself if the instrument is not there

    def _resource(self) -> Any:
        if self._res is None:
            raise InstrumentGone(f"{self.resource_name} is closed")
        return self._res

    def _typed(self, exc: visa_errors.VisaIOError, command: str) -> InstrumentError:
        if exc.error_code == visa_constants.StatusCode.error_timeout:
            return InstrumentTimeout(f"{self.resource_name}: no reply to {command!r} "
                                     f"within {self.timeout_s:g} s")
        return InstrumentGone(f"{self.resource_name}: {command!r}: {exc.description}")

    def _backoff(self, attempt: int) -> None:
        time.sleep(min(self.backoff_s * 2**attempt, MAX_BACKOFF_S))

    def _off_quietly(self) -> None:
        try:
            self.output_off()
        except InstrumentError:
            pass

    def _errors_quietly(self) -> list[tuple[int, str]]:
        try:
            return self.errors()
        except InstrumentError:
            return []

    # pyvisa-py reads an orderly close as a timeout; its socket tells the truth.
    def _socket(self) -> socket.socket | None:
        try:
            sess = self._res.visalib.sessions[self._res.session]
            sock = getattr(sess, "interface", None)
        except Exception:  # noqa: BLE001 - another backend, or no socket: nothing to look at
            return None
        return sock if isinstance(sock, socket.socket) else None

    def _peer_closed(self) -> bool:
        sock = self._socket()
        if sock is None:
            return False
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _drain(self) -> None:
        """Discard late replies before a retry (InstrumentGone if the peer closed)."""
        with contextlib.suppress(visa_errors.Error, NotImplementedError, OSError):
            self._res.flush(visa_constants.BufferOperation.discard_read_buffer_no_io)
        sock = self._socket()
        if sock is None:
            return
        try:
            while select.select([sock], [], [], 0)[0]:
                if not sock.recv(4096):
                    raise InstrumentGone(f"{self.resource_name} closed the connection")
        except OSError as exc:
            raise InstrumentGone(f"{self.resource_name}: {exc}") from None


def _fmt_errors(errs: list[tuple[int, str]]) -> str:
    return "; ".join(f"{code} {message}" for code, message in errs)
