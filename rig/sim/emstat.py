"""A simulated PalmSens EmStat4 LR that serves MethodSCRIPT on a pseudo-terminal.

It speaks exactly the dialect of ``docs/methodscript.md`` (the same page the production driver
``drivers/emstat.py`` follows) and measures a cell model (``rig.sim.cell.NaCell``)::

    with SimulatedEmStat4(NaCell(), clock) as sim:
        ser = serial.Serial(sim.port, timeout=1)
        ser.write(b"i\\n")      # -> b"iES4SIM0001\\n"

Design
------
Transport. ``os.openpty()``; the slave is put in raw mode and its name is ``.port``, which a
driver opens with pyserial. The simulator owns the master fd and also keeps the slave fd open, so
the pty survives a driver closing and reopening the port.

Threads. A *reader* thread reads the master fd (``select`` with a wake-up pipe, so ``close()``
stops it at once), splits lines, answers host commands and collects ``e`` scripts. A *writer*
thread drains a queue of byte strings into the (non-blocking) master fd. Nothing else touches the
fd, so the clock's jump, which runs in the asyncio event-loop thread, never blocks on a full pty
buffer: it only puts one item on a queue.

Time: the pump. Measurements are produced by ``pump(now)``, never by sleeping. A script accepted at
clock time ``t0`` owes package k at ``t0 + t_k``; ``pump(now)`` produces every package with
``t0 + t_k <= now`` (within ``EPS_S``), advancing the cell interval by interval, evaluating the
script's ``if ... breakloop`` on the new values, and ending the loop (``*``, ``on_finished:``, the
empty line) when a condition holds or the duration is reached. All output of one pump call is one
queue item. On a ``VirtualClock`` the clock calls ``pump`` on every jump, before any sleeper wakes
(``start()`` registers it with ``clock.add_pump``). On a ``RealClock`` (also accelerated, for
``rig sim serve``) a pump thread calls ``pump(clock.now())`` when the next package is due
(and at least every ``PUMP_PERIOD_S`` of wall time).
Between scripts the cell keeps living: at open circuit, or held at the last set current/potential
while the output is still on (a script that never switches the cell off keeps driving it).

One ``threading.Lock`` guards all instrument state (script, cell, output); replies and packages
are queued under it, so the order on the wire is the order of events.

Error codes (``!XXXX``; only 0006 is named by the protocol page, the others are this simulator's
choice; an error on a script means the script was not run, and nothing but the code is sent):

====  ===========================================================================
0001  unknown host command (a line that is not ``t``, ``i``, ``e`` or ``Z``)
0002  unknown script command (anything outside the subset of docs/methodscript.md)
0003  bad argument: wrong count, not an ``<int><SI prefix>`` number, out of range
0004  undeclared variable, or a variable used before anything gives it a value
0005  bad structure: block not closed, ``endif`` without ``if``, a command misplaced
0006  ``Z`` while no script runs (sent as ``Z!0006``)
0007  ``e`` while a script is still running
0008  wrong pgstat mode (``cell_on`` in mode 0, ``meas_loop_cp`` outside mode 6, ...)
0009  the cell model raised: the running script ends (``*``, on_finished, empty line) and the
      exception is logged; the pump never lets it reach the clock, which would stall
====  ===========================================================================

Limits (EmStat4 LR): |E| <= 3 V, |I| <= 30 mA, EIS 10 uHz..200 kHz and <= 1000 points; loop
intervals from 1 ms (arguments beyond these get 0003). A measured value beyond |E| or |I| is
clamped and its package carries the overload status (``,12`` metadata on every variable).
Our choices where the protocol page leaves the bytes open: ``t`` answers ``FIRMWARE_REPLY``; a loop
starts with ``M0002`` (OCP), ``M0003`` (CA), ``M0006`` (CP) or ``M0009`` (EIS).

Faults (``FaultProfile``, seeded): a host command may get no reply (it is dropped, as if lost on
the wire: the host times out), an output line may be garbled (one character replaced by ``?``), a
data package may be truncated (cut short, newline kept), and a host command may kill the port.
A pty cannot be unplugged and replugged, so a disconnect makes the port dead instead: input is
ignored and nothing is sent for ``dead_for_s`` of clock time (forever by default) while the
instrument itself keeps running its script, as one whose USB cable was pulled.
"""

from __future__ import annotations

import logging
import math
import operator
import os
import queue
import random
import re
import select
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, Self

from drivers.methodscript import STATUS_OVERLOAD, format_package, parse_si
from rig.clock import Clock
from rig.sim.pty import open_pty

