"""PalmSens EmStat4 over MethodSCRIPT (serial, 921600 8N1): the rig's potentiostat driver.

The dialect is docs/methodscript.md, to the byte. A plain synchronous class in SI units, usable
alone in a notebook::

    es = EmStat4("/dev/ttyACM0")
    es.identify()                                # 'es4_lr#Jan 10 2025 11:24:06 R1.6.2'
    es.start_current(1e-3, interval_s=1, duration_s=3600, e_min_V=-0.5, e_max_V=0.5)
    samples, ended = es.read_samples(until_s=60)   # the first minute (waits for it)
    es.eis([1e5, 1e4, 1e3, 100, 10], amplitude_V=0.01)   # [(f_Hz, Z)], at open circuit
    es.close()                                   # output off, port closed

Streaming: a script sends its packages on the instrument's schedule (package k at k x interval,
the last at the duration). ``read_samples(until_s)`` returns the packages due by ``until_s``,
waiting for them to arrive, and leaves later ones in the buffer for the next call.
The wire parsing is pure functions below (``parse_line``, ``parse_sample``, ``parse_eis_point``,
``build_*_script``), fuzzable without a port.
"""

from __future__ import annotations

import bisect
import cmath
import dataclasses
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Self, TypeVar

import serial

from drivers.base import (
    InstrumentError,
    InstrumentGone,
    InstrumentProtocolError,
    InstrumentTimeout,
    Ranges,
    Sample,
)
from drivers.methodscript import (
    OFFSET,
    PREFIXES,
    STATUS_OVERLOAD,
    error_code,
    format_si,
    parse_metadata,
    parse_package_variables,
    parse_si,
)

_TermiosError: type[BaseException]
try:
    from termios import error as _termios_error  # tcflush on a vanished pty raises this

    _TermiosError = _termios_error
except ImportError:  # Windows
    _TermiosError = OSError

log = logging.getLogger(__name__)
T = TypeVar("T")
# what a port that is closed or gone raises (pyserial, the OS, termios)
PORT_ERRORS: tuple[type[BaseException], ...] = (serial.SerialException, OSError, _TermiosError)

# ---- the instrument ------------------------------------------------------------------------------
BAUDRATE = 921600
# the 't' reply names the device (vendor instrument.py): the EmStat4 LR and HR are ours
EMSTAT4_MODELS = {"es4_lr": "EmStat4 LR", "es4_hr": "EmStat4 HR"}
OTHER_DEVICES = {"espico": "an EmStat Pico", "senswb": "a Sensit Wearable",
                 "mes4lr": "a MultiEmStat4 LR (multi-channel)",
                 "mes4hr": "a MultiEmStat4 HR (multi-channel)",
                 "espbl": "an EmStat Pico in its bootloader", "nexus1": "a Nexus"}
PGSTAT_MODE_OFF = 0                       # set_pgstat_mode 0: cell disconnected
PGSTAT_MODE_LOW_SPEED = 2                 # used for open circuit
PGSTAT_MODE_HIGH_SPEED = 3                # potentiostatic (CA, EIS)
PGSTAT_MODE_GALVANOSTATIC = 6             # galvanostatic (CP)
MAX_BANDWIDTH_DC_HZ = 200                 # set_max_bandwidth for CP/CA
# EmStat4 current ranges (LR: 1 nA .. 10 mA, whose top range carries up to 30 mA; HR up to 100 mA)
CURRENT_RANGES_A = (1e-9, 10e-9, 100e-9, 1e-6, 10e-6, 100e-6, 1e-3, 10e-3, 100e-3)  # HR: 100 mA
ERROR_NO_SCRIPT_RUNNING = 0x0006          # 'Z!0006': abort with nothing to abort (and 'e!0006':
                                          # a script still runs)
# EmStat4 potential ranges (vendor mscript.py); the top one measures up to the instrument's limit
POTENTIAL_RANGES_V = (50e-3, 100e-3, 200e-3, 500e-3, 1.0)
LOWEST_CURRENT_RANGE_A = 100e-9           # the lowest range both the LR and the HR have
MAX_FREQUENCY_HZ = 200e3                  # EmStat4 EIS: up to 200 kHz
EMSTAT4_LR_RANGES = Ranges(max_current_A=0.03, max_potential_V=3.0,   # +-30 mA, +-3 V
                           max_frequency_Hz=MAX_FREQUENCY_HZ,
                           min_interval_s=1e-3, max_step_s=1e9)  # meas_loop_* arguments

# ---- timing rules of the driver -----------------------------------------------------------------
# A package due within this after until_s counts as due by until_s: float noise between the
# host's and the device's clocks. It must stay below the device's own slack (the simulator
# emits a package when t_k <= its time + 1 us), or the driver would wait for one not yet sent.
TIME_TOLERANCE_S = 0.5e-6
BACKOFF_S = 0.05          # first retry pause, doubled per retry ...
MAX_BACKOFF_S = 0.5       # ... up to this
ABORT_DRAIN_TIMEOUTS = 5  # abort() reads past the stream's backlog for at most 5 x timeout_s
OCP_PROBE = (0.25, 1.0)   # (interval_s, duration_s) of the OCP read eis() uses when dc_V is None
MISSING_IN_A_ROW = 3
MAX_SILENCES = 2          # timeouts a script start recovers from (a lost reply, a lost abort)
# a port that has sent not one byte for this long (silent reads in a row) is taken for dead: no
# more resync attempts, so a dead port ends its channel in seconds. A late reply is bytes: it
# resets the count, so a stalled host (or a slow USB link) is still recovered from.
DEAD_PORT_S = 6.0
GARBLED_PACKAGE_MIN = 8   # a garbled line longer than this was a package (markers are shorter)
DEFAULT_HOST_WATCHDOG_S = 60.0  # an output-on script runs at most this long (the cell then off)


class DeviceError(InstrumentProtocolError):
    """The instrument answered an error code (``!XXXX``); ``code`` holds it."""

    def __init__(self, code: int, line: str) -> None:
        super().__init__(f"EmStat4 error code 0x{code:04X} in {line!r}")
        self.code = code
        self.line = line


class NotAnEmStat4(InstrumentProtocolError):
    """A well-formed answer from another device (a Pico, say): retrying will not help."""


class MissingVariable(InstrumentProtocolError):
    """A well-formed package without a variable the running step needs (``needs`` names it)."""

    def __init__(self, message: str, needs: str) -> None:
        super().__init__(message)
        self.needs = needs


# ---- pure functions: replies --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Event:
    """One line of script output: kind is package, accepted, loop_start, loop_end, script_end,
    text, plain_loop or abort; text is the line."""

    kind: str
    text: str


_MARKERS = {"e": "accepted", "*": "loop_end", "": "script_end", "Z": "abort",
            "L": "plain_loop", "+": "plain_loop", "-": "scan"}
_LOOP_START_RE = re.compile(r"M[0-9A-Fa-f]{4}")
_SCAN_START_RE = re.compile(r"C[0-9A-Fa-f]{4}")   # a CV scan with nscans(n > 1)


def parse_line(line: str) -> Event:
    """Classify a line the instrument sends while a script runs.

    ``parse_line("*") -> Event("loop_end", "*")``; raises DeviceError on ``!XXXX`` and
    InstrumentProtocolError on anything the dialect does not have.
    """
    code = error_code(line)
    if code is not None:
        raise DeviceError(code, line)
    if line[:1] == "P":
        return Event("package", line)
    if line in _MARKERS:
        return Event(_MARKERS[line], line)
    if _LOOP_START_RE.fullmatch(line):
        return Event("loop_start", line)
    if _SCAN_START_RE.fullmatch(line):
        return Event("scan", line)
    if line[:1] == "T":
        return Event("text", line)
    raise InstrumentProtocolError(f"unexpected line from the EmStat4: {line!r}")


