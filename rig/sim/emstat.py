"""A simulated PalmSens EmStat4 LR that serves MethodSCRIPT on a pseudo-terminal.

It runs the MethodSCRIPT dialect of PalmSens's own example scripts (the language is compiled by
``rig.sim.mscript``; docs/methodscript.md lists it) and measures a cell model
(``rig.sim.cell.NaCell``)::

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
clock time ``t0`` runs its instructions (which take no instrument time) until a measurement loop
or a ``wait``; loop package k is owed at ``t_loop + t_k``. ``pump(now)`` produces every package
due by ``now`` (within ``EPS_S``), advancing the cell interval by interval, running the loop body
(``if``, ``breakloop``, arithmetic, ``pck_*``) on the new values, ending the loop (``*``) when a
``breakloop`` runs or the run time is over, and the script (``on_finished:``, the empty line) at
its end. All output of one pump call is one queue item. On a ``VirtualClock`` the clock calls
``pump`` on every jump, before any sleeper wakes (``start()`` registers it with
``clock.add_pump``). On a ``RealClock`` (also accelerated, for ``rig sim serve``) a pump thread
calls ``pump(clock.now())`` when the next package is due (and at least every ``PUMP_PERIOD_S``).
Between scripts the cell keeps living: at open circuit, or held at the last set current/potential
while the output is still on (a script that never switches the cell off keeps driving it).

One ``threading.Lock`` guards all instrument state (script, cell, output); replies and packages
are queued under it, so the order on the wire is the order of events.

Packages carry what the firmware's do: the variable types each loop stores (CA: applied
potential ``da``, measured current ``ba``; CP: measured potential ``ab``, applied current
``db``; EIS: ``dc`` ``cc`` ``cd``; see ``rig.sim.mscript.LOOP_TYPES``), and on each measured
variable its status and range metadata (``ba48D503Dp,10,218``). Ranges act: the script's
``set_range``/``set_autoranging`` choose which ranges a measured variable may use (all of them by
default); a value beyond the highest allowed range is clamped to its full scale and flagged
overload (status ``2``); an applied current beyond its ``db`` range is clamped, and flagged.

Host commands: ``t`` (firmware, two lines), ``i`` (serial number), ``v`` (MethodSCRIPT version),
``e`` (a script; ``e`` when accepted, ``e!XXXX: Line L, Col C`` when refused), ``Z`` (abort:
``Z``, or ``Z!0006`` when nothing runs) and the empty line (answered by an empty line). Any other
line gets its first character and ``!0003``. Codes are the vendor's (``rig.sim.mscript``).
A runtime error (an argument out of range once a variable's value is known, a division by zero,
the cell model raising) sends ``!XXXX: Line L`` and ends the script (``*`` if a loop ran,
on_finished, the empty line).

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
import select
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self

from drivers.methodscript import STATUS_OVERLOAD, encode_value
from rig.clock import Clock
from rig.sim.pty import open_pty
from rig.sim.mscript import (  # noqa: F401  (re-exported for tests and tools)
    ERR_COMM_MODE,
    ERR_DIVIDE_BY_ZERO,
    ERR_NAN,
    ERR_OUT_OF_BOUNDS,
    ERR_SCRIPT_UNKNOWN,
    ERR_TIMEOUT,
    ERR_UNKNOWN_COMMAND,
    ERR_UNSPECIFIED,
    GALVANOSTATIC,
    LOOP_IDS,
    MAX_CURRENT_A,
    MAX_POTENTIAL_V,
    MEASURED,
    OP_ARITH,
    OP_BODY_TIMER,
    OP_BREAK,
    OP_CELL,
    OP_COPY,
    OP_JUMP,
    OP_MEAS,
    OP_MODE,
    OP_OUT,
    OP_PCK,
    OP_RANGE,
    OP_SET_E,
    OP_SET_I,
    OP_STORE,
    OP_TEXT,
    OP_TIMER_GET,
    OP_TIMER_START,
    OP_UNLESS,
    OP_WAIT,
    RANGE_TABLES,
    Loop,
    Program,
    ScriptError,
    build_loop,
    compile_script,
    eis_frequencies,
    eis_schedule,
    full_scale,
    range_for,
)
from rig.sim.mscript import (
    ERR_LITERAL as ERR_BAD_LITERAL,  # noqa: F401
)
from rig.sim.mscript import (
    ERR_SCOPE as ERR_BAD_STRUCTURE,  # noqa: F401
)
from rig.sim.mscript import (
    ERR_UNDECLARED as ERR_UNKNOWN_VARIABLE,  # noqa: F401
)
from rig.sim.mscript import (
    ERR_WRONG_MODE,  # noqa: F401
)

ERR_NOT_RUNNING = ERR_COMM_MODE   # `Z` with nothing running: `Z!0006`
ERR_BUSY = ERR_COMM_MODE          # `e` while a script runs: `e!0006`
ERR_UNKNOWN_SCRIPT_COMMAND = ERR_SCRIPT_UNKNOWN
ERR_BAD_ARGUMENT = ERR_OUT_OF_BOUNDS
ERR_INTERNAL = ERR_UNSPECIFIED

log = logging.getLogger(__name__)
_TRUEDIV = operator.truediv

FIRMWARE_REPLY = "tes4_lr#narig-sim\nR1.0*\n"  # reply to `t`: device prefix, build text, version
MSCRIPT_VERSION_REPLY = "v01.08.00"           # reply to `v`: the MethodSCRIPT version
MAX_LINE_BYTES = 4096  # a longer host line without newline is dropped as one bad command
EPS_S = 1e-6  # a package is due when t0 + t_k <= now + EPS_S (clock float resolution ~0.2 us)
PUMP_PERIOD_S = 0.1  # longest wall-time sleep of the pump thread on a real clock
COMPILED_CACHE = 64  # scripts kept compiled
_RANGE_PLANS: dict[tuple[Any, ...], dict[str, tuple[Any, float, str]]] = {}  # by ranges allowed
MAX_STEPS_WITHOUT_TIME = 100_000  # a script spinning this long without a loop or wait: !4020


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


def parse_script(lines: Sequence[str], mode: int = 0) -> Program:
    """Compile script lines (without the `e` and the final empty line); raises ScriptError."""
    return compile_script(lines, mode)


# ---------------------------------------------------------------- running state


@dataclass
class _Run:
    """A measurement loop in progress."""

    spec: Loop
    start: float  # absolute clock time the loop started
    timer_offset: float  # start - timer origin
    n_regular: int = 0  # packages at k * interval
    has_tail: bool = False  # one more at exactly `duration`
    k: int = 0  # packages produced
    prev_rel: float = 0.0  # loop-relative time of the last package
    applied: float = 0.0  # the current (cp) actually applied, within its db range
    applied_over: bool = False  # the set current was beyond the db range

    def next_rel(self) -> float | None:
        k = self.k + 1
        spec = self.spec
        if spec.times:
            return spec.times[k - 1] if k <= len(spec.times) else None
        if k <= self.n_regular:
            return k * spec.interval
        if k == self.n_regular + 1 and self.has_tail:
            return spec.duration
        return None


@dataclass
class _Script:
    program: Program
    time: float  # clock time the script's execution has reached
    registers: list[float]
    meta: list[str]  # per register: the metadata its last measurement carries
    pc: int = 0
    run: _Run | None = None
    wait_until: float | None = None
    timer_now: float = 0.0  # the timer at the current package (loop bodies)


def _start_run(spec: Loop, start: float, timer_origin: float) -> _Run:
    run = _Run(spec, start, start - timer_origin)
    if not spec.times:
        run.n_regular = math.floor(spec.duration / spec.interval + 1e-9)
        run.has_tail = spec.duration - run.n_regular * spec.interval > EPS_S
    return run


def _full_auto() -> dict[str, tuple[int, int]]:
    return {vt: (0, len(table) - 1) for vt, table in RANGE_TABLES.items()}


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
        """The lines as the wire delivers them. A line suffers at most one fault: a package
        already cut short is not garbled too, so each fault counted is one damaged line a host
        can see (the draws are made all the same, so a seed gives the same faults as before)."""
        p, rng = self.profile, self.output
        out = []
        for line in lines:
            truncated = False
            if p.truncated_package and line.startswith("P") and rng.random() < p.truncated_package:
                line = line[: rng.randrange(1, len(line))]
                self.injected["truncated_package"] += 1
                truncated = True
            if p.garbled_line and line and rng.random() < p.garbled_line:
                i = rng.randrange(len(line))
                if not truncated:
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
        self._queued = self._written = 0  # items put on _out; items the writer has written
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
        self._ranges = _full_auto()  # per type: the (lowest, highest) range it may use
        self._range_plans: dict[str, tuple[Any, float, str]] = {}
        self._plan_ranges()
        self._collecting: list[str] | None = None  # lines of an `e` script being received
        # scripts compiled before (a host sends the same chunk script again and again): a
        # Program is never changed by running it
        self._compiled: dict[tuple[tuple[str, ...], int], Program] = {}

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
            if run is None or rel is None:
                return PUMP_PERIOD_S
            delay = (run.start + rel - self.clock.now()) / getattr(self.clock, "speed", 1.0)
        return min(max(delay, 0.0), PUMP_PERIOD_S)

    def _advance(self, now: float, lines: list[str]) -> None:
        try:
            self._advance_unguarded(now, lines)
        except ScriptError as exc:  # a runtime error: the script ends, as the firmware's does
            self._end_with_error(exc, now, lines)
        except Exception:  # the model failed: end the script, keep the clock alive
            log.exception("simulated EmStat4 %s: the cell model raised", self.serial_number)
            self._end_with_error(ScriptError(ERR_INTERNAL, "the cell model raised"), now, lines)

    def _end_with_error(self, exc: ScriptError, now: float, lines: list[str]) -> None:
        self._cell_t = max(self._cell_t, now)
        self.last_error = str(exc)
        script = self._script
        if script is None:
            return
        lines.append(exc.wire(prefix=""))
        if script.run is not None:
            lines.append("*")
            script.run = None
        self._finish(script, lines)

    def _advance_unguarded(self, now: float, lines: list[str]) -> None:
        steps = 0
        while self._script is not None and self._step_script(now, lines):
            steps += 1
            if steps > MAX_STEPS_WITHOUT_TIME and self._script.run is None:
                raise ScriptError(ERR_TIMEOUT, "the script runs without a loop or wait")
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
        if script.wait_until is not None:
            if script.wait_until > now + EPS_S:
                return False
            self._idle_to(script.wait_until)
            script.time, script.wait_until = script.wait_until, None
            script.pc += 1
            return True
        main = script.program.main
        if script.pc >= len(main):
            self._finish(script, lines)
            return True
        op = main[script.pc]
        code = op[0]
        if code == OP_MEAS:
            script.run = self._begin_loop(op[1], script, lines)
        elif code == OP_WAIT:
            script.wait_until = script.time + self._value(op[1], script.registers)
        elif code == OP_JUMP:
            script.pc = op[1]
        elif code == OP_UNLESS:
            script.pc = self._branch(op, script.registers, script.pc)
        else:
            self._execute(op, script, lines)
            script.pc += 1
        return True

    @staticmethod
    def _value(operand: tuple[int, float], regs: list[float]) -> float:
        slot, constant = operand
        return regs[slot] if slot >= 0 else constant

    @staticmethod
    def _branch(op: tuple[Any, ...], regs: list[float], pc: int) -> int:
        _, ls, lc, compare, rs, rc, target = op
        hit = compare(regs[ls] if ls >= 0 else lc, regs[rs] if rs >= 0 else rc)
        return pc + 1 if hit else target

    def _begin_loop(self, template: Any, script: _Script, lines: list[str]) -> _Run:
        regs = script.registers
        try:
            spec = build_loop(template, [self._value(a, regs) for a in template.args])
        except ScriptError as exc:
            exc.line = template.line
            raise
        lines.append(f"M{LOOP_IDS[spec.kind]:04X}")
        run = _start_run(spec, script.time, self._timer0)
        if spec.kind in ("cp", "geis"):
            self._set_i = spec.setpoint
            limit = full_scale("db", self._ranges["db"][1])
            run.applied = max(-limit, min(limit, spec.setpoint))
            run.applied_over = run.applied != spec.setpoint
        elif spec.kind in ("ca", "eis"):
            self._set_e = spec.setpoint
        elif spec.kind in ("lsv", "cv"):
            self._set_e = spec.values[0]
        if 0 in spec.scan_starts:
            lines.append("C0000")
        return run

    def _run_packages(self, script: _Script, now: float, lines: list[str]) -> bool:
        """Produce the loop's packages due by ``now``; True when the loop has ended."""
        run = script.run
        assert run is not None
        spec, regs, limit = run.spec, script.registers, now - run.start + EPS_S
        scans = spec.scan_starts
        while True:
            rel = run.next_rel()
            if rel is None:
                script.time = run.start + run.prev_rel
                if scans:
                    lines.append("-")
                return True
            if rel > limit:
                return False
            dt, run.prev_rel = rel - run.prev_rel, rel
            if scans and run.k in scans and run.k:
                lines.append("-")
                lines.append(f"C{len([s for s in scans if s <= run.k]) - 1:04X}")
            run.k += 1
            self._cell_t = script.time = run.start + rel
            script.timer_now = rel + run.timer_offset
            self._measure(run, dt, regs, script.meta)
            if self._exec_body(spec.body, script, lines):
                if scans:
                    lines.append("-")
                return True

    def _ranged(self, vtype: str, value: float) -> tuple[float, str, bool]:
        """A measured value within the ranges the script allows: (value, metadata, overload)."""
        allowed, top, over_meta = self._range_plans[vtype]
        magnitude = abs(value)
        for fs, meta in allowed:
            if magnitude <= fs:
                return value, meta, False
        clamped = top if math.isnan(value) else math.copysign(top, value)
        return clamped, over_meta, True

    def _plan_ranges(self) -> None:
        """Per type, (full scale, metadata) of each allowed range, lowest first (the hot path);
        planned once per set of ranges (each chunk of a long step sets the same ones)."""
        key = tuple(self._ranges.items())
        plans = _RANGE_PLANS.get(key)
        if plans is None:
            plans = _RANGE_PLANS[key] = self._planned(self._ranges)
        self._range_plans = plans

    @staticmethod
    def _planned(ranges: dict[str, tuple[int, int]]) -> dict[str, tuple[Any, float, str]]:
        plans = {}
        for vtype, (low, high) in ranges.items():
            table = RANGE_TABLES[vtype]
            allowed = tuple((full_scale(vtype, k), f",10,2{table[k][1]:02X}")
                            for k in range(low, high + 1))
            plans[vtype] = (allowed, full_scale(vtype, high),
                            f",1{STATUS_OVERLOAD:X},2{table[high][1]:02X}")
        return plans

    def _measure(self, run: _Run, dt: float, regs: list[float], meta: list[str]) -> None:
        """Drive the cell for ``dt`` and store the loop's variables with their metadata."""
        spec = run.spec
        kind, slots, cell = spec.kind, spec.slots, self.cell
        if kind == "cp":
            if self.output_on:
                e, i = cell.apply_current(run.applied, dt), run.applied
            else:
                e, i = cell.open_circuit(dt), 0.0
            regs[slots[1]] = i
            regs[slots[0]], meta[slots[0]], over = self._ranged("ab", e)
            if run.applied_over and not over:
                meta[slots[0]] = f",1{STATUS_OVERLOAD:X}" + meta[slots[0]][3:]
        elif kind == "ca" or kind in ("lsv", "cv"):
            e = spec.setpoint if kind == "ca" else spec.values[run.k - 1]
            if kind != "ca":
                self._set_e = e
            i = cell.apply_potential(e, dt) if self.output_on else 0.0
            if not self.output_on:
                cell.open_circuit(dt)
            regs[slots[0]] = e
            regs[slots[1]], meta[slots[1]], _ = self._ranged("ba", i)
        elif kind == "ocp":
            regs[slots[0]], meta[slots[0]], _ = self._ranged("ab", cell.open_circuit(dt))
        else:
            self._measure_eis(spec, run.k, dt, regs, meta)

    def _measure_eis(self, spec: Loop, k: int, dt: float, regs: list[float],
                     meta: list[str]) -> None:
        self._idle(dt)
        f = spec.values[k - 1]
        z = complex(self.cell.impedance([f])[0])
        s = spec.slots
        regs[s[0]] = f
        if not (math.isfinite(z.real) and math.isfinite(z.imag)):
            regs[s[1]] = regs[s[2]] = 0.0
            meta[s[1]] = meta[s[2]] = f",1{STATUS_OVERLOAD:X}"
            return
        regs[s[1]], regs[s[2]] = z.real, z.imag
        # Z' carries the current range, Z'' the potential range (vendor mscript.py)
        if spec.kind == "eis":
            e_ac, i_ac = spec.amplitude, spec.amplitude / max(abs(z), 1e-30)
        else:
            i_ac, e_ac = spec.amplitude, spec.amplitude * abs(z)
        _, meta[s[1]], over_i = self._ranged("ba", i_ac)
        _, meta[s[2]], over_e = self._ranged("ab", e_ac)
        if over_i or over_e:
            meta[s[1]] = f",1{STATUS_OVERLOAD:X}" + meta[s[1]][3:]

    def _exec_body(self, ops: list[tuple[Any, ...]], script: _Script, lines: list[str]) -> bool:
        """Run one iteration of a loop body; True on breakloop."""
        regs, meta = script.registers, script.meta
        pc, n = 0, len(ops)
        while pc < n:
            op = ops[pc]
            code = op[0]
            if code == OP_PCK:
                lines.append("P" + ";".join(
                    [vt + encode_value(regs[slot]) + meta[slot] for vt, slot in op[1]]))
            elif code == OP_BODY_TIMER:
                regs[op[1]] = script.timer_now
            elif code == OP_UNLESS:
                _, ls, lc, compare, rs, rc, target = op
                if not compare(regs[ls] if ls >= 0 else lc, regs[rs] if rs >= 0 else rc):
                    pc = target
                    continue
            elif code == OP_BREAK:
                return True
            elif code == OP_JUMP:
                pc = op[1]
                continue
            else:
                self._execute(op, script, lines)
            pc += 1
        return False

    def _execute(self, op: tuple[Any, ...], script: _Script, lines: list[str]) -> None:
        """A statement that takes no instrument time (top level, loop body or on_finished)."""
        code, regs = op[0], script.registers
        if code == OP_MODE:
            self._mode = op[1]
            if op[1] == 0:
                self.output_on = False
        elif code == OP_CELL:
            self.output_on = op[1]
        elif code == OP_TIMER_START:
            self._timer0 = script.time
        elif code == OP_TIMER_GET:
            regs[op[1]] = script.time - self._timer0
        elif code == OP_SET_I:
            self._set_i = self._checked(op[1], regs, MAX_CURRENT_A, "current")
        elif code == OP_SET_E:
            self._set_e = self._checked(op[1], regs, MAX_POTENTIAL_V, "potential")
        elif code == OP_STORE:
            regs[op[1]] = op[2]
        elif code == OP_COPY:
            regs[op[2]] = regs[op[1]]
            script.meta[op[2]] = script.meta[op[1]]
        elif code == OP_ARITH:
            right = self._value(op[3], regs)
            if op[1] is _TRUEDIV and right == 0:
                raise ScriptError(ERR_DIVIDE_BY_ZERO, "variable divided by zero")
            value = op[1](regs[op[2]], right)
            if not math.isfinite(value):
                raise ScriptError(ERR_NAN, "a variable has become NaN or inf")
            regs[op[2]] = value
        elif code == OP_PCK:
            lines.append("P" + ";".join(
                [vt + encode_value(regs[slot]) + script.meta[slot] for vt, slot in op[1]]))
        elif code == OP_TEXT or code == OP_OUT:
            lines.append(op[1])
        elif code == OP_RANGE:
            self._set_range(op[1], self._value(op[2], regs),
                            None if op[3] is None else self._value(op[3], regs))
        elif code == OP_BODY_TIMER:
            regs[op[1]] = script.timer_now

    def _checked(self, operand: tuple[int, float], regs: list[float], limit: float,
                 what: str) -> float:
        value = self._value(operand, regs)
        if not -limit <= value <= limit:
            raise ScriptError(ERR_OUT_OF_BOUNDS, f"{what} {value:g} outside +-{limit:g}")
        return value

    def _set_range(self, vtype: str, low: float, high: float | None) -> None:
        if not low > 0 or (high is not None and not high > 0):
            raise ScriptError(ERR_OUT_OF_BOUNDS, "a range must be positive")
        lo = range_for(vtype, low)
        hi = lo if high is None else range_for(vtype, high)
        self._ranges[vtype] = (min(lo, hi), max(lo, hi))
        self._plan_ranges()

    def _finish(self, script: _Script, lines: list[str]) -> None:
        """on_finished:, then the empty line that ends the script's output."""
        finished = script.program.finished
        pc = 0
        while pc < len(finished):
            op = finished[pc]
            if op[0] == OP_JUMP:
                pc = op[1]
                continue
            if op[0] == OP_UNLESS:
                pc = self._branch(op, script.registers, pc)
                continue
            try:
                self._execute(op, script, lines)
            except ScriptError as exc:
                lines.append(exc.wire(prefix=""))
                break
            pc += 1
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
            if b"\n" in buffer:
                *raws, buffer = buffer.split(b"\n")
                with self._lock:  # a whole script's lines at once
                    for raw in raws:
                        self._on_line_locked(raw.decode("ascii", "replace").rstrip("\r"))

    def _on_line(self, line: str) -> None:
        with self._lock:
            self._on_line_locked(line)

    def _on_line_locked(self, line: str) -> None:
        collecting = self._collecting
        if collecting is not None and self._faults is None and line and not line.isspace():
            collecting.append(line)   # a script's line (the hot path of a chunk)
            return
        if self._faults and self.clock.now() < self._faults.dead_until:
            self._collecting = None
            return
        if self._collecting is not None:
            self._collect(line)
            return
        command = line.strip()
        if command == "e":
            self._collecting = []
        else:
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
        elif command == "v":
            self._send([MSCRIPT_VERSION_REPLY])
        elif command == "Z":
            self._abort()
        elif command == "":
            self._send([""])  # the firmware answers an empty line with one
        else:
            self._refuse(ERR_UNKNOWN_COMMAND, f"unknown host command {command!r}",
                         prefix=command[0])

    def _refuse(self, code: int, message: str, prefix: str = "") -> None:
        self.last_error = f"!{code:04X}: {message}"
        self._send([f"{prefix}!{code:04X}"])

    def _submit(self, script_lines: list[str]) -> None:
        if self._script is not None:
            self._refuse(ERR_BUSY, "a script is already running", prefix="e")
            return
        key = (tuple(script_lines), self._mode)
        program = self._compiled.get(key)
        if program is None:
            try:
                program = parse_script(script_lines, self._mode)
            except ScriptError as exc:
                self.last_error = str(exc)
                self._send([exc.wire(prefix="e")])
                return
            if len(self._compiled) >= COMPILED_CACHE:
                self._compiled.clear()
            self._compiled[key] = program
        now = self.clock.now()
        lines = ["e"]
        self._advance(now, lines)  # the cell rests up to the acceptance time
        self._ranges = _full_auto()
        self._plan_ranges()
        n = program.n_registers
        self._script = _Script(program, now, [0.0] * n, [""] * n)
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
        self._idle_to(now)  # the loop's (or wait's) setpoint held until the abort
        if script.run is not None:
            lines.append("*")
        script.time = max(script.time, now)
        self._finish(script, lines)
        self._send(lines)

    # --- output (writer thread)
    def _send(self, lines: list[str]) -> None:
        """Send lines (each gets a newline) as one item; called under the lock. Written at
        once when nothing is queued and the pty takes it all (no thread hand-off on the
        round trip a host waits for); else queued for the writer thread, so a full pty never
        blocks the caller (the clock's jump, the reader thread)."""
        if not lines:
            return
        if self._faults:
            if self.clock.now() < self._faults.dead_until:
                return
            lines = self._faults.lines(lines)
        data = ("\n".join(lines) + "\n").encode("ascii")
        if self._queued == self._written and not self._stop.is_set():
            try:
                n = os.write(self._master, data)
            except BlockingIOError:
                n = 0
            except OSError:
                return
            if n == len(data):
                return
            data = data[n:]
        self._queued += 1
        self._out.put(data)

    def _write_loop(self) -> None:
        while True:
            data = self._out.get()
            if data is None or self._stop.is_set():
                return
            self._write_all(data)
            self._written += 1  # after the write: _send writes directly only once all are out

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self._stop.is_set():
            try:
                view = view[os.write(self._master, view):]
            except BlockingIOError:
                select.select([], [self._master], [], 0.1)
            except OSError:
                return