ERR_UNKNOWN_COMMAND = 0x0001
ERR_UNKNOWN_SCRIPT_COMMAND = 0x0002
ERR_BAD_ARGUMENT = 0x0003
ERR_UNKNOWN_VARIABLE = 0x0004
ERR_BAD_STRUCTURE = 0x0005
ERR_NOT_RUNNING = 0x0006
ERR_BUSY = 0x0007
ERR_WRONG_MODE = 0x0008
ERR_INTERNAL = 0x0009

log = logging.getLogger(__name__)

FIRMWARE_REPLY = "tes4_lr#narig-sim\nR1.0*\n"  # reply to `t`: device prefix, build text, version
MAX_POTENTIAL_V = 3.0
MAX_CURRENT_A = 0.03
MAX_FREQUENCY_HZ = 200e3
MIN_FREQUENCY_HZ = 1e-5
MAX_EIS_POINTS = 1000
MAX_LINE_BYTES = 4096  # a longer host line without newline is dropped as one bad command
EPS_S = 1e-6  # a package is due when t0 + t_k <= now + EPS_S (clock float resolution ~0.2 us)
PUMP_PERIOD_S = 0.1  # longest wall-time sleep of the pump thread on a real clock
GALVANOSTATIC = 6
POTENTIOSTATIC_MODES = (2, 3, 4)
PGSTAT_MODES = (0, 2, 3, 4, 6)
LOOP_IDS = {"ocp": 0x0002, "ca": 0x0003, "cp": 0x0006, "eis": 0x0009}  # the 4 hex after `M`
_LOOP_TYPES = {"cp": ("ab", "ba"), "ca": ("ab", "ba"), "ocp": ("ab",), "eis": ("dc", "cc", "cd")}
_LOOP_NUMBERS = {"cp": 3, "ca": 3, "ocp": 2, "eis": 5}
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, "<": operator.lt, ">=": operator.ge, "<=": operator.le,
    "==": operator.eq, "!=": operator.ne,
}
_VAR_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class Cell(Protocol):
    """What the simulator needs of a cell model (rig.sim.cell.NaCell). Positive I is anodic."""

    def apply_current(self, current_A: float, dt_s: float) -> float: ...

    def open_circuit(self, dt_s: float) -> float: ...

    def apply_potential(self, potential_V: float, dt_s: float) -> float: ...

    def impedance(self, frequencies_Hz: Sequence[float]) -> Any: ...


@dataclass(frozen=True)
class FaultProfile:
    """Rates (0..1) of wire faults, drawn from random.Random(seed)."""

    no_reply: float = 0.0  # per host command: dropped, no reply
    garbled_line: float = 0.0  # per output line: one character replaced by '?'
    truncated_package: float = 0.0  # per data package: cut short
    disconnect: float = 0.0  # per host command: the port goes dead
    dead_for_s: float = math.inf  # how long a dead port stays dead (clock seconds)
    seed: int = 0