def answers(line: str) -> str | None:
    """Which host command a line is (part of) the reply to: ``t`` (both version lines), ``i``,
    ``v``, ``Z``, ``e`` (a script's acceptance or refusal), ``script`` (a running script's
    output), or None (garbled: it is nothing the dialect has).

    ``answers("Z!0006") -> "Z"``, ``answers("R1.6.2*") -> "t"``, ``answers("*") -> "script"``.
    A device answers in order, so while the driver waits for one command's reply, a line
    that answers another is a reply that came after the driver gave up on it (late).
    """
    first = line[:1]
    if error_code(line) is not None:
        # a bare '!XXXX' (or a script's runtime error) names no command: the caller judges it
        return first if first in ("t", "i", "v", "Z", "e") else None
    if line in ("Z", "e"):
        return line
    if first in ("t", "i", "v") and len(line) > 1 and line.isprintable():
        return first
    if first == "R" and line.endswith("*") and line.isprintable():
        return "t"
    try:
        parse_line(line)
    except InstrumentProtocolError:
        return None
    return "script"


_V = r"([0-9A-F]{7})([afpnumkMGTPEi ])((?:,[0-9A-Fa-f]+)*)"  # hex, prefix, metadata
_SAMPLE_RE = re.compile(rf"Peb{_V};ab{_V}(?:;ba{_V})?")
_CP_RE = re.compile(rf"Peb{_V};ab{_V};db{_V}")      # our CP script's order
_CA_RE = re.compile(rf"Peb{_V};da{_V};ba{_V}")      # our CA script's order
_EIS_RE = re.compile(rf"Peb{_V};dc{_V};cc{_V};cd{_V}")

# What each step may find in a package, by role, in order of preference (the documentation
# allows either: a CA package carries the applied potential da, a CP one the applied current db;
# a script may add the measured ab or ba instead or as well; the measured value wins).
POTENTIAL_TYPES = ("ab", "da")   # measured, applied
CURRENT_TYPES = ("ba", "db")     # measured, applied


def _status(*metas: str | None) -> int:
    status = 0
    for meta in metas:
        if meta:
            # the firmware's usual ",1S,2RR": the status is the digit after ",1"
            if meta[:2] == ",1" and (len(meta) == 3 or meta[3] == ","):
                status |= int(meta[2], 16)
            else:
                status |= parse_metadata(meta)[0]
    return status


def _first(values: dict[str, float], types: tuple[str, ...]) -> float | None:
    for vtype in types:
        if vtype in values:
            return values[vtype]
    return None


def sample_from_package(line: str, step: str = "any", set_potential_V: float | None = None,
                        t_s: float | None = None) -> Sample:
    """A package -> Sample by what each variable is, for a ``cp``, ``ca``, ``ocp`` (or ``any``)
    step; MissingVariable (a protocol error) when it lacks what the step needs.

    ``sample_from_package("Peb8989680m;da7F85F3Fu;ba48D503Dp,10,288", "ca").current_A``
    ``-> -5.7847747e-05``
    """
    found = parse_package_variables(line)
    values = {v.type: v.value for v in found}
    status = 0
    for v in found:
        status |= v.status
    if "eb" not in values:
        if t_s is None:
            raise MissingVariable(f"package without eb (the time): {line!r}", "eb")
        values["eb"] = t_s  # the vendor's examples may leave the timer out: the schedule's time
    measured_e = values.get("ab")
    potential: float | None
    current: float | None
    if step == "cp":
        if measured_e is None:
            raise MissingVariable(f"CP package without ab (measured potential): {line!r}", "ab")
        current = _first(values, CURRENT_TYPES)
        if current is None:
            raise MissingVariable(f"CP package without db or ba (current): {line!r}", "db")
        potential = measured_e
    elif step == "ca":
        current = values.get("ba")
        if current is None:
            raise MissingVariable(f"CA package without ba (measured current): {line!r}", "ba")
        potential = _first(values, POTENTIAL_TYPES)
        if potential is None:
            if set_potential_V is None:
                raise MissingVariable(f"CA package without ab or da (potential): {line!r}", "da")
            potential = set_potential_V  # the vendor's own CA example sends the current only
    elif step == "ocp":
        if measured_e is None:
            raise MissingVariable(f"OCP package without ab (measured potential): {line!r}", "ab")
        potential, current = measured_e, values.get("ba", 0.0)
    else:
        potential = _first(values, POTENTIAL_TYPES)
        if potential is None:
            raise MissingVariable(f"package without ab or da (potential): {line!r}", "ab")
        current = _first(values, CURRENT_TYPES)
        current = 0.0 if current is None else current
    assert potential is not None and current is not None
    return Sample(values["eb"], potential, current, bool(status & STATUS_OVERLOAD))


def _shifted(sample: Sample, offset_s: float) -> Sample:
    if not offset_s:
        return sample
    return Sample(sample.t_s + offset_s, sample.potential_V, sample.current_A, sample.overload)


def parse_sample(line: str, offset_s: float = 0.0, _p: dict[str, float] = PREFIXES) -> Sample:
    """Any CP/CA/OCP package -> Sample, each variable by its type (current 0 when it has none);
    ``offset_s`` is added to its time (the step time before the script that sent it).

    ``parse_sample("Peb8989680m;ab8000000 ;ba8000000 ,12").overload -> True``
    """
    m = _SAMPLE_RE.fullmatch(line)
    if m is None:
        return _shifted(sample_from_package(line), offset_s)
    t, tp, tm, e, ep, em, i, ip, im = m.groups()
    overload = bool(_status(tm, em, im) & STATUS_OVERLOAD) if (tm or em or im) else False
    return Sample((int(t, 16) - OFFSET) * _p[tp] + offset_s, (int(e, 16) - OFFSET) * _p[ep],
                  (int(i, 16) - OFFSET) * _p[ip] if i else 0.0, overload)


def parse_cp_sample(line: str, offset_s: float = 0.0, _p: dict[str, float] = PREFIXES
                    ) -> Sample:
    """A CP package: measured potential ``ab`` and the current (set ``db`` or measured ``ba``)."""
    m = _CP_RE.fullmatch(line)
    if m is None:
        return _shifted(sample_from_package(line, "cp"), offset_s)
    t, tp, tm, e, ep, em, i, ip, im = m.groups()
    overload = bool(_status(tm, em, im) & STATUS_OVERLOAD) if (tm or em or im) else False
    return Sample((int(t, 16) - OFFSET) * _p[tp] + offset_s, (int(e, 16) - OFFSET) * _p[ep],
                  (int(i, 16) - OFFSET) * _p[ip], overload)


def ca_sample_parser(potential_V: float) -> Callable[..., Sample]:
    """The parser of a CA step at potential_V: measured current ``ba``; the potential from
    ``ab`` or ``da``, or the set potential when the package carries neither."""
    def parse_ca_sample(line: str, offset_s: float = 0.0, _p: dict[str, float] = PREFIXES
                        ) -> Sample:
        m = _CA_RE.fullmatch(line)
        if m is None:
            return _shifted(sample_from_package(line, "ca", potential_V), offset_s)
        t, tp, tm, e, ep, em, i, ip, im = m.groups()
        overload = bool(_status(tm, em, im) & STATUS_OVERLOAD) if (tm or em or im) else False
        return Sample((int(t, 16) - OFFSET) * _p[tp] + offset_s, (int(e, 16) - OFFSET) * _p[ep],
                      (int(i, 16) - OFFSET) * _p[ip], overload)
    return parse_ca_sample


def parse_ocp_sample(line: str, offset_s: float = 0.0) -> Sample:
    """An OCP package: time and measured potential ``ab``."""
    m = _SAMPLE_RE.fullmatch(line)
    if m is None or m.group(7):
        return _shifted(sample_from_package(line, "ocp"), offset_s)
    return parse_sample(line, offset_s)


def parse_eis_point(line: str, _p: dict[str, float] = PREFIXES, t_s: float | None = None
                    ) -> tuple[float, float, complex]:
    """An EIS package ``Peb<t>;dc<f>;cc<Z'>;cd<Z''>`` -> (t_s, f_Hz, Z' + jZ''); |Z| ``cb`` with
    the phase ``ca`` (degrees) serve as well."""
    m = _EIS_RE.fullmatch(line)
    if m is None:
        values = {v.type: v.value for v in parse_package_variables(line)}
        if "eb" not in values and t_s is not None:
            values["eb"] = t_s
        for need in ("eb", "dc"):
            if need not in values:
                raise MissingVariable(f"EIS package without {need}: {line!r}", need)
        if "cc" in values and "cd" in values:
            z = complex(values["cc"], values["cd"])
        elif "cb" in values and "ca" in values:
            z = values["cb"] * cmath.exp(1j * math.radians(values["ca"]))
        else:
            raise MissingVariable(f"EIS package without cc/cd or cb/ca: {line!r}", "cc")
        return values["eb"], values["dc"], z
    t, tp, _, f, fp, _, re_, rp, _, im, ip, _ = m.groups()
    return ((int(t, 16) - OFFSET) * _p[tp], (int(f, 16) - OFFSET) * _p[fp],
            complex((int(re_, 16) - OFFSET) * _p[rp], (int(im, 16) - OFFSET) * _p[ip]))


def parse_version(first: str, second: str) -> str:
    """The two lines answering ``t`` -> the firmware text; ``"tes4_lr#b", "R1.6*" -> "es4_lr#b R1.6"``.

    InstrumentProtocolError when garbled, NotAnEmStat4 when another device answered.
    """
    if not first.startswith("t") or not second.endswith("*"):
        raise InstrumentProtocolError(f"garbled version reply: {first!r} {second!r}")
    if model_of(first[1:]) is None:
        name = first[1:]
        other = next((what for prefix, what in OTHER_DEVICES.items() if name.startswith(prefix)),
                     None)
        why = f"it is {other}" if other else "its firmware name is none the driver knows"
        raise NotAnEmStat4(f"not an EmStat4 LR or HR: the device calls itself {name!r} ({why}; "
                           f"accepted: {', '.join(EMSTAT4_MODELS)})")
    return f"{first[1:]} {second[:-1]}"


def model_of(firmware: str) -> str | None:
    """``"es4_lr1500#Mar 12 2026" -> "EmStat4 LR"``; None for another device."""
    for prefix, model in EMSTAT4_MODELS.items():
        if firmware.startswith(prefix):
            return model
    return None


def parse_serial_number(line: str) -> str:
    """``"iES4-12345" -> "ES4-12345"``."""
    if not line.startswith("i") or len(line) < 2 or not line[1:].isprintable():
        raise InstrumentProtocolError(f"garbled serial number reply: {line!r}")
    return line[1:]


# ---- pure functions: scripts --------------------------------------------------------------------
def current_range(current_A: float) -> float:
    """The smallest EmStat4 current range that holds ``current_A``: ``1.13e-3 -> 10e-3``
    (the top range, 10 mA, for anything above it)."""
    for r in CURRENT_RANGES_A:
        if abs(current_A) <= r * (1 + 1e-9):
            return r
    return CURRENT_RANGES_A[-1]


def potential_range(potential_V: float, max_potential_V: float = 3.0) -> float:
    """The smallest EmStat4 potential range that holds ``potential_V`` (``0.3 -> 0.5``); the
    instrument's limit beyond the 1 V range (whose top range measures up to it)."""
    for r in POTENTIAL_RANGES_V:
        if abs(potential_V) <= r * (1 + 1e-9):
            return r
    return max_potential_V


_DC_PACKAGE = ["\ttimer_get t", "\tpck_start", "\tpck_add t", "\tpck_add p", "\tpck_add c",
               "\tpck_end"]


def _breakloop_if(var: str, op: str, limit: float) -> list[str]:
    return [f"\tif {var} {op} {format_si(limit)}", "\t\tbreakloop", "\tendif"]


def _potential_ranges(initial_V: float, max_potential_V: float) -> list[str]:
    """The measured potential: start in the range that holds ``initial_V``, autorange up to the
    instrument's limit (so a value outside the safety window reads true, not as an overload)."""
    top = format_si(max_potential_V)
    return [f"set_range ab {format_si(potential_range(initial_V, max_potential_V))}",
            f"set_autoranging ab {format_si(POTENTIAL_RANGES_V[0])} {top}"]


def build_cp_script(current_A: float, interval_s: float, duration_s: float,
                    e_min_V: float, e_max_V: float, max_potential_V: float = 3.0) -> list[str]:
    """Galvanostatic step; the instrument breaks the loop outside [e_min_V, e_max_V]. The vendor's
    galvanostatic idiom: a ``db`` range for the applied current, an ``ab`` range for the
    measured potential. Packages: ``eb`` time, ``ab`` measured potential, ``db`` set current."""
    i, r = format_si(current_A), format_si(current_range(current_A))
    return ["var c", "var p", "var t", "set_pgstat_chan 0",
            f"set_pgstat_mode {PGSTAT_MODE_GALVANOSTATIC}",
            f"set_max_bandwidth {MAX_BANDWIDTH_DC_HZ}",
            *_potential_ranges(max(abs(e_min_V), abs(e_max_V)), max_potential_V),
            f"set_range db {r}", f"set_autoranging db {r} {r}", f"set_i {i}", "cell_on",
            "timer_start",
            f"meas_loop_cp p c {i} {format_si(interval_s)} {format_si(duration_s)}",
            *_DC_PACKAGE, *_breakloop_if("p", ">", e_max_V), *_breakloop_if("p", "<", e_min_V),
            "endloop", "on_finished:", "cell_off"]


def build_ca_script(potential_V: float, interval_s: float, duration_s: float,
                    i_max_A: float) -> list[str]:
    """Potentiostatic step; the instrument breaks the loop beyond +-i_max_A, and a current
    beyond i_max_A's range reads as an overload. Packages: ``eb``, ``da`` set potential, ``ba``
    measured current."""
    e, r = format_si(potential_V), format_si(current_range(i_max_A))
    return ["var c", "var p", "var t", "set_pgstat_chan 0",
            f"set_pgstat_mode {PGSTAT_MODE_HIGH_SPEED}",
            f"set_max_bandwidth {MAX_BANDWIDTH_DC_HZ}", f"set_range_minmax da {e} {e}",
            f"set_range ba {r}", f"set_autoranging ba {format_si(LOWEST_CURRENT_RANGE_A)} {r}",
            f"set_e {e}", "cell_on", "timer_start",
            f"meas_loop_ca p c {e} {format_si(interval_s)} {format_si(duration_s)}",
            *_DC_PACKAGE, *_breakloop_if("c", ">", i_max_A), *_breakloop_if("c", "<", -i_max_A),
            "endloop", "on_finished:", "cell_off"]


def build_ocp_script(interval_s: float, duration_s: float,
                     max_potential_V: float = 3.0) -> list[str]:
    """Open circuit: the cell stays off, packages carry time and measured potential ``ab``."""
    return ["var p", "var t", "set_pgstat_chan 0", f"set_pgstat_mode {PGSTAT_MODE_LOW_SPEED}",
            *_potential_ranges(max_potential_V, max_potential_V), "cell_off", "timer_start",
            f"meas_loop_ocp p {format_si(interval_s)} {format_si(duration_s)}",
            "\ttimer_get t", "\tpck_start", "\tpck_add t", "\tpck_add p", "\tpck_end",
            "endloop"]