class ScriptError(Exception):
    """A script the simulator refuses; ``code`` is what goes on the wire as ``!XXXX``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"!{code:04X}: {message}")
        self.code = code


# ---------------------------------------------------------------- the compiled script

# Top-level operations (tuples) and loop-body operations.
OP_MODE, OP_CELL, OP_TIMER_START, OP_TIMER_GET, OP_SET_I, OP_SET_E = range(6)
B_PCK, B_TIMER, B_IF, B_BREAK = range(4)
TIMER_SLOT = 0  # register holding the timer value at the current package


@dataclass
class _Loop:
    kind: str  # cp | ca | ocp | eis
    slots: tuple[int, ...]  # the registers the loop writes, in the order of its variables
    setpoint: float  # I (cp), E (ca), E_dc (eis); 0 for ocp
    interval: float = 0.0
    duration: float = 0.0
    frequencies: tuple[float, ...] = ()
    eis_times: tuple[float, ...] = ()  # end of each EIS point, relative to the loop start
    body: list[tuple[Any, ...]] = field(default_factory=list)


@dataclass
class _Program:
    main: list[tuple[Any, ...] | _Loop]
    finished: list[tuple[Any, ...]]
    n_registers: int


class _Parser:
    """Lines of one script -> _Program, or ScriptError. Mode is tracked statically."""

    def __init__(self, mode: int) -> None:
        self.mode = mode
        self.slots: dict[str, int] = {}
        self.types: dict[int, str] = {}
        self.main: list[tuple[Any, ...] | _Loop] = []
        self.finished: list[tuple[Any, ...]] = []
        self.in_finished = False
        self.loop: _Loop | None = None
        self.blocks: list[list[tuple[Any, ...]]] = []  # open bodies: loop body, then ifs
        self.pck: list[tuple[str, int]] | None = None

    def parse(self, lines: Sequence[str]) -> _Program:
        for line in lines:
            words = line.split()
            if words:
                self.statement(words[0], words[1:])
        if self.loop is not None or self.pck is not None:
            raise ScriptError(ERR_BAD_STRUCTURE, "script ends inside a loop or package")
        return _Program(self.main, self.finished, len(self.slots) + 1)

    def statement(self, name: str, args: list[str]) -> None:
        if self.loop is not None:
            handler = _BODY_COMMANDS.get(name)
        else:
            handler = _TOP_COMMANDS.get(name)
        if handler is None:
            known = name in _BODY_COMMANDS or name in _TOP_COMMANDS
            code = ERR_BAD_STRUCTURE if known else ERR_UNKNOWN_SCRIPT_COMMAND
            raise ScriptError(code, f"{name!r} not allowed here" if known else f"unknown {name!r}")
        handler(self, args)

    # --- helpers
    def emit(self, op: tuple[Any, ...]) -> None:
        (self.finished if self.in_finished else self.main).append(op)

    def var(self, name: str, typed: bool = False) -> int:
        slot = self.slots.get(name)
        if slot is None:
            raise ScriptError(ERR_UNKNOWN_VARIABLE, f"variable {name!r} not declared")
        if typed and slot not in self.types:
            raise ScriptError(ERR_UNKNOWN_VARIABLE, f"variable {name!r} has no value")
        return slot

    # --- top-level commands
    def c_var(self, args: list[str]) -> None:
        _nargs(args, 1)
        if not _VAR_NAME.match(args[0]) or args[0] in self.slots:
            raise ScriptError(ERR_BAD_ARGUMENT, f"bad or repeated variable name {args[0]!r}")
        self.slots[args[0]] = len(self.slots) + 1

    def c_chan(self, args: list[str]) -> None:
        _nargs(args, 1)
        if _number(args[0]) != 0:
            raise ScriptError(ERR_BAD_ARGUMENT, "the EmStat4 has channel 0 only")

    def c_mode(self, args: list[str]) -> None:
        _nargs(args, 1)
        mode = _number(args[0])
        if mode not in PGSTAT_MODES:
            raise ScriptError(ERR_BAD_ARGUMENT, f"pgstat mode {args[0]}")
        self.mode = int(mode)
        self.emit((OP_MODE, self.mode))

    def c_bandwidth(self, args: list[str]) -> None:
        _nargs(args, 1)
        _bounded(args[0], 1e-3, 1e7)

    def c_range(self, args: list[str]) -> None:
        _nargs(args, 2)
        _range_value(args[0], args[1])

    def c_autoranging(self, args: list[str]) -> None:
        _nargs(args, 3)
        _range_value(args[0], args[1])
        _range_value(args[0], args[2])

    def c_set_e(self, args: list[str]) -> None:
        _nargs(args, 1)
        self.emit((OP_SET_E, _bounded(args[0], -MAX_POTENTIAL_V, MAX_POTENTIAL_V)))

    def c_set_i(self, args: list[str]) -> None:
        _nargs(args, 1)
        self.emit((OP_SET_I, _bounded(args[0], -MAX_CURRENT_A, MAX_CURRENT_A)))

    def c_cell_on(self, args: list[str]) -> None:
        _nargs(args, 0)
        if self.mode == 0:
            raise ScriptError(ERR_WRONG_MODE, "cell_on in pgstat mode 0")
        self.emit((OP_CELL, True))

    def c_cell_off(self, args: list[str]) -> None:
        _nargs(args, 0)
        self.emit((OP_CELL, False))

    def c_timer_start(self, args: list[str]) -> None:
        _nargs(args, 0)
        self.emit((OP_TIMER_START,))

    def c_timer_get(self, args: list[str]) -> None:
        _nargs(args, 1)
        slot = self.var(args[0])
        self.types[slot] = "eb"
        if self.loop is not None:
            self.blocks[-1].append((B_TIMER, slot))
        else:
            self.emit((OP_TIMER_GET, slot))

    def c_on_finished(self, args: list[str]) -> None:
        _nargs(args, 0)
        if self.in_finished:
            raise ScriptError(ERR_BAD_STRUCTURE, "second on_finished:")
        self.in_finished = True

    def c_loop(self, kind: str, args: list[str]) -> None:
        if self.in_finished:
            raise ScriptError(ERR_BAD_STRUCTURE, "measurement loop in on_finished:")
        n_vars = len(_LOOP_TYPES[kind])
        _nargs(args, n_vars + _LOOP_NUMBERS[kind])
        self.check_loop_mode(kind)
        slots = tuple(self.var(name) for name in args[:n_vars])
        loop = _LOOP_BUILDERS[kind](slots, args[n_vars:])
        for slot, vtype in zip(slots, _LOOP_TYPES[kind]):
            self.types[slot] = vtype
        self.main.append(loop)
        self.loop, self.blocks = loop, [loop.body]

    def check_loop_mode(self, kind: str) -> None:
        if kind == "cp" and self.mode != GALVANOSTATIC:
            raise ScriptError(ERR_WRONG_MODE, "meas_loop_cp needs set_pgstat_mode 6")
        if kind in ("ca", "eis") and self.mode not in POTENTIOSTATIC_MODES:
            raise ScriptError(ERR_WRONG_MODE, f"meas_loop_{kind} needs pgstat mode 2, 3 or 4")

    # --- loop-body commands
    def c_pck_start(self, args: list[str]) -> None:
        _nargs(args, 0)
        if self.pck is not None:
            raise ScriptError(ERR_BAD_STRUCTURE, "pck_start inside a package")
        self.pck = []

    def c_pck_add(self, args: list[str]) -> None:
        _nargs(args, 1)
        if self.pck is None:
            raise ScriptError(ERR_BAD_STRUCTURE, "pck_add outside pck_start/pck_end")
        slot = self.var(args[0], typed=True)
        self.pck.append((self.types[slot], slot))

    def c_pck_end(self, args: list[str]) -> None:
        _nargs(args, 0)
        if not self.pck:
            raise ScriptError(ERR_BAD_STRUCTURE, "pck_end without a started, non-empty package")
        self.blocks[-1].append((B_PCK, tuple(self.pck)))
        self.pck = None

    def c_if(self, args: list[str]) -> None:
        _nargs(args, 3)
        left = self.var(args[0], typed=True)
        compare = _COMPARE.get(args[1])
        if compare is None:
            raise ScriptError(ERR_BAD_ARGUMENT, f"comparison {args[1]!r}")
        if args[2] in self.slots:
            right_slot, constant = self.var(args[2], typed=True), 0.0
        else:
            right_slot, constant = -1, _number(args[2])
        body: list[tuple[Any, ...]] = []
        self.blocks[-1].append((B_IF, left, compare, constant, right_slot, body))
        self.blocks.append(body)

    def c_endif(self, args: list[str]) -> None:
        _nargs(args, 0)
        if len(self.blocks) < 2:
            raise ScriptError(ERR_BAD_STRUCTURE, "endif without if")
        self.blocks.pop()

    def c_breakloop(self, args: list[str]) -> None:
        _nargs(args, 0)
        self.blocks[-1].append((B_BREAK,))

    def c_endloop(self, args: list[str]) -> None:
        _nargs(args, 0)
        if len(self.blocks) != 1 or self.pck is not None:
            raise ScriptError(ERR_BAD_STRUCTURE, "endloop inside an if or a package")
        self.loop, self.blocks = None, []


def _nargs(args: list[str], n: int) -> None:
    if len(args) != n:
        raise ScriptError(ERR_BAD_ARGUMENT, f"expected {n} arguments, got {len(args)}")


def _number(text: str) -> float:
    try:
        return parse_si(text)
    except (ValueError, KeyError):
        raise ScriptError(ERR_BAD_ARGUMENT, f"not a number: {text!r}") from None


def _bounded(text: str, low: float, high: float) -> float:
    value = _number(text)
    if not low <= value <= high:
        raise ScriptError(ERR_BAD_ARGUMENT, f"{text} outside [{low:g}, {high:g}]")
    return value


def _range_value(vtype: str, text: str) -> float:
    limits = {"ba": MAX_CURRENT_A, "ab": MAX_POTENTIAL_V}
    if vtype not in limits:
        raise ScriptError(ERR_BAD_ARGUMENT, f"no range for variable type {vtype!r}")
    return _bounded(text, 0.0, limits[vtype])


def _timed_loop(kind: str, limit: float) -> Callable[[tuple[int, ...], list[str]], _Loop]:
    def build(slots: tuple[int, ...], numbers: list[str]) -> _Loop:
        setpoint = _bounded(numbers[0], -limit, limit) if limit else 0.0
        interval = _bounded(numbers[-2], 1e-3, 1e6)
        duration = _bounded(numbers[-1], 1e-3, 1e9)
        return _Loop(kind, slots, setpoint, interval, duration)

    return build


def _eis_loop(slots: tuple[int, ...], numbers: list[str]) -> _Loop:
    _bounded(numbers[0], 1e-6, MAX_POTENTIAL_V)  # E_ac
    f_start = _bounded(numbers[1], MIN_FREQUENCY_HZ, MAX_FREQUENCY_HZ)
    f_end = _bounded(numbers[2], MIN_FREQUENCY_HZ, MAX_FREQUENCY_HZ)
    n = _bounded(numbers[3], 1, MAX_EIS_POINTS)
    if n != int(n):
        raise ScriptError(ERR_BAD_ARGUMENT, f"n_points {numbers[3]!r}")
    e_dc = _bounded(numbers[4], -MAX_POTENTIAL_V, MAX_POTENTIAL_V)
    freqs = eis_frequencies(f_start, f_end, int(n))
    return _Loop("eis", slots, e_dc, frequencies=freqs, eis_times=eis_schedule(freqs))


def eis_frequencies(f_start: float, f_end: float, n_points: int) -> tuple[float, ...]:
    """Log-spaced, both ends included: ``eis_frequencies(100, 1, 3) -> (100.0, 10.0, 1.0)``."""
    if n_points == 1:
        return (f_start,)
    ratio = f_end / f_start
    return tuple(f_start * ratio ** (i / (n_points - 1)) for i in range(n_points))


def eis_schedule(freqs: Sequence[float]) -> tuple[float, ...]:
    """End time of each EIS point: each takes max(1 s, 3 periods)."""
    t, times = 0.0, []
    for f in freqs:
        t += max(1.0, 3.0 / f)
        times.append(t)
    return tuple(times)


_TOP_COMMANDS: dict[str, Callable[[_Parser, list[str]], None]] = {
    "var": _Parser.c_var, "set_pgstat_chan": _Parser.c_chan, "set_pgstat_mode": _Parser.c_mode,
    "set_max_bandwidth": _Parser.c_bandwidth, "set_range": _Parser.c_range,
    "set_autoranging": _Parser.c_autoranging, "set_e": _Parser.c_set_e, "set_i": _Parser.c_set_i,
    "cell_on": _Parser.c_cell_on, "cell_off": _Parser.c_cell_off,
    "timer_start": _Parser.c_timer_start, "timer_get": _Parser.c_timer_get,
    "on_finished:": _Parser.c_on_finished,
    **{f"meas_loop_{k}": (lambda p, a, k=k: p.c_loop(k, a)) for k in _LOOP_TYPES},
}
_BODY_COMMANDS: dict[str, Callable[[_Parser, list[str]], None]] = {
    "timer_get": _Parser.c_timer_get, "pck_start": _Parser.c_pck_start,
    "pck_add": _Parser.c_pck_add, "pck_end": _Parser.c_pck_end, "if": _Parser.c_if,
    "endif": _Parser.c_endif, "breakloop": _Parser.c_breakloop, "endloop": _Parser.c_endloop,
}
_LOOP_BUILDERS: dict[str, Callable[[tuple[int, ...], list[str]], _Loop]] = {
    "cp": _timed_loop("cp", MAX_CURRENT_A), "ca": _timed_loop("ca", MAX_POTENTIAL_V),
    "ocp": _timed_loop("ocp", 0.0), "eis": _eis_loop,
}


def parse_script(lines: Sequence[str], mode: int = 0) -> _Program:
    """Compile script lines (without the `e` and the final empty line); raises ScriptError."""
    return _Parser(mode).parse(lines)


# ---------------------------------------------------------------- running state


@dataclass
class _Run:
    """A measurement loop in progress."""

    spec: _Loop
    start: float  # absolute clock time the loop started
    timer_offset: float  # start - timer origin
    n_regular: int = 0  # packages at k * interval
    has_tail: bool = False  # one more at exactly `duration`
    k: int = 0  # packages produced
    prev_rel: float = 0.0  # loop-relative time of the last package

    def next_rel(self) -> float | None:
        k = self.k + 1
        spec = self.spec
        if spec.kind == "eis":
            return spec.eis_times[k - 1] if k <= len(spec.eis_times) else None
        if k <= self.n_regular:
            return k * spec.interval
        if k == self.n_regular + 1 and self.has_tail:
            return spec.duration
        return None


@dataclass
class _Script:
    program: _Program
    time: float  # clock time the script's execution has reached
    registers: list[float]
    pc: int = 0
    run: _Run | None = None


def _start_run(spec: _Loop, start: float, timer_origin: float) -> _Run:
    run = _Run(spec, start, start - timer_origin)
    if spec.kind != "eis":
        run.n_regular = math.floor(spec.duration / spec.interval + 1e-9)
        run.has_tail = spec.duration - run.n_regular * spec.interval > EPS_S
    return run


class _Faults:
    """Applies a FaultProfile; separate generators for host commands and output lines."""

    def __init__(self, profile: FaultProfile) -> None:
        self.profile = profile
        self.commands = random.Random(f"{profile.seed}:commands")
        self.output = random.Random(f"{profile.seed}:output")
        self.dead_until = -math.inf
        self.injected = {"truncated_package": 0, "garbled_line": 0, "no_reply": 0,
                         "disconnect": 0}  # what was done to the wire, for tests to check

    def command_fate(self, now: float) -> str:
        """'dead' (ignore, port dead), 'drop' (no reply) or 'ok'."""
        p = self.profile
        if now < self.dead_until:
            return "dead"
        if p.disconnect and self.commands.random() < p.disconnect:
            self.dead_until = now + p.dead_for_s
            self.injected["disconnect"] += 1
            return "dead"
        if p.no_reply and self.commands.random() < p.no_reply:
            self.injected["no_reply"] += 1
            return "drop"
        return "ok"

    def lines(self, lines: list[str]) -> list[str]:
        p, rng = self.profile, self.output
        out = []
        for line in lines:
            if p.truncated_package and line.startswith("P") and rng.random() < p.truncated_package:
                line = line[: rng.randrange(1, len(line))]
                self.injected["truncated_package"] += 1
            if p.garbled_line and line and rng.random() < p.garbled_line:
                i = rng.randrange(len(line))
                line = line[:i] + "?" + line[i + 1:]
                self.injected["garbled_line"] += 1
            out.append(line)
        return out


# ---------------------------------------------------------------- the instrument


class SimulatedEmStat4:
    """An EmStat4 LR on a pty, measuring ``cell`` on ``clock``. See the module docstring."""

    def __init__(
        self, cell: Cell, clock: Clock, serial_number: str = "ES4SIM0001",
        fault: FaultProfile | None = None,
    ) -> None:
        self.cell = cell
        self.clock = clock
        self.serial_number = serial_number
        self.fault = fault
        self._faults = _Faults(fault) if fault else None
        self._lock = threading.Lock()
        self._out: queue.Queue[bytes | None] = queue.Queue()
        self._stop = threading.Event()
        self._pump_wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = self._closed = False
        self._master, self._slave, self.port = open_pty()
        self._wake_r, self._wake_w = os.pipe()
        # instrument state (under self._lock)
        self.output_on = False
        self.last_error: str | None = None  # why the last script or command was refused
        self._mode = 0
        self._set_i = 0.0
        self._set_e = 0.0
        self._timer0 = clock.now()
        self._cell_t = clock.now()  # the cell has been simulated up to this clock time
        self._script: _Script | None = None
        self._collecting: list[str] | None = None  # lines of an `e` script being received

    # --- lifecycle
    @property
    def faults_injected(self) -> dict[str, int]:
        """How many of each wire fault this simulator has put on the wire so far."""
        return dict(self._faults.injected) if self._faults else {}

    def start(self) -> Self:
        if self._started or self._closed:
            return self
        self._started = True
        self._spawn(self._read_loop, "reader")
        self._spawn(self._write_loop, "writer")
        if self.clock.is_virtual:
            self.clock.add_pump(self.pump)
        else:
            self._spawn(self._pump_loop, "pump")
        return self

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.clock.remove_pump(self.pump)
        self._stop.set()
        self._pump_wake.set()
        os.write(self._wake_w, b"x")
        self._out.put(None)
        for thread in self._threads:
            thread.join(timeout=5)
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            os.close(fd)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def running(self) -> bool:
        """Whether a script is running."""
        return self._script is not None

    @property
    def port_dead(self) -> bool:
        """Whether a disconnect fault has made the port dead (nothing in, nothing out)."""
        return self._faults is not None and self.clock.now() < self._faults.dead_until

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=f"emstat-sim-{name}", daemon=True)
        self._threads.append(thread)
        thread.start()

    # --- the pump
    def pump(self, now: float) -> None:
        """Write every package due by clock time ``now``; let the cell live until ``now``."""
        with self._lock:
            if self._closed:
                return
            lines: list[str] = []
            self._advance(now, lines)
            self._send(lines)

    def _pump_loop(self) -> None:
        """On a real clock: pump, then sleep until the next package is due (at most
        PUMP_PERIOD_S, less when a new script arrives), so packages leave on time without a
        busy poll per instrument."""
        while not self._stop.is_set():
            self.pump(self.clock.now())
            self._pump_wake.wait(self._until_next_package())
            self._pump_wake.clear()

    def _until_next_package(self) -> float:
        """Wall seconds until the running loop's next package is due (PUMP_PERIOD_S when idle)."""
        with self._lock:
            script = self._script
            run = script.run if script is not None else None
            rel = run.next_rel() if run is not None else None
            if rel is None:
                return PUMP_PERIOD_S
            delay = (run.start + rel - self.clock.now()) / getattr(self.clock, "speed", 1.0)
        return min(max(delay, 0.0), PUMP_PERIOD_S)

    def _advance(self, now: float, lines: list[str]) -> None:
        try:
            self._advance_unguarded(now, lines)
        except Exception:  # the model failed: end the script, keep the clock alive
            log.exception("simulated EmStat4 %s: the cell model raised", self.serial_number)
            self._cell_t = max(self._cell_t, now)
            if self._script is not None:
                lines.append(f"!{ERR_INTERNAL:04X}")
                if self._script.run is not None:
                    lines.append("*")
                self._finish(self._script, lines)

    def _advance_unguarded(self, now: float, lines: list[str]) -> None:
        while self._script is not None and self._step_script(now, lines):
            pass
        if self._script is None:  # a running loop advances the cell package by package
            self._idle_to(now)

    def _step_script(self, now: float, lines: list[str]) -> bool:
        """One step of the running script; False when it waits for time to pass."""
        script = self._script
        assert script is not None
        if script.run is not None:
            if not self._run_packages(script, now, lines):
                return False
            lines.append("*")
            script.run = None
            script.pc += 1
            return True
        program = script.program
        if script.pc >= len(program.main):
            self._finish(script, lines)
            return True
        op = program.main[script.pc]
        if isinstance(op, _Loop):
            script.run = self._begin_loop(op, script.time, lines)
        else:
            self._execute(op, script)
            script.pc += 1
        return True

    def _begin_loop(self, spec: _Loop, start: float, lines: list[str]) -> _Run:
        lines.append(f"M{LOOP_IDS[spec.kind]:04X}")
        if spec.kind == "cp":
            self._set_i = spec.setpoint
        elif spec.kind in ("ca", "eis"):
            self._set_e = spec.setpoint
        return _start_run(spec, start, self._timer0)

    def _run_packages(self, script: _Script, now: float, lines: list[str]) -> bool:
        """Produce the loop's packages due by ``now``; True when the loop has ended."""
        run = script.run
        assert run is not None
        spec, regs, limit = run.spec, script.registers, now - run.start + EPS_S
        while True:
            rel = run.next_rel()
            if rel is None:
                script.time = run.start + run.prev_rel
                return True
            if rel > limit:
                return False
            dt, run.prev_rel = rel - run.prev_rel, rel
            run.k += 1
            self._cell_t = script.time = run.start + rel
            regs[TIMER_SLOT] = rel + run.timer_offset
            status = self._measure(spec, run.k, dt, regs)
            if self._exec_body(spec.body, regs, lines, status):
                return True

    def _measure(self, spec: _Loop, k: int, dt: float, regs: list[float]) -> int:
        """Drive the cell for ``dt`` and store the loop's variables; returns the status bits."""
        kind, slots, cell = spec.kind, spec.slots, self.cell
        if kind == "cp":
            if self.output_on:
                e, i = cell.apply_current(spec.setpoint, dt), spec.setpoint
            else:
                e, i = cell.open_circuit(dt), 0.0
            regs[slots[1]] = i
            regs[slots[0]], over = _clamp(e, MAX_POTENTIAL_V)
        elif kind == "ca":
            if self.output_on:
                e, i = spec.setpoint, cell.apply_potential(spec.setpoint, dt)
            else:
                e, i = cell.open_circuit(dt), 0.0
            regs[slots[0]] = e
            regs[slots[1]], over = _clamp(i, MAX_CURRENT_A)
        elif kind == "ocp":
            regs[slots[0]], over = _clamp(cell.open_circuit(dt), MAX_POTENTIAL_V)
        else:
            over = self._measure_eis(spec, k, dt, regs)
        return STATUS_OVERLOAD if over else 0

    def _measure_eis(self, spec: _Loop, k: int, dt: float, regs: list[float]) -> bool:
        self._idle(dt)
        f = spec.frequencies[k - 1]
        z = complex(self.cell.impedance([f])[0])
        if not (math.isfinite(z.real) and math.isfinite(z.imag)):
            z, over = complex(0.0, 0.0), True
        else:
            over = False
        s = spec.slots
        regs[s[0]], regs[s[1]], regs[s[2]] = f, z.real, z.imag
        return over

    def _exec_body(
        self, ops: list[tuple[Any, ...]], regs: list[float], lines: list[str], status: int,
    ) -> bool:
        """Run one iteration of a loop body; True on breakloop."""
        for op in ops:
            kind = op[0]
            if kind == B_PCK:
                lines.append(format_package([(vt, regs[slot]) for vt, slot in op[1]], status))
            elif kind == B_TIMER:
                regs[op[1]] = regs[TIMER_SLOT]
            elif kind == B_IF:
                _, left, compare, constant, right, body = op
                hit = compare(regs[left], regs[right] if right >= 0 else constant)
                if hit and self._exec_body(body, regs, lines, status):
                    return True
            else:  # B_BREAK
                return True
        return False

    def _execute(self, op: tuple[Any, ...], script: _Script) -> None:
        """A top-level (or on_finished) statement: takes no instrument time."""
        code = op[0]
        if code == OP_MODE:
            self._mode = op[1]
            if op[1] == 0:
                self.output_on = False
        elif code == OP_CELL:
            self.output_on = op[1]
        elif code == OP_TIMER_START:
            self._timer0 = script.time
        elif code == OP_TIMER_GET:
            script.registers[op[1]] = script.time - self._timer0
        elif code == OP_SET_I:
            self._set_i = op[1]
        elif code == OP_SET_E:
            self._set_e = op[1]

    def _finish(self, script: _Script, lines: list[str]) -> None:
        """on_finished:, then the empty line that ends the script's output."""
        for op in script.program.finished:
            self._execute(op, script)
        lines.append("")
        self._script = None

    def _idle_to(self, now: float) -> None:
        if now > self._cell_t:
            self._idle(now - self._cell_t)
            self._cell_t = now

    def _idle(self, dt: float) -> None:
        """No package due: the cell rests, or is held at the last setpoint while output is on."""
        if not self.output_on:
            self.cell.open_circuit(dt)
        elif self._mode == GALVANOSTATIC:
            self.cell.apply_current(self._set_i, dt)
        else:
            self.cell.apply_potential(self._set_e, dt)

    # --- host commands (reader thread)
    def _read_loop(self) -> None:
        buffer = b""
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master, self._wake_r], [], [], 0.5)
            if self._wake_r in ready:
                return
            try:
                data = os.read(self._master, 4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                self._stop.wait(0.05)
                continue
            buffer += data
            if b"\n" not in buffer and len(buffer) > MAX_LINE_BYTES:
                buffer = b""
                self._on_line("<overlong line>")
            while b"\n" in buffer:
                raw, buffer = buffer.split(b"\n", 1)
                self._on_line(raw.decode("ascii", "replace").rstrip("\r"))

    def _on_line(self, line: str) -> None:
        with self._lock:
            if self._faults and self.clock.now() < self._faults.dead_until:
                self._collecting = None
                return
            if self._collecting is not None:
                self._collect(line)
                return
            command = line.strip()
            if command == "e":
                self._collecting = []
            elif command:
                self._command(command)

    def _collect(self, line: str) -> None:
        assert self._collecting is not None
        if line.strip():
            self._collecting.append(line)
            return
        script_lines, self._collecting = self._collecting, None
        if self._fate() == "ok":
            self._submit(script_lines)

    def _fate(self) -> str:
        return self._faults.command_fate(self.clock.now()) if self._faults else "ok"

    def _command(self, command: str) -> None:
        if self._fate() != "ok":
            return
        if command == "t":
            self._send(FIRMWARE_REPLY.splitlines())
        elif command == "i":
            self._send([f"i{self.serial_number}"])
        elif command == "Z":
            self._abort()
        else:
            self._refuse(ERR_UNKNOWN_COMMAND, f"unknown host command {command!r}")

    def _refuse(self, code: int, message: str, prefix: str = "") -> None:
        self.last_error = f"!{code:04X}: {message}"
        self._send([f"{prefix}!{code:04X}"])

    def _submit(self, script_lines: list[str]) -> None:
        if self._script is not None:
            self._refuse(ERR_BUSY, "a script is already running")
            return
        try:
            program = parse_script(script_lines, self._mode)
        except ScriptError as exc:
            self._refuse(exc.code, str(exc))
            return
        now = self.clock.now()
        lines = ["e"]
        self._advance(now, lines)  # the cell rests up to the acceptance time
        self._script = _Script(program, now, [0.0] * program.n_registers)
        self._advance(now, lines)
        self._send(lines)
        self._pump_wake.set()  # the pump thread re-plans its sleep for the new loop

    def _abort(self) -> None:
        now = self.clock.now()
        lines: list[str] = []
        self._advance(now, lines)  # packages already due go out first
        script = self._script
        if script is None:
            self._send(lines)
            self._refuse(ERR_NOT_RUNNING, "no script running", prefix="Z")
            return
        lines.append("Z")
        if script.run is not None:
            self._idle_to(now)  # the loop's setpoint held until the abort
            lines.append("*")
        script.time = max(script.time, now)
        self._finish(script, lines)
        self._send(lines)

    # --- output (writer thread)
    def _send(self, lines: list[str]) -> None:
        """Queue lines (each gets a newline) as one item; called under the lock."""
        if not lines:
            return
        if self._faults:
            if self.clock.now() < self._faults.dead_until:
                return
            lines = self._faults.lines(lines)
        self._out.put(("\n".join(lines) + "\n").encode("ascii"))

    def _write_loop(self) -> None:
        while True:
            data = self._out.get()
            if data is None or self._stop.is_set():
                return
            self._write_all(data)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self._stop.is_set():
            try:
                view = view[os.write(self._master, view):]
            except BlockingIOError:
                select.select([], [self._master], [], 0.1)
            except OSError:
                return


def _clamp(value: float, limit: float) -> tuple[float, bool]:
    """A measured value within the instrument's range, and whether it overloaded."""
    if -limit <= value <= limit:
        return value, False
    if math.isnan(value):
        return limit, True
    return math.copysign(limit, value), True