def build_eis_script(f_start_Hz: float, f_end_Hz: float, n_points: int, amplitude_V: float,
                     dc_V: float, max_potential_V: float = 3.0,
                     max_current_A: float = 0.03) -> list[str]:
    """Potentiostatic impedance around dc_V, log-spaced from f_start_Hz to f_end_Hz, the current
    autoranging over every range and the potential range fixed (the vendor's EIS idiom)."""
    e_dc = format_si(dc_V)
    top_i = format_si(max(r for r in CURRENT_RANGES_A if r <= max(max_current_A, 1e-9)))
    top_e = format_si(max_potential_V)
    return ["var h", "var r", "var j", "var t", "set_pgstat_chan 0",
            f"set_pgstat_mode {PGSTAT_MODE_HIGH_SPEED}", "set_max_bandwidth 400k",
            f"set_range_minmax da {e_dc} {e_dc}", f"set_range ba {top_i}",
            f"set_autoranging ba {format_si(LOWEST_CURRENT_RANGE_A)} {top_i}",
            f"set_range ab {top_e}", f"set_autoranging ab {top_e} {top_e}",
            f"set_e {e_dc}", "cell_on", "timer_start",
            (f"meas_loop_eis h r j {format_si(amplitude_V)} {format_si(f_start_Hz)} "
             f"{format_si(f_end_Hz)} {n_points} {e_dc}"),
            "\ttimer_get t", "\tpck_start", "\tpck_add t", "\tpck_add h", "\tpck_add r",
            "\tpck_add j", "\tpck_end", "endloop", "on_finished:", "cell_off"]


OUTPUT_OFF_SCRIPT = [f"set_pgstat_mode {PGSTAT_MODE_OFF}", "cell_off"]


def script_bytes(lines: Sequence[str]) -> bytes:
    """What the host sends to run a script: ``e``, its lines, an empty line."""
    return ("e\n" + "".join(line + "\n" for line in lines) + "\n").encode("ascii")


# ---- pure functions: the instrument's schedule --------------------------------------------------
def packages_due(interval_s: float, duration_s: float, until_s: float) -> int:
    """How many packages of a loop are due by until_s (the k-th at k x interval, the last at the
    duration): ``packages_due(1, 10, 3.5) -> 3``, ``packages_due(1, 2.5, 9) -> 3``."""
    if until_s >= duration_s:
        until_s, extra = duration_s, 1
    else:
        extra = 0
    if until_s < interval_s:
        return extra if duration_s < interval_s else 0
    k = int(until_s // interval_s)
    while (k + 1) * interval_s <= until_s:
        k += 1
    while k > 0 and k * interval_s > until_s:
        k -= 1
    if extra and duration_s - k * interval_s > 1e-6:
        k += 1  # the last package, at exactly the duration
    return k


def eis_frequencies(f_start_Hz: float, f_end_Hz: float, n_points: int) -> list[float]:
    """Log-spaced, both ends included."""
    if n_points == 1:
        return [f_start_Hz]
    ratio = f_end_Hz / f_start_Hz
    return [f_start_Hz * ratio ** (k / (n_points - 1)) for k in range(n_points)]


def eis_point_times(f_start_Hz: float, f_end_Hz: float, n_points: int) -> list[float]:
    """When each point's package is due: each point takes max(1 s, 3 periods)."""
    times, t = [], 0.0
    for f in eis_frequencies(f_start_Hz, f_end_Hz, n_points):
        t += max(1.0, 3.0 / f)
        times.append(t)
    return times


def as_sent(value: float) -> float:
    """A number as the instrument reads it from a script: ``as_sent(1/3) -> 0.333333333``."""
    return parse_si(format_si(value))


def _eis_point(line: str, offset_s: float = 0.0) -> tuple[float, float, complex]:
    t, f, z = parse_eis_point(line)
    return t + offset_s, f, z


@dataclass
class _Run:
    """The running script: its package schedule and how many packages were taken; and, for a
    step that runs as several scripts (chunks, each at most the host watchdog long), where
    this one sits in the step."""

    kind: str                          # "samples" or "eis"
    end_s: float                       # when the last package is due (from the script's start)
    interval_s: float = 0.0            # regular loops
    times: list[float] | None = None   # EIS points
    received: int = 0
    parse: Callable[..., Any] = parse_sample  # what the step reads from each package
    missing: int = 0                   # well-formed packages in a row without what it needs
    step: str = "any"                  # cp, ca, ocp or eis: what a package must carry
    set_potential_V: float | None = None  # ca: the potential when a package carries none
    offset_s: float = 0.0              # step time before this script (added to each t_s)
    anchor_s: float = 0.0              # when this script started, on the caller's read frame
    chunks: _Chunks | None = None      # the scripts still to run after this one
    last: Any = None                   # the last package taken (a cutoff check at a boundary)

    def untimed(self, line: str, k: int) -> Any:
        """Package k (1-based) without the timer: its time is the schedule's."""
        if self.kind == "eis":
            t, f, z = parse_eis_point(line, t_s=self.time_of(k))
            return t + self.offset_s, f, z
        return _shifted(sample_from_package(line, self.step, self.set_potential_V,
                                            self.time_of(k)), self.offset_s)

    @classmethod
    def loop(cls, interval_s: float, duration_s: float,
             parse: Callable[..., Any] = parse_sample, step: str = "any",
             set_potential_V: float | None = None) -> _Run:
        """A CP/CA/OCP loop, timed with the numbers as the instrument reads them in the script."""
        return cls("samples", as_sent(duration_s), as_sent(interval_s), parse=parse,
                   step=step, set_potential_V=set_potential_V)

    @classmethod
    def sweep(cls, f_start_Hz: float, f_end_Hz: float, n_points: int) -> _Run:
        times = eis_point_times(as_sent(f_start_Hz), as_sent(f_end_Hz), n_points)
        return cls("eis", times[-1], times=times, parse=_eis_point, step="eis")

    def due(self, until_s: float) -> int:
        if self.times is not None:
            return bisect.bisect_right(self.times, until_s)
        return packages_due(self.interval_s, self.end_s, until_s)

    def time_of(self, k: int) -> float:
        """Nominal time of the k-th package (1-based)."""
        if self.times is not None:
            return self.times[min(k, len(self.times)) - 1]
        return min(k * self.interval_s, self.end_s)

    def expected(self) -> int:
        """How many packages the script sends when it runs to its end."""
        if self.times is not None:
            return len(self.times)
        return packages_due(self.interval_s, self.end_s, self.end_s)


@dataclass
class _Chunks:
    """A step longer than the host watchdog, as the scripts it runs as: each at most the
    watchdog of instrument time, ending with the cell off; the next one is sent when the
    previous one has ended (and only then: a host that stops reading leaves the cell off)."""

    total_s: float                                  # the step's duration, as the scripts run it
    make: Callable[[float], tuple[bytes, _Run]]     # the chunk starting at step time done_s
    broke: Callable[[Any], bool]                    # a sample made the script break its loop
    done_s: float = 0.0                             # step time of the chunks that ended
    origin: float = 0.0                             # now() when the first chunk was accepted
    anchor_end: float = 0.0                         # when the running chunk ends (read frame)

    def follows(self, run: _Run) -> bool:
        """Whether another chunk follows ``run`` (when it runs to its end)."""
        return self.done_s + run.end_s < self.total_s - 1e-6


def _loop_chunks(interval_s: float, duration_s: float, watchdog_s: float,
                 script: Callable[[float], list[str]], run: Callable[[float], _Run],
                 broke: Callable[[Any], bool]) -> _Chunks:
    """A CP/CA step in chunks of a whole number of intervals (so the packages fall where one
    long script puts them), the full chunk's script formatted once."""
    per_chunk = math.floor(watchdog_s / as_sent(interval_s) + 1e-9)
    if per_chunk < 1:
        raise ValueError(f"interval {interval_s:g} s is longer than the host watchdog "
                         f"{watchdog_s:g} s: a chunk must hold at least one sample (record "
                         "more often, or lengthen [interlocks] host_watchdog)")
    full_s = as_sent(per_chunk * as_sent(interval_s))
    total_s = as_sent(duration_s)
    full = script_bytes(script(full_s))

    def make(done_s: float) -> tuple[bytes, _Run]:
        left = total_s - done_s
        if left > full_s + 1e-6:
            return full, run(full_s)
        return script_bytes(script(as_sent(left))), run(as_sent(left))
    return _Chunks(total_s, make, broke)


def _sweep_chunks(freqs: list[float], watchdog_s: float,
                  script: Callable[[float, float, int], list[str]]) -> _Chunks:
    """An EIS sweep in chunks of consecutive points (a log-spaced part of a log-spaced sweep
    is one again), each at most the watchdog long; a point longer than it is refused."""
    point_s = [max(1.0, 3.0 / f) for f in freqs]
    slowest = max(range(len(freqs)), key=point_s.__getitem__)
    if point_s[slowest] > watchdog_s + 1e-9:
        raise ValueError(f"the EIS point at {freqs[slowest]:g} Hz takes {point_s[slowest]:g} s, "
                         f"longer than the host watchdog {watchdog_s:g} s: start the sweep "
                         "higher, or lengthen [interlocks] host_watchdog")
    groups, start, spent = [], 0, 0.0
    for k, t in enumerate(point_s):
        if spent + t > watchdog_s + 1e-9:
            groups.append((start, k - 1))
            start, spent = k, 0.0
        spent += t
    groups.append((start, len(freqs) - 1))
    plans = []
    for a, b in groups:
        f_a, f_b = _six_digits(freqs[a]), _six_digits(freqs[b])
        plans.append((script_bytes(script(f_a, f_b, b - a + 1)), (f_a, f_b, b - a + 1)))
    queue = iter(plans)

    def make(done_s: float) -> tuple[bytes, _Run]:
        data, (f_a, f_b, n) = next(queue)
        return data, _Run.sweep(f_a, f_b, n)
    total = sum(_Run.sweep(*p[1]).end_s for p in plans)
    return _Chunks(total, make, lambda _: False)


def _six_digits(f_Hz: float) -> float:
    """A frequency inside a sweep, to 6 significant digits (a short number for the script)."""
    return float(f"{f_Hz:.6g}")


# ---- the driver ---------------------------------------------------------------------------------
class EmStat4:
    """One EmStat4 channel (drivers.base.Potentiostat). Every value in and out is SI."""

    streaming = True  # packages arrive on the instrument's schedule (drivers.base.Potentiostat)

    def __init__(self, port: str, baudrate: int = BAUDRATE, timeout_s: float = 2.0,
                 retries: int = 2,
                 ranges: Ranges = EMSTAT4_LR_RANGES, *,
                 host_watchdog_s: float | None = DEFAULT_HOST_WATCHDOG_S,
                 now: Callable[[], float] | None = None) -> None:
        _check_watchdog(host_watchdog_s)
        try:
            ser = serial.Serial(port, baudrate=baudrate, timeout=timeout_s,
                                write_timeout=timeout_s)
        except PORT_ERRORS as exc:
            raise InstrumentGone(f"cannot open {port}: {exc}") from exc
        self._attach(ser, timeout_s, retries, ranges, host_watchdog_s, now)

    @classmethod
    def from_serial(cls, ser: Any, *, timeout_s: float = 2.0, retries: int = 2,
                    ranges: Ranges = EMSTAT4_LR_RANGES,
                    host_watchdog_s: float | None = DEFAULT_HOST_WATCHDOG_S,
                    now: Callable[[], float] | None = None) -> EmStat4:
        """Wrap an already-open pyserial port (``serial.serial_for_url(...)``)."""
        _check_watchdog(host_watchdog_s)
        self = cls.__new__(cls)
        ser.timeout = timeout_s
        ser.write_timeout = timeout_s
        self._attach(ser, timeout_s, retries, ranges, host_watchdog_s, now)
        return self

    def _attach(self, ser: Any, timeout_s: float, retries: int, ranges: Ranges,
                host_watchdog_s: float | None = DEFAULT_HOST_WATCHDOG_S,
                now: Callable[[], float] | None = None) -> None:
        self._ser = ser
        self.timeout_s = timeout_s
        self.retries = retries
        self.ranges = within_watchdog(ranges, host_watchdog_s)
        # without word from the host an output-on script ends (cell off) within this long: a
        # longer step runs as chunks of at most this, the next sent when one ends. None: one
        # script per step (only for an instrument that cannot outlive its host, such as
        # rig.sim's in-process simulators)
        self.host_watchdog_s = host_watchdog_s
        self._chunk_s = math.inf if host_watchdog_s is None else host_watchdog_s
        # the caller's clock, to time when each chunk started on the read frame; without it
        # a chunk counts as started at the read that saw the previous one end (exact when the
        # reads make time, as on a virtual clock; a round trip late per chunk on the wall)
        self._now = now
        self._until = 0.0             # until_s of the read in progress
        self.chunks_started = 0       # chunk boundaries crossed (the second chunk on of a step)
        self._lines: list[str] = []   # complete lines not yet consumed, from self._next on
        self._next = 0
        self._tail = ""               # a partial line
        self._run: _Run | None = None
        # packages that could not be parsed: skipped (the stream stays in step), kept here
        # with the reason so the caller can log each one; the caller empties the list
        self.rejected: list[str] = []
        self.model: str | None = None  # "EmStat4 LR" or "EmStat4 HR", once identified
        self.resyncs = 0               # how often a lost or garbled reply was recovered from
        # replies that came after the driver gave up on them, recognised and dropped (each
        # one's fault, the timeout, is already counted in resyncs)
        self.late_replies = 0
        self._silent_s = 0.0           # how long the port has sent nothing (silent reads)
        self._discard_input()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def port_silent(self) -> bool:
        """Whether the port has sent nothing for DEAD_PORT_S (in reads that timed out): it is
        taken for dead, and what follows is not retried."""
        return self._silent_s >= DEAD_PORT_S - 1e-9

    def __repr__(self) -> str:
        return f"EmStat4({getattr(self._ser, 'port', self._ser)!r})"

    # ---- queries ---------------------------------------------------------------------------
    def identify(self) -> str:
        """``t``: the firmware text, ``'es4_lr#<build> R<version>'``; refuses other devices."""
        def ask() -> str:
            self._send(b"t\n")
            first = self._reply_line(to="t")
            code = error_code(first)
            if code is not None:
                raise DeviceError(code, first)
            if not first.startswith("t"):
                raise InstrumentProtocolError(f"garbled version reply: {first!r}")
            return parse_version(first, self._reply_line(to="t"))
        firmware = self._query(ask)
        self.model = model_of(firmware)
        return firmware

    def serial_number(self) -> str:
        """``i``: the instrument's serial number."""
        def ask() -> str:
            self._send(b"i\n")
            line = self._reply_line(to="i")
            code = error_code(line)
            if code is not None:
                raise DeviceError(code, line)
            return parse_serial_number(line)
        return self._query(ask)

    # ---- steps -------------------------------------------------------------------------------
    def start_current(self, current_A: float, interval_s: float, duration_s: float,
                      e_min_V: float, e_max_V: float) -> None:
        """Galvanostatic step (CP); the instrument itself stops outside [e_min_V, e_max_V]."""
        self._check_current(current_A)
        self._check_potential(e_min_V, e_max_V)
        if not e_min_V < e_max_V:
            raise ValueError(f"safety window [{e_min_V}, {e_max_V}] V is empty")
        _check_timing(interval_s, duration_s)
        max_v = self.ranges.max_potential_V
        self._start_chunked(
            interval_s, duration_s,
            lambda d: build_cp_script(current_A, interval_s, d, e_min_V, e_max_V, max_v),
            lambda d: _Run.loop(interval_s, d, parse_cp_sample, "cp"),
            lambda s: not e_min_V <= s.potential_V <= e_max_V)

    def start_potential(self, potential_V: float, interval_s: float, duration_s: float,
                        i_max_A: float) -> None:
        """Potentiostatic step (CA); the instrument itself stops beyond +-i_max_A."""
        self._check_potential(potential_V)
        self._check_current(i_max_A)
        if not i_max_A > 0:
            raise ValueError(f"i_max_A must be positive, not {i_max_A}")
        _check_timing(interval_s, duration_s)
        parse = ca_sample_parser(as_sent(potential_V))
        self._start_chunked(
            interval_s, duration_s,
            lambda d: build_ca_script(potential_V, interval_s, d, i_max_A),
            lambda d: _Run.loop(interval_s, d, parse, "ca", as_sent(potential_V)),
            lambda s: not abs(s.current_A) <= i_max_A)

    def start_open_circuit(self, interval_s: float, duration_s: float) -> None:
        """Rest at open circuit (OCP), recording the potential."""
        _check_timing(interval_s, duration_s)
        self._start(build_ocp_script(interval_s, duration_s, self.ranges.max_potential_V),
                    _Run.loop(interval_s, duration_s, parse_ocp_sample, "ocp"))

    def start_eis(self, f_start_Hz: float, f_end_Hz: float, n_points: int, amplitude_V: float,
                  dc_V: float) -> None:
        """Potentiostatic EIS around dc_V, n_points log-spaced from f_start_Hz to f_end_Hz."""
        if not (f_start_Hz > 0 and f_end_Hz > 0 and math.isfinite(f_start_Hz * f_end_Hz)):
            raise ValueError(f"frequencies must be positive: {f_start_Hz}, {f_end_Hz} Hz")
        if int(n_points) != n_points or n_points < 1:
            raise ValueError(f"n_points must be a positive integer, not {n_points}")
        if not 0 < amplitude_V <= self.ranges.max_potential_V:
            raise ValueError(f"EIS amplitude {amplitude_V} V is not in (0, "
                             f"{self.ranges.max_potential_V}] V")
        self._check_potential(dc_V)
        max_v, max_i = self.ranges.max_potential_V, self.ranges.max_current_A

        def script(f_a: float, f_b: float, n: int) -> list[str]:
            return build_eis_script(f_a, f_b, n, amplitude_V, dc_V, max_v, max_i)
        whole = _Run.sweep(f_start_Hz, f_end_Hz, int(n_points))
        if whole.end_s <= self._chunk_s + 1e-9:
            self._start(script(f_start_Hz, f_end_Hz, int(n_points)), whole)
            return
        freqs = eis_frequencies(as_sent(f_start_Hz), as_sent(f_end_Hz), int(n_points))
        chunks = _sweep_chunks(freqs, self._chunk_s, script)
        self._start(*chunks.make(0.0), chunks)

    def eis_sweep_duration_s(self, f_start_Hz: float, f_end_Hz: float, n_points: int) -> float:
        """How long the sweep takes: each point max(1 s, 3 periods), as the script runs it
        (in chunks when longer than the host watchdog: their gaps are not counted)."""
        whole = _Run.sweep(f_start_Hz, f_end_Hz, int(n_points))
        if whole.end_s <= self._chunk_s + 1e-9:
            return whole.end_s
        freqs = eis_frequencies(as_sent(f_start_Hz), as_sent(f_end_Hz), int(n_points))
        return _sweep_chunks(freqs, self._chunk_s, lambda a, b, n: []).total_s

    # ---- streaming ---------------------------------------------------------------------------
    def read_samples(self, until_s: float, *, greedy: bool = False
                     ) -> tuple[list[Sample], bool]:
        """Every package with t <= until_s of the running CP/CA/OCP step, waiting for those due;
        and whether the script has ended. ``greedy`` also takes later packages already here."""
        return self._stream(until_s, "samples", greedy)

    def read_eis(self, until_s: float, *, greedy: bool = False
                 ) -> tuple[list[tuple[float, float, complex]], bool]:
        """The EIS points due by until_s as (t_s, f_Hz, Z' + jZ''), and whether the sweep ended."""
        return self._stream(until_s, "eis", greedy)

    def eis(self, frequencies_Hz: Sequence[float], amplitude_V: float,
            dc_V: float | None = None) -> list[tuple[float, complex]]:
        """A whole sweep on the wall clock (notebooks): [(f_Hz, Z)]. The instrument sweeps
        len(frequencies_Hz) log-spaced points between the first and last frequency; dc_V None
        measures at the open-circuit potential."""
        freqs = list(frequencies_Hz)
        if not freqs:
            raise ValueError("no frequencies")
        if dc_V is None:
            dc_V = self.open_circuit_potential()
        self.start_eis(freqs[0], freqs[-1], len(freqs), amplitude_V, dc_V)
        return [(f, z) for _, f, z in self._read_to_end(self.read_eis)]

    def open_circuit_potential(self) -> float:
        """A short OCP measurement on the wall clock; its last potential (V)."""
        self.start_open_circuit(*OCP_PROBE)
        samples = self._read_to_end(self.read_samples)
        if not samples:
            raise InstrumentProtocolError("the OCP measurement ended without a sample")
        return samples[-1].potential_V

    # ---- stopping ----------------------------------------------------------------------------
    def abort(self) -> None:
        """``Z``: stop the running script ('Z', then its '*' and empty line), or nothing was
        running ('Z!0006'); both are fine. A garbled reply sends ``Z`` again (at most
        ``retries`` times); a second silence raises InstrumentTimeout (the port is likely dead)."""
        timeouts = 0
        for attempt in range(self.retries + 1):
            try:
                self._abort_once()
                return
            except InstrumentTimeout as exc:
                timeouts += 1
                if timeouts > 1 or attempt == self.retries or self.port_silent:
                    self._run = None
                    raise
                log.info("%r: abort again after %s", self, exc)
            except DeviceError:
                self._run = None
                raise
            except InstrumentProtocolError as exc:
                if attempt == self.retries:
                    self._run = None
                    raise
                log.info("%r: abort again after %s", self, exc)
            self.resyncs += 1

    def _abort_once(self) -> None:
        self._send(b"Z\n")
        deadline = time.monotonic() + ABORT_DRAIN_TIMEOUTS * self.timeout_s
        line = self._reply_line()
        while not line.startswith("Z"):   # what the aborted script sent before: dropped
            self._dropped(line)
            line = self._reply_line(deadline)
        if line == "Z":
            # the loop's '*', the script's empty line (and any late reply between: dropped)
            while (line := self._reply_line(deadline)) != "":
                self._dropped(line)
            self._run = None
            return
        code = error_code(line)
        if code != ERROR_NO_SCRIPT_RUNNING:
            if code is not None:
                self._run = None
                raise DeviceError(code, line)
            raise InstrumentProtocolError(f"garbled abort reply: {line!r}")
        self._run = None

    def output_off(self) -> None:
        """The safety path: abort what runs, then the output-off script. Retries, works after
        errors, raises only if the instrument never confirmed (or the port is gone)."""
        last: InstrumentError | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(_backoff(attempt))
            try:
                if self._run is not None or attempt:
                    try:
                        self.abort()
                    except (InstrumentTimeout, InstrumentProtocolError) as exc:
                        log.warning("%r: abort before output off failed: %s", self, exc)
                        self._run = None
                        if not self.port_silent:
                            self.resyncs += 1   # gone past: the output-off script follows
                self._discard_input()
                self._send(script_bytes(OUTPUT_OFF_SCRIPT))
                self._expect_accepted()
                line = self._reply_line()
                if line != "":
                    parse_line(line)  # an error code raises DeviceError
                    raise InstrumentProtocolError(f"output off: expected the end, got {line!r}")
                return
            except InstrumentGone:
                raise
            except InstrumentError as exc:
                last = exc
                if attempt == self.retries or self.port_silent:
                    break
                self.resyncs += 1   # a lost or garbled reply, tried again: counted
        assert last is not None
        raise last

    def close(self) -> None:
        """Output off (best effort), then close the port. Safe to call twice."""
        if not self._ser.is_open:
            return
        try:
            self.output_off()
        except InstrumentError as exc:
            log.warning("%r: output off at close failed: %s", self, exc)
        finally:
            try:
                self._ser.close()
            except PORT_ERRORS:
                log.debug("%r: closing the port failed", self)

    # ---- internals: checks ---------------------------------------------------------------------
    def _check_current(self, current_A: float) -> None:
        if not abs(current_A) <= self.ranges.max_current_A:
            raise ValueError(f"current {current_A} A exceeds the EmStat4's "
                             f"{self.ranges.max_current_A} A range")

    def _check_potential(self, *potentials_V: float) -> None:
        for e in potentials_V:
            if not abs(e) <= self.ranges.max_potential_V:
                raise ValueError(f"potential {e} V exceeds the EmStat4's "
                                 f"+-{self.ranges.max_potential_V} V range")

    # ---- internals: scripts ------------------------------------------------------------------
    def _start_chunked(self, interval_s: float, duration_s: float,
                       script: Callable[[float], list[str]], run: Callable[[float], _Run],
                       broke: Callable[[Any], bool]) -> None:
        """An output-on step: one script if it fits the host watchdog, else the first of its
        chunks (each a whole number of intervals, at most host_watchdog_s long)."""
        if as_sent(duration_s) <= self._chunk_s + 1e-9:
            self._start(script(duration_s), run(duration_s))
            return
        chunks = _loop_chunks(interval_s, duration_s, self._chunk_s, script, run, broke)
        self._start(*chunks.make(0.0), chunks)

    def _next_chunk(self, run: _Run) -> _Run:
        """The running chunk ended: send the next at once (the cell is off until it starts),
        through ``_start`` (a lost or garbled reply is resynced as at any start). Its 'e' is
        waited for: it says the instrument started the chunk now, on the caller's clock."""
        chunks = run.chunks
        assert chunks is not None
        chunks.done_s += run.end_s
        data, nxt = chunks.make(chunks.done_s)
        nxt.offset_s = chunks.done_s
        self._run = None   # the last chunk ended: nothing to abort before the next
        # and nothing unread: its empty line was the last it sent
        self._start(data, nxt, chunks, clean=not self._tail and self._next >= len(self._lines))
        self.chunks_started += 1
        return nxt

    @property
    def chunk_end_s(self) -> float:
        """When the running chunk of a longer step ends, on the read frame (seconds since the
        step started, like read_samples' until_s); math.inf when no chunk follows it. Read at
        that time (or sooner) and the next chunk starts without a gap."""
        run = self._run
        if run is None or run.chunks is None:
            return math.inf
        return run.anchor_s + run.end_s if run.chunks.follows(run) else math.inf

    def _start(self, lines: list[str] | bytes, run: _Run, chunks: _Chunks | None = None,
               clean: bool = False) -> None:
        """Send a script and see it accepted. A lost or garbled reply leaves it unknown whether
        the script runs: abort (which drains whatever ran) and send it again, at most
        ``retries`` times and after at most MAX_SILENCES silences (then the typed error: a
        port that stays silent is gone, and must not hold the channel for long)."""
        data = lines if isinstance(lines, bytes) else script_bytes(lines)
        run.chunks = chunks
        timeouts = 0
        for attempt in range(self.retries + 1):
            try:
                if self._run is not None or attempt:
                    self.abort()
                if attempt or not clean:
                    self._discard_input()
                self._run = run  # from here a failure leaves the script "maybe running"
                run.received = 0
                self._send(data)
                self._expect_accepted()
                if chunks is not None:
                    self._anchor(run, chunks)
                return
            except DeviceError as exc:
                self._run = None   # the script was refused: nothing runs
                if exc.code != ERROR_NO_SCRIPT_RUNNING or attempt == self.retries:
                    raise          # a script error does not fix itself ('e!0006': one ran)
            except InstrumentTimeout:
                timeouts += 1
                if timeouts > MAX_SILENCES or attempt == self.retries or self.port_silent:
                    raise
            except InstrumentGone:
                raise
            except InstrumentProtocolError:
                if attempt == self.retries:
                    raise
            self.resyncs += 1
            log.info("%r: script reply lost or garbled; aborting and sending it again", self)
            time.sleep(_backoff(attempt + 1))

    def _anchor(self, run: _Run, chunks: _Chunks) -> None:
        """When a chunk just accepted started, on the caller's read frame."""
        first = run.offset_s == 0.0
        if self._now is not None:
            if first:
                chunks.origin = self._now()
            run.anchor_s = self._now() - chunks.origin
        elif not first:
            previous = chunks.anchor_end
            run.anchor_s = max(previous, self._until) if math.isfinite(self._until) else previous
        chunks.anchor_end = run.anchor_s + run.end_s

    def _expect_accepted(self) -> None:
        line = self._reply_line(to="e")
        if parse_line(line).kind != "accepted":
            raise InstrumentProtocolError(f"script not accepted: {line!r}")

    def _stream(self, until_s: float, kind: str, greedy: bool = False
                ) -> tuple[list[Any], bool]:
        """Packages due by until_s (waiting for them), plus those already here when greedy.
        A chunk that ends before its step does is followed by the next one at once."""
        run = self._run
        if run is None:
            return [], True
        if run.kind != kind:
            raise RuntimeError(f"the running script sends {run.kind} packages, not {kind}")
        if math.isnan(until_s):
            raise ValueError("until_s is NaN")
        self._until = until_s
        out: list[Any] = []
        while True:
            # wait for these (silence -> timeout), and for the script's end
            since = until_s - run.anchor_s + TIME_TOLERANCE_S
            due = run.due(since)
            end_due = since >= run.end_s
            if self._stream_script(run, due, end_due, greedy, out):
                return out, False
            if self._run is not None:   # the chunk ended; the next one now runs
                run = self._run
                continue
            return out, True

    def _stream_script(self, run: _Run, due: int, end_due: bool, greedy: bool,
                       out: list[Any]) -> bool:
        """Read the running script's packages into out: True when it is still running (what
        was due is in), False when it ended (then self._run is the next chunk, or None)."""
        while True:
            if run.received < due:
                self._take_packages(due - run.received, out, run)
            if self._next >= len(self._lines) and not self._read_available():
                if run.received < due or end_due:
                    self._read_blocking()
                    continue
                return True
            line = self._lines[self._next]
            if line[:1] == "P":
                if run.received >= due and not (end_due or greedy):
                    return True   # a later call's package
                self._take_packages(1, out, run)
                continue
            self._next += 1
            try:
                event = parse_line(line)
            except DeviceError:
                if answers(line) is None:
                    raise   # the script's own runtime error
                self.late_replies += 1   # an error answering a host command: a late reply
                log.info("%r: dropped a late reply %r in a script's output", self, line)
                continue
            except InstrumentProtocolError as exc:   # a garbled line: a package or a marker
                if len(line) > GARBLED_PACKAGE_MIN:
                    run.received += 1
                self.rejected.append(f"{exc}")
                continue
            if event.kind == "script_end":
                self._run = None
                chunks = run.chunks
                if (chunks is not None and chunks.follows(run)
                        and run.received >= run.expected()
                        and not (run.last is not None and chunks.broke(run.last))):
                    self._next_chunk(run)   # ran to its end, and the step goes on
                return False

    def _take_packages(self, n: int, out: list[Any], run: _Run) -> None:
        """Parse up to n buffered packages into out (the hot loop: keep it lean)."""
        lines, i, parse, offset = self._lines, self._next, run.parse, run.offset_s
        stop = min(len(lines), i + n)
        start = len(out)
        j = i
        while j < stop and lines[j][:1] == "P":
            try:
                out.append(parse(lines[j], offset))
                run.missing = 0
            except MissingVariable as exc:  # cut short on the wire, or what the step lacks
                if exc.needs == "eb":
                    try:
                        out.append(run.untimed(lines[j], run.received + j - i + 1))
                        run.missing = 0
                        j += 1
                        continue
                    except MissingVariable as again:
                        exc = again
                run.missing += 1
                if run.missing >= MISSING_IN_A_ROW:
                    self._next = j + 1
                    raise
                self.rejected.append(f"{exc}")
            except InstrumentProtocolError as exc:  # a garbled package: skip it, keep the rest
                self.rejected.append(f"{exc}")
            j += 1
        self._next = j
        run.received += j - i
        if len(out) > start:
            run.last = out[-1]

    def _read_to_end(self, read: Callable[..., tuple[list[T], bool]]) -> list[T]:
        """Follow a running script on the wall clock until it ends."""
        t0 = time.monotonic()
        out: list[T] = []
        while True:
            got, ended = read(time.monotonic() - t0, greedy=True)
            out += got
            if ended or self._run is None:
                return out
            due = self._run.anchor_s + self._run.time_of(self._run.received + 1)
            time.sleep(min(max(due - (time.monotonic() - t0), 0.001), 1.0))

    # ---- internals: queries --------------------------------------------------------------------
    def _query(self, ask: Callable[[], T]) -> T:
        """A simple idempotent query, retried on timeouts and garbled or error replies."""
        if self._run is not None:
            raise RuntimeError("a script is running: read it to its end or abort() first")
        for attempt in range(self.retries + 1):
            self._discard_input()
            try:
                return ask()
            except NotAnEmStat4:
                raise
            except (InstrumentTimeout, InstrumentProtocolError) as exc:
                if attempt == self.retries:
                    raise
                self.resyncs += 1   # asked again: a recovered fault, counted
                log.info("%r: retrying after %s", self, exc)
                time.sleep(_backoff(attempt + 1))
        raise AssertionError("unreachable")

    def _reply_line(self, deadline: float = math.inf, to: str | None = None) -> str:
        """The next line, waiting for it (silence for timeout_s -> InstrumentTimeout; so does
        a device that keeps talking past the monotonic deadline without saying it). With
        ``to`` (the host command awaited, as ``answers`` names it), a line that answers
        another command is a late reply: dropped (``late_replies``), never taken for this one."""
        while True:
            if time.monotonic() > deadline:
                raise InstrumentTimeout(
                    f"{self!r}: no reply in {self.timeout_s} s of other output")
            while self._next >= len(self._lines):
                self._read_blocking()
            line = self._lines[self._next]
            self._next += 1
            if to is None:
                return line
            of = answers(line)
            if of is None or of == to:
                return line
            self.late_replies += 1
            log.info("%r: dropped a late reply %r (waiting for the reply to %r)", self, line, to)

    # ---- internals: bytes ----------------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        try:
            if not self._ser.is_open:
                raise InstrumentGone(f"{self!r}: the port is closed")
            self._ser.write(data)
        except serial.SerialTimeoutException as exc:
            raise InstrumentTimeout(f"{self!r}: write timed out") from exc
        except PORT_ERRORS as exc:
            raise InstrumentGone(f"{self!r}: {exc}") from exc

    def _read_available(self) -> bool:
        """Take what has arrived without waiting; True if it completed a line."""
        try:
            if not self._ser.is_open:
                raise InstrumentGone(f"{self!r}: the port is closed")
            n = self._ser.in_waiting
            if not n:
                return False
            self._silent_s = 0.0
            return self._add(self._ser.read(n))
        except PORT_ERRORS as exc:
            raise InstrumentGone(f"{self!r}: {exc}") from exc

    def _read_blocking(self) -> None:
        """Wait for bytes (at most timeout_s of silence), then take all that has arrived."""
        ser = self._ser
        try:
            if not ser.is_open:
                raise InstrumentGone(f"{self!r}: the port is closed")
            data = ser.read(ser.in_waiting or 1)
            if not data:
                self._silent_s += self.timeout_s
                raise InstrumentTimeout(f"{self!r}: no answer within {self.timeout_s} s")
            self._silent_s = 0.0
            n = ser.in_waiting
            if n:
                data += ser.read(n)
        except PORT_ERRORS as exc:
            raise InstrumentGone(f"{self!r}: {exc}") from exc
        self._add(data)

    def _add(self, data: bytes) -> bool:
        text = self._tail + data.decode("latin-1")
        if "\r" in text:
            text = text.replace("\r", "")
        parts = text.split("\n")
        self._tail = parts.pop()
        if not parts:
            return False
        if self._next >= len(self._lines):
            self._lines = parts
        else:
            self._lines = self._lines[self._next:] + parts
        self._next = 0
        return True

    def _dropped(self, line: str) -> None:
        """A line dropped unread (an aborted script's output, a stale reply): one that is
        garbled was a fault on the wire all the same, so it is reported in ``rejected``."""
        if line[:1] == "P":
            try:
                parse_package_variables(line)
            except InstrumentProtocolError as exc:
                self.rejected.append(f"dropped unread: {exc}")
        elif answers(line) is None:
            self.rejected.append(f"dropped unread: unexpected line from the EmStat4: {line!r}")

    def _discard_input(self) -> None:
        """Forget whatever arrived unasked (stale replies before a query or a script)."""
        for line in self._lines[self._next:]:
            self._dropped(line)
        self._lines, self._next, self._tail = [], 0, ""
        try:
            if self._ser.is_open:
                self._ser.reset_input_buffer()
        except PORT_ERRORS as exc:
            raise InstrumentGone(f"{self!r}: {exc}") from exc


def _check_timing(interval_s: float, duration_s: float) -> None:
    if not (interval_s > 0 and duration_s > 0 and math.isfinite(duration_s)):
        raise ValueError(f"interval {interval_s} s and duration {duration_s} s must be positive")


def within_watchdog(ranges: Ranges, host_watchdog_s: float | None) -> Ranges:
    """The ranges of an EmStat4 whose output-on steps run in chunks of at most
    host_watchdog_s: each chunk holds a sample, an EIS point (3 periods) fits in one."""
    if host_watchdog_s is None:
        return ranges
    return dataclasses.replace(ranges, max_interval_s=host_watchdog_s,
                               min_frequency_Hz=3.0 / host_watchdog_s)


def _check_watchdog(host_watchdog_s: float | None) -> None:
    if host_watchdog_s is not None and not (host_watchdog_s > 0 and math.isfinite(host_watchdog_s)):
        raise ValueError(f"host_watchdog_s must be a positive number of seconds (or None), "
                         f"not {host_watchdog_s!r}")


def _backoff(attempt: int) -> float:
    return min(BACKOFF_S * 2 ** (attempt - 1), MAX_BACKOFF_S)
