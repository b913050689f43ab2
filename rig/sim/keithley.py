"""A simulated Keithley 2450 SourceMeter serving SCPI on TCP, measuring a simulated cell.

A real TCP server on 127.0.0.1 (the port the OS picks, or ``port=``), so the production driver
reaches it through pyvisa exactly as it reaches hardware on port 5025::

    with SimulatedKeithley2450(NaCell("symmetric", 1.13, PRESETS["glyme"]), clock) as sim:
        rm = pyvisa.ResourceManager("@py")
        smu = rm.open_resource(sim.resource, read_termination="\\n", write_termination="\\n")
        smu.query("*IDN?")      # -> 'KEITHLEY INSTRUMENTS,MODEL 2450,04412345,1.7.3b'

Design
------
Threads. A ``socketserver.ThreadingTCPServer`` runs in its own thread (``serve_forever``), one
handler thread per connection; nothing depends on an asyncio loop in the caller. ``close()``
shuts the server and every open connection down and joins all the threads; it is idempotent.

Wire. Lines end in ``\\n`` (a ``\\r`` before it is dropped). A line may hold several commands
separated by ``;``. Headers are case-insensitive, in short (``:SOUR``) or long (``:SOURce``)
form, with the optional nodes (``[:LEVel]``, ``[:SENSe]``, ``[:STATe]``, ``[:IMMediate]`` ...)
optional. A query that fails sends nothing (the host times out), as on the instrument.

Commands (2450 / ``command_set="2400"``; anything else queues -113 "Undefined header"):
``*IDN? *RST *CLS *OPC? :SYST:ERR? :SOUR:FUNC CURR|VOLT :SOUR:CURR[:LEV] <A> :SOUR:VOLT[:LEV] <V>
:SOUR:VOLT:RANG:AUTO <b> :SENS:CURR:NPLC <n> :SENS:CURR:RANG:AUTO <b>
:SOUR:CURR:RANG:AUTO <b> :SENS:FUNC "VOLT"|"CURR" :SENS:VOLT:NPLC <n> :SENS:VOLT:RANG:AUTO <b>
:OUTP ON|OFF :OUTP?`` and, per model, the compliance ``:SOUR:CURR:VLIM <V>`` (2450; plus
``:SOUR:CURR:VLIM:TRIP?``) or ``:SENS:VOLT:PROT <V>`` (2400), the current limit of the voltage
source ``:SOUR:VOLT:ILIM <A>`` (2450) or ``:SENS:CURR:PROT <A>`` (2400), the output-off state
``:OUTP:CURR:SMOD`` (2450) or ``:OUTP:SMOD`` (2400), ``:FORM:ELEM`` (2400 only), and
``:READ?``: on the 2450 ``:READ? ["defbuffer1"[, <elements>]]`` with elements READ (the potential),
SOUR (the current), SOURSTAT (bit 5 = 32 the source was limited, bit 7 = 128 output on), STAT,
REL (seconds since the output went on), UNIT, SOURUNIT; without elements, the potential alone.
On the 2400 ``:READ?`` gives ``V,I,R,t,status`` (R = 9.91E37, not measured; status bit 3 = 8 is
compliance), or the subset ``:FORM:ELEM`` chose, always in that order.
Trigger model (2450, the blocks the rig's watchdog uses; reference manual section 6 TRIGger):
``:TRIG:LOAD "Empty"``, ``:TRIG:BLOC:MEAS <n>[, "defbuffer1"[, 1]]``, ``:TRIG:BLOC:DEL:CONS <n>,
<s>``, ``:TRIG:BLOC:BRAN:EVEN <n>, COMM, <to>`` (COMMand = ``*TRG``), ``:TRIG:BLOC:BRAN:COUN <n>,
<count>, <to>``, ``:TRIG:BLOC:BRAN:COUN:RES <n>, <counter>``, ``:TRIG:BLOC:BRAN:ALW <n>, <to>``,
``:TRIG:BLOC:SOUR:STAT <n>, ON|OFF``, ``:INIT``, ``:ABOR`` (the output stays as it is),
``*TRG``, ``:TRIG:STAT?``, and the buffer: ``:FETC? ["defbuffer1"[, <elements>]]`` (the latest
reading), ``:TRAC:ACT?``. The model runs lazily: before every received line and every look at
``output_on`` it is brought up to ``clock.now()``, each block at the model's own time (blocks
take no time, a delay its time, a measure block reads the cell at that instant), so on the
virtual clock the output goes off exactly when the instrument would switch it off. A counter
branches while its count (incremented on arrival) is below the target; a branch-on-event
clears the ``*TRG`` it takes (assumed from the manual; ``:INIT`` clears it too). Defining
blocks, ``:INIT`` or ``:READ?`` while the model runs: -221 settings conflict.

Errors: -113 undefined header, -109 missing parameter, -104 data type error, -224 illegal
parameter value, -222 data out of range (the setting is left unchanged), -350 queue overflow,
-221 settings conflict, -230 (``:FETC?`` of an empty buffer).

Measurement. The cell lives from one event to the next: every ``:READ?``, and every command that
changes what drives it (output, level, function, ``*RST``), first advances the cell from the
last event's clock time to ``clock.now()`` with what drove it meanwhile: the sourced current while
the output is on, open circuit while it is off or at 0 A. (The real 2450 with a HIMP off-state
has its relay open and reads no cell at all; the simulator returns the cell's open-circuit
potential, so a host that reads with the output off still sees the cell.)

Compliance. When the cell's potential at the sourced current exceeds the voltage limit, the
reading is clamped at +-limit with the limit flag set (SOURSTAT 32 / 2400 status 8) and the
instrument turns into a voltage source at the limit: until the cell again accepts the full
current, it is driven by ``apply_potential(+-limit)`` and the reading carries the current the cell
takes. (The reading that discovers the limit reports the set current: the interval before it was
simulated at full current, an approximation for one reading.)

Voltage source. With ``:SOUR:FUNC VOLT`` and the output on, the cell is held at the level
(``apply_potential``); a current beyond the limit clamps it at +-limit (limit flag set) and the
instrument becomes a current source at the limit until the cell reaches the level again.

Faults (``FaultProfile``, seeded ``random.Random``; one draw per received line): with rate
``disconnect`` the connection is closed before the line is executed (the instrument keeps its
state and keeps sourcing, as when a LAN cable is pulled; a new connection is accepted); for a
query, with rate ``no_reply`` the reply is dropped (the command ran; the host times out) and with
rate ``garbled`` it is replaced by printable junk of the same length. Set ``sim.fault`` at any time.

``faults_injected``: how many of each fault it has put on the wire (a drawn no_reply/garbled
on a line with no reply is not a fault and is not counted).

For tests: ``received`` is every command line the instrument got, in order (faults included).
"""

from __future__ import annotations

import math
import random
import re
import socket
import socketserver
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self, cast

from rig.clock import Clock

IDN = {
    "2450": "KEITHLEY INSTRUMENTS,MODEL 2450,{serial},1.7.3b",
    "2400": "KEITHLEY INSTRUMENTS INC.,MODEL 2400,{serial},C32   Oct  4 2010 14:20:11/A02  /S/K",
}
MAX_CURRENT_A = 1.05
VLIM_RANGE_V = (0.02, 210.0)
DEFAULT_VLIM_V = 21.0
ILIM_RANGE_A = (1e-9, 1.05)
DEFAULT_ILIM_A = 1.05e-4  # the 2450's default current limit (105 uA)
MAX_VOLTAGE_V = 210.0
ERROR_QUEUE_SIZE = 32
NOT_MEASURED = 9.91e37
STAT_2450_LIMIT = 32
STAT_2450_OUTPUT = 128
STAT_2400_COMPLIANCE = 8

UNDEFINED_HEADER = (-113, "Undefined header")
MISSING_PARAMETER = (-109, "Missing parameter")
DATA_TYPE_ERROR = (-104, "Data type error")
ILLEGAL_VALUE = (-224, "Illegal parameter value")
OUT_OF_RANGE = (-222, "Data out of range")
QUEUE_OVERFLOW = (-350, "Queue overflow")
SETTINGS_CONFLICT = (-221, "Settings conflict")  # e.g. :READ? while the trigger model runs
NO_DATA = (-230, "Data corrupt or stale")  # :FETCh? of an empty buffer
BUFFER_SIZE = 100_000  # defbuffer1's default capacity; it fills continuously (oldest dropped)
MAX_DELAY_S = 10_000.0  # a constant delay block: 167 ns to 10 000 s, or 0
MODEL_STEPS = 5_000_000  # blocks run per catch-up at most: a model with no delay cannot hang us
_TRIGGER_EVENTS = {"COMM": "COMM", "COMMAND": "COMM"}  # *TRG (the only event simulated)

# long form -> short form of every keyword the simulator knows
_KEYWORDS = {
    "SOURCE": "SOUR", "CURRENT": "CURR", "VOLTAGE": "VOLT", "LEVEL": "LEV", "IMMEDIATE": "IMM",
    "AMPLITUDE": "AMPL", "FUNCTION": "FUNC", "RANGE": "RANG", "VLIMIT": "VLIM", "TRIPPED": "TRIP",
    "ILIMIT": "ILIM",
    "PROTECTION": "PROT", "SENSE": "SENS", "OUTPUT": "OUTP", "STATE": "STAT", "SMODE": "SMOD",
    "SYSTEM": "SYST", "ERROR": "ERR", "NEXT": "NEXT", "FORMAT": "FORM", "ELEMENTS": "ELEM",
    "NPLCYCLES": "NPLC", "AUTO": "AUTO", "READ": "READ",
    # the trigger model and the reading buffer
    "TRIGGER": "TRIG", "BLOCK": "BLOC", "BRANCH": "BRAN", "EVENT": "EVEN", "COUNTER": "COUN",
    "RESET": "RES", "ALWAYS": "ALW", "DELAY": "DEL", "CONSTANT": "CONS", "MEASURE": "MEAS",
    "LOAD": "LOAD", "INITIATE": "INIT", "ABORT": "ABOR", "FETCH": "FETC", "TRACE": "TRAC",
    "ACTUAL": "ACT",
}
_SHORT = set(_KEYWORDS.values())
_DROPPED = {"LEV", "IMM", "AMPL", "NEXT"}  # optional nodes
_NUMBER = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")
_ELEMENTS_2450 = {
    "READ": "READ", "READING": "READ", "SOUR": "SOUR", "SOURCE": "SOUR",
    "SOURSTAT": "SOURSTAT", "SOURSTATUS": "SOURSTAT", "STAT": "STAT", "STATUS": "STAT",
    "REL": "REL", "RELATIVE": "REL", "UNIT": "UNIT", "SOURUNIT": "SOURUNIT",
}
_ELEMENTS_2400 = ("VOLT", "CURR", "RES", "TIME", "STAT")
_ELEMENT_NAMES_2400 = {"VOLT": "VOLT", "VOLTAGE": "VOLT", "CURR": "CURR", "CURRENT": "CURR",
                       "RES": "RES", "RESISTANCE": "RES", "TIME": "TIME", "STAT": "STAT",
                       "STATUS": "STAT"}
_OFF_STATES = {"HIMP": "HIMP", "HIMPEDANCE": "HIMP", "NORM": "NORM", "NORMAL": "NORM",
               "ZERO": "ZERO", "GUAR": "GUAR", "GUARD": "GUAR"}


Handler = Callable[[list[str]], "str | None"]


class Cell(Protocol):
    """What the simulator needs of a cell model (rig.sim.cell.NaCell). Positive I is anodic."""

    def apply_current(self, current_A: float, dt_s: float) -> float: ...

    def open_circuit(self, dt_s: float) -> float: ...

    def apply_potential(self, potential_V: float, dt_s: float) -> float: ...


@dataclass(frozen=True)
class FaultProfile:
    """Rates (0..1) of wire faults, per received line, drawn from random.Random(seed)."""

    no_reply: float = 0.0  # a query's reply is dropped
    garbled: float = 0.0  # a query's reply is replaced by junk of the same length
    disconnect: float = 0.0  # the connection is closed before the line is executed
    seed: int = 0


class ScpiError(Exception):
    def __init__(self, error: tuple[int, str]) -> None:
        super().__init__(f"{error[0]},{error[1]}")
        self.error = error


class _Close(Exception):
    """A disconnect fault: the handler drops its connection."""


def canonical_header(header: str) -> str:
    """``":SOURce1:CURRent:LEVel:IMMediate"`` -> ``"SOUR:CURR"`` (``"?"`` kept at the end)."""
    h = header.strip().upper()
    query = h.endswith("?")
    h = h.rstrip("?")
    if h.startswith("*"):
        return h + ("?" if query else "")
    nodes = []
    for token in h.lstrip(":").split(":"):
        token = re.sub(r"(?<=[A-Z])1$", "", token)  # SOUR1, SENS1, OUTP1: the only channel
        if token in _KEYWORDS:
            token = _KEYWORDS[token]
        elif token not in _SHORT:
            raise ScpiError(UNDEFINED_HEADER)
        nodes.append(token)
    nodes = [n for n in nodes if n not in _DROPPED]
    if nodes[:1] == ["SENS"]:
        nodes = nodes[1:]  # [:SENSe] is the default root
    if nodes and nodes[-1] == "STAT" and nodes[0] == "OUTP":
        nodes = nodes[:-1]  # :OUTP[:STATe]
    return ":".join(nodes) + ("?" if query else "")


def split_arguments(text: str) -> list[str]:
    """Comma-separated arguments, quotes kept intact: ``'"defbuffer1", READ'`` -> 2 items."""
    out, cur, quoted = [], [], None
    for ch in text:
        if quoted:
            cur.append(ch)
            if ch == quoted:
                quoted = None
        elif ch in "\"'":
            quoted = ch
            cur.append(ch)
        elif ch == ",":
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    last = "".join(cur).strip()
    if last or out:
        out.append(last)
    return out


def split_commands(line: str) -> list[str]:
    """``;``-separated commands of one line (not inside quotes)."""
    out: list[str] = []
    cur: list[str] = []
    quoted: str | None = None
    for ch in line:
        if quoted:
            if ch == quoted:
                quoted = None
        elif ch in "\"'":
            quoted = ch
        elif ch == ";":
            out.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    out.append("".join(cur).strip())
    return [c for c in out if c]


def _number(args: list[str]) -> float:
    if not args or not args[0]:
        raise ScpiError(MISSING_PARAMETER)
    text = args[0].upper()
    if not _NUMBER.match(text):
        raise ScpiError(DATA_TYPE_ERROR)
    value = float(text)
    if not math.isfinite(value):
        raise ScpiError(OUT_OF_RANGE)
    return value


def _boolean(args: list[str]) -> bool:
    if not args or not args[0]:
        raise ScpiError(MISSING_PARAMETER)
    text = args[0].upper()
    if text in ("ON", "1"):
        return True
    if text in ("OFF", "0"):
        return False
    raise ScpiError(ILLEGAL_VALUE)


def _check_boolean(args: list[str]) -> None:
    """A setting the simulator accepts and ignores (autorange: it has one range)."""
    _boolean(args)


def _word(args: list[str], choices: dict[str, str]) -> str:
    if not args or not args[0]:
        raise ScpiError(MISSING_PARAMETER)
    text = args[0].strip("\"'").upper()
    if text not in choices:
        raise ScpiError(ILLEGAL_VALUE)
    return choices[text]


def _e(value: float) -> str:
    return f"{value:.6E}"


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = False  # server_close() joins the handler threads
    block_on_close = True

    def __init__(self, address: tuple[str, int], sim: SimulatedKeithley2450) -> None:
        self.sim = sim
        super().__init__(address, _Handler)


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        sim, sock = self.server.sim, self.request
        if not sim._register(sock):
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = b""
        try:
            while True:
                try:
                    data = sock.recv(4096)
                except OSError:
                    return
                if not data:
                    return
                buffer += data
                while b"\n" in buffer:
                    raw, buffer = buffer.split(b"\n", 1)
                    line = raw.decode("ascii", errors="replace").rstrip("\r")
                    try:
                        reply = sim.handle_line(line)
                    except _Close:
                        return
                    if reply is not None:
                        try:
                            sock.sendall(reply.encode("ascii", errors="replace") + b"\n")
                        except OSError:
                            return
        finally:
            sim._unregister(sock)
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class SimulatedKeithley2450:
    """A 2450 (or a 2400, ``command_set="2400"``) on TCP, sourcing into ``cell`` on ``clock``."""

    def __init__(
        self, cell: Cell, clock: Clock, command_set: str = "2450", host: str = "127.0.0.1",
        port: int = 0, fault: FaultProfile | None = None, serial_number: str = "04412345",
    ) -> None:
        if command_set not in IDN:
            raise ValueError(f"command_set must be one of {sorted(IDN)}, not {command_set!r}")
        self.cell = cell
        self.clock = clock
        self.command_set = command_set
        self.serial_number = serial_number
        self.fault = fault
        self.received: list[str] = []
        self._lock = threading.RLock()
        self._server = _Server((host, port), self)
        # an AF_INET TCPServer's address is (host: str, port: int)
        self.host, self.port = cast(tuple[str, int], self._server.server_address[:2])
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._closed = False
        self._fault_seeded: FaultProfile | None = None
        self._injected: dict[str, int] = {}
        self._rng = random.Random(0)
        self._power_on = clock.now()
        self._reset_state()
        self._cell_t = clock.now()

    @property
    def resource(self) -> str:
        """The VISA resource string: ``TCPIP0::127.0.0.1::<port>::SOCKET``."""
        return f"TCPIP0::{self.host}::{self.port}::SOCKET"

    # --- lifecycle
    def start(self) -> Self:
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                name=f"k2450-sim-{self.port}", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, drop every connection, join the threads. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            connections = list(self._connections)
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
        for sock in connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server.server_close()  # joins the handler threads

    def drop_connections(self) -> int:
        """Reset every open connection, as a pulled LAN cable or a switch reboot does; the
        instrument keeps its state (and keeps sourcing) and accepts new connections."""
        with self._lock:
            connections = list(self._connections)
        for sock in connections:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return len(connections)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _register(self, sock: socket.socket) -> bool:
        with self._lock:
            if self._closed:
                return False
            self._connections.add(sock)
            return True

    def _unregister(self, sock: socket.socket) -> None:
        with self._lock:
            self._connections.discard(sock)

    # --- instrument state
    def _reset_state(self) -> None:
        self._output_on = False
        self.source_function = "CURR"
        self.sense_function = "CURR"
        self.level_A = 0.0
        self.level_V = 0.0
        self.vlim_V = DEFAULT_VLIM_V
        self.ilim_A = DEFAULT_ILIM_A
        self.off_state = "NORM"
        self.nplc = 1.0
        self.limited = False  # in compliance: a voltage source at +-vlim
        self.elements_2400: tuple[str, ...] = _ELEMENTS_2400
        self._errors: deque[tuple[int, str]] = deque()
        self._on_since = self.clock.now()
        self._last = (0.0, 0.0)  # last potential V and current A
        # the trigger model: blocks by number, run lazily up to each event (see _run_model)
        self.blocks: dict[int, tuple[str, tuple[object, ...]]] = {}
        self.model_running = False
        self._pc = 1  # the block the model is at
        self._model_t = self.clock.now()  # the model has run up to this clock time
        self._delay_until: float | None = None  # in a delay block until then
        self._counters: dict[int, int] = {}
        self._trg_detected = False  # the *TRG event detector (cleared when a branch takes it)
        self.model_off_at: float | None = None  # when a source-state block last switched off
        self.buffer: deque[tuple[float, float, bool, bool, float]] = deque(maxlen=BUFFER_SIZE)

    @property
    def output_on(self) -> bool:
        """Whether the output is on now (a running trigger model is brought up to now first)."""
        with self._lock:
            self._run_model(self.clock.now())
            return self._output_on

    # --- the trigger model (the blocks the rig uses; 2450 only)
    def _run_model(self, until: float) -> None:
        """Run the trigger model from where it stands up to clock time ``until``. Blocks take no
        time but a delay; a measure block takes its reading at the model's own time."""
        for _ in range(MODEL_STEPS):
            if not self.model_running:
                return
            if self._delay_until is not None:
                if self._delay_until > until:
                    return
                self._model_t, self._delay_until = self._delay_until, None
                self._pc += 1
                continue
            block = self.blocks.get(self._pc)
            if block is None:  # past the last block: the model ends
                self.model_running = False
                return
            kind, args = block
            if kind == "MEAS":
                self._measure_at(self._model_t)
                self._pc += 1
            elif kind == "DEL":
                self._delay_until = self._model_t + cast(float, args[0])
            elif kind == "EVEN":
                if self._trg_detected:
                    self._trg_detected = False
                    self._pc = cast(int, args[1])
                else:
                    self._pc += 1
            elif kind == "COUN":
                count = self._counters.get(self._pc, 0) + 1
                self._counters[self._pc] = count
                self._pc = cast(int, args[1]) if count < cast(int, args[0]) else self._pc + 1
            elif kind == "RES":
                self._counters[cast(int, args[0])] = 0
                self._pc += 1
            elif kind == "ALW":
                self._pc = cast(int, args[0])
            elif kind == "SOUR":
                on = cast(bool, args[0])
                if on != self._output_on:
                    self._advance(at=self._model_t)
                    self._output_on, self.limited = on, False
                    if on:
                        self._on_since = self._model_t
                    else:
                        self.model_off_at = self._model_t
                self._pc += 1

    def _measure_at(self, t: float) -> None:
        e, i = self._advance(at=t)
        self.buffer.append((e, i, self.limited, self._output_on, t))

    @property
    def errors(self) -> list[tuple[int, str]]:
        """The error queue as it stands (oldest first), without draining it."""
        with self._lock:
            return list(self._errors)

    def _push_error(self, error: tuple[int, str]) -> None:
        if len(self._errors) >= ERROR_QUEUE_SIZE - 1:
            if len(self._errors) == ERROR_QUEUE_SIZE - 1:
                self._errors.append(QUEUE_OVERFLOW)
            return
        self._errors.append(error)

    # --- the cell
    def _advance(self, at: float | None = None) -> tuple[float, float]:
        """Bring the cell up to ``at`` (default clock.now()) with what drove it since the last
        event."""
        now = self.clock.now() if at is None else at
        dt = max(0.0, now - self._cell_t)
        self._cell_t = max(now, self._cell_t)
        if self._output_on and self.source_function == "VOLT":
            e, i = self._at_potential(dt)
            self._last = (e, i)
            return e, i
        sourcing = self._output_on and self.source_function == "CURR" and self.level_A != 0.0
        if not sourcing:
            self.limited = False
            e, i = self.cell.open_circuit(dt), 0.0
        elif self.limited:
            e = math.copysign(self.vlim_V, self._last[0] or self.level_A)
            i = self.cell.apply_potential(e, dt)
            if abs(i) >= abs(self.level_A) or i * self.level_A <= 0:
                self.limited = False  # the cell takes the full current again
                e, i = self._at_current(0.0)
        else:
            e, i = self._at_current(dt)
        self._last = (e, i)
        return e, i

    def _at_potential(self, dt: float) -> tuple[float, float]:
        """A voltage source with a current limit: beyond it, a current source at +-ilim until
        the cell would again take less than the limit at the set level."""
        if self.limited:
            i = math.copysign(self.ilim_A, self._last[1] or 1.0)
            e = self.cell.apply_current(i, dt)
            if (e - self.level_V) * i >= 0:
                self.limited = False  # at the limit current the cell reaches the level again
            return e, i
        i = self.cell.apply_potential(self.level_V, dt)
        if abs(i) > self.ilim_A:
            self.limited = True
            i = math.copysign(self.ilim_A, i)
        return self.level_V, i

    def _at_current(self, dt: float) -> tuple[float, float]:
        e = self.cell.apply_current(self.level_A, dt)
        if abs(e) > self.vlim_V:
            self.limited = True
            e = math.copysign(self.vlim_V, e)
        return e, self.level_A

    # --- the wire
    def handle_line(self, line: str) -> str | None:
        """Execute one received line; the reply line (without ``\\n``) or None."""
        with self._lock:
            self.received.append(line)
            self._run_model(self.clock.now())  # what the instrument did on its own meanwhile
            fate = self._fate()
            if fate == "disconnect":
                self._count_fault(fate)
                raise _Close()
            replies = []
            for command in split_commands(line):
                try:
                    reply = self._execute(command)
                except ScpiError as exc:
                    self._push_error(exc.error)
                    continue
                if reply is not None:
                    replies.append(reply)
            if not replies:
                return None
            reply = ";".join(replies)
            if fate != "ok":
                self._count_fault(fate)  # only a reply can be dropped or garbled
            if fate == "no_reply":
                return None
            if fate == "garbled":
                return "".join(self._rng.choice("#%&@!~^?*<>|") for _ in reply)
            return reply

    @property
    def faults_injected(self) -> dict[str, int]:
        """How many of each wire fault this simulator has put on the wire so far (a drawn
        no_reply or garbled fate on a line with no reply injects nothing and is not counted)."""
        with self._lock:
            return dict(self._injected)

    def _count_fault(self, fate: str) -> None:
        self._injected[fate] = self._injected.get(fate, 0) + 1

    def _fate(self) -> str:
        f = self.fault
        if f is None:
            return "ok"
        if f is not self._fault_seeded:
            self._rng = random.Random(f.seed)
            self._fault_seeded = f
        r = self._rng.random()
        for fate, rate in (("disconnect", f.disconnect), ("no_reply", f.no_reply),
                           ("garbled", f.garbled)):
            if r < rate:
                return fate
            r -= rate
        return "ok"

    def _execute(self, command: str) -> str | None:
        header, _, rest = command.partition(" ")
        key = canonical_header(header)
        args = split_arguments(rest)
        handler = self._handlers().get(key)
        if handler is None:
            raise ScpiError(UNDEFINED_HEADER)
        return handler(args)

    def _handlers(self) -> dict[str, Handler]:
        common: dict[str, Handler] = {
            "*IDN?": lambda a: IDN[self.command_set].format(serial=self.serial_number),
            "*RST": self._rst,
            "*CLS": lambda a: self._errors.clear(),
            "*OPC?": lambda a: "1",
            "*WAI": lambda a: None,
            "SYST:ERR?": self._error_query,
            "SOUR:FUNC": self._set_function,
            "SOUR:FUNC?": lambda a: self.source_function,
            "SOUR:CURR": self._set_level,
            "SOUR:CURR?": lambda a: _e(self.level_A),
            "SOUR:CURR:RANG:AUTO": _check_boolean,
            "SOUR:VOLT": self._set_voltage,
            "SOUR:VOLT?": lambda a: _e(self.level_V),
            "SOUR:VOLT:RANG:AUTO": _check_boolean,
            "CURR:NPLC": self._set_nplc,
            "CURR:NPLC?": lambda a: _e(self.nplc),
            "CURR:RANG:AUTO": _check_boolean,
            "FUNC": self._set_sense,
            "FUNC?": lambda a: f'"{self.sense_function}:DC"',
            "VOLT:NPLC": self._set_nplc,
            "VOLT:NPLC?": lambda a: _e(self.nplc),
            "VOLT:RANG:AUTO": _check_boolean,
            "OUTP": self._set_output,
            "OUTP?": lambda a: "1" if self._output_on else "0",
            "READ?": self._read,
        }
        if self.command_set == "2450":
            common.update({
                "*TRG": self._trigger_event,
                "TRIG:LOAD": self._load_model,
                "TRIG:BLOC:MEAS": lambda a: self._define("MEAS", a, 1, ()),
                "TRIG:BLOC:DEL:CONS": lambda a: self._define("DEL", a, 2, ("delay",)),
                "TRIG:BLOC:BRAN:EVEN": lambda a: self._define("EVEN", a, 3, ("event", "block")),
                "TRIG:BLOC:BRAN:COUN": lambda a: self._define("COUN", a, 3, ("count", "block")),
                "TRIG:BLOC:BRAN:COUN:RES": lambda a: self._define("RES", a, 2, ("block",)),
                "TRIG:BLOC:BRAN:ALW": lambda a: self._define("ALW", a, 2, ("block",)),
                "TRIG:BLOC:SOUR:STAT": lambda a: self._define("SOUR", a, 2, ("state",)),
                "TRIG:STAT?": self._model_state,
                "INIT": self._initiate,
                "ABOR": self._abort_model,
                "FETC?": self._fetch,
                "TRAC:ACT?": lambda a: str(len(self.buffer)),
                "SOUR:CURR:VLIM": self._set_vlim,
                "SOUR:CURR:VLIM?": lambda a: _e(self.vlim_V),
                "SOUR:CURR:VLIM:TRIP?": lambda a: "1" if self.limited else "0",
                "SOUR:VOLT:ILIM": self._set_ilim,
                "SOUR:VOLT:ILIM?": lambda a: _e(self.ilim_A),
                "SOUR:VOLT:ILIM:TRIP?": lambda a: "1" if self.limited else "0",
                "OUTP:CURR:SMOD": self._set_off_state,
                "OUTP:CURR:SMOD?": lambda a: self.off_state,
            })
        else:
            common.update({
                "VOLT:PROT": self._set_vlim,
                "VOLT:PROT?": lambda a: _e(self.vlim_V),
                "CURR:PROT": self._set_ilim,
                "CURR:PROT?": lambda a: _e(self.ilim_A),
                "OUTP:SMOD": self._set_off_state,
                "OUTP:SMOD?": lambda a: self.off_state,
                "FORM:ELEM": self._set_elements,
                "FORM:ELEM?": lambda a: ",".join(self.elements_2400),
            })
        return common

    # --- commands
    def _rst(self, args: list[str]) -> None:
        self._advance()
        errors = self._errors
        self._reset_state()
        self._errors = errors  # *RST leaves the error queue alone

    def _error_query(self, args: list[str]) -> str:
        code, message = self._errors.popleft() if self._errors else (0, "No error")
        return f'{code},"{message}"'

    def _set_function(self, args: list[str]) -> None:
        value = _word(args, {"CURR": "CURR", "CURRENT": "CURR", "VOLT": "VOLT",
                             "VOLTAGE": "VOLT"})
        if value != self.source_function:
            self._advance()
            self.source_function = value
            self.limited = False

    def _set_level(self, args: list[str]) -> None:
        value = _number(args)
        if abs(value) > MAX_CURRENT_A:
            raise ScpiError(OUT_OF_RANGE)
        self._advance()
        self.level_A = value
        self.limited = False

    def _set_voltage(self, args: list[str]) -> None:
        value = _number(args)
        if abs(value) > MAX_VOLTAGE_V:
            raise ScpiError(OUT_OF_RANGE)
        self._advance()
        self.level_V = value
        if self.source_function == "VOLT":
            self.limited = False

    def _set_ilim(self, args: list[str]) -> None:
        value = abs(_number(args))
        if not ILIM_RANGE_A[0] <= value <= ILIM_RANGE_A[1]:
            raise ScpiError(OUT_OF_RANGE)
        self._advance()
        self.ilim_A = value

    def _set_vlim(self, args: list[str]) -> None:
        value = _number(args)
        if not VLIM_RANGE_V[0] <= value <= VLIM_RANGE_V[1]:
            raise ScpiError(OUT_OF_RANGE)
        self._advance()
        self.vlim_V = value

    def _set_sense(self, args: list[str]) -> None:
        self.sense_function = _word(args, {"VOLT": "VOLT", "VOLT:DC": "VOLT", "CURR": "CURR",
                                           "CURR:DC": "CURR", "VOLTAGE": "VOLT",
                                           "CURRENT": "CURR"})

    def _set_nplc(self, args: list[str]) -> None:
        value = _number(args)
        if not 0.01 <= value <= 10:
            raise ScpiError(OUT_OF_RANGE)
        self.nplc = value

    def _set_output(self, args: list[str]) -> None:
        on = _boolean(args)
        if on != self._output_on:
            self._advance()
            self._output_on = on
            self.limited = False
            if on:
                self._on_since = self.clock.now()

    def _set_off_state(self, args: list[str]) -> None:
        self.off_state = _word(args, _OFF_STATES)

    def _set_elements(self, args: list[str]) -> None:
        if not args or not all(args):
            raise ScpiError(MISSING_PARAMETER)
        chosen = {_word([a], _ELEMENT_NAMES_2400) for a in args}
        self.elements_2400 = tuple(e for e in _ELEMENTS_2400 if e in chosen)

    def _read(self, args: list[str]) -> str:
        if self.model_running:
            raise ScpiError(SETTINGS_CONFLICT)
        e, i = self._advance()
        if self.command_set == "2400":
            if args:
                raise ScpiError(ILLEGAL_VALUE)
            return self._reading_2400(e, i)
        return self._reading_2450(e, i, args)

    def _reading_2400(self, e: float, i: float) -> str:
        values = {"VOLT": e, "CURR": i, "RES": NOT_MEASURED,
                  "TIME": self.clock.now() - self._power_on,
                  "STAT": float(STAT_2400_COMPLIANCE if self.limited else 0)}
        return ",".join(f"{values[k]:+.6E}" for k in self.elements_2400)

    def _reading_2450(self, e: float, i: float, args: list[str], limited: bool | None = None,
                      on: bool | None = None, t: float | None = None) -> str:
        if args and args[0].strip("\"'").lower() not in ("defbuffer1", "defbuffer2"):
            raise ScpiError(ILLEGAL_VALUE)
        elements = [_word([a], _ELEMENTS_2450) for a in args[1:]] or ["READ"]
        limited = self.limited if limited is None else limited
        on = self._output_on if on is None else on
        t = self.clock.now() if t is None else t
        measured = (e, "V") if self.sense_function == "VOLT" else (i, "A")
        sourced = (i, "A") if self.source_function == "CURR" else (e, "V")
        sourstat = (STAT_2450_LIMIT if limited else 0) | (STAT_2450_OUTPUT if on else 0)
        values = {
            "READ": _e(measured[0]), "SOUR": _e(sourced[0]), "SOURSTAT": _e(sourstat),
            "STAT": _e(0), "REL": _e(t - self._on_since),
            "UNIT": "Volt DC" if measured[1] == "V" else "Amp DC",
            "SOURUNIT": "Amp DC" if sourced[1] == "A" else "Volt DC",
        }
        return ",".join(values[k] for k in elements)

    # --- trigger model commands (2450)
    def _trigger_event(self, args: list[str]) -> None:
        self._trg_detected = True  # *TRG: the command event (a second one before a check: overrun)

    def _load_model(self, args: list[str]) -> None:
        if _word(args, {"EMPTY": "EMPTY"}) != "EMPTY":
            raise ScpiError(ILLEGAL_VALUE)
        if self.model_running:
            raise ScpiError(SETTINGS_CONFLICT)
        self.blocks = {}

    def _define(self, kind: str, args: list[str], n_args: int, what: tuple[str, ...]) -> None:
        """One block: ``<blockNumber>, <parameters...>`` (the measure block takes an optional
        buffer name, defbuffer1 only, and count 1)."""
        if self.model_running:
            raise ScpiError(SETTINGS_CONFLICT)
        if not args or not args[0]:
            raise ScpiError(MISSING_PARAMETER)
        number = _number(args[:1])
        if number != int(number) or not 1 <= number <= 63:
            raise ScpiError(OUT_OF_RANGE)
        rest = args[1:]
        params: list[object] = []
        if kind == "MEAS":
            if rest and rest[0].strip("\"'").lower() != "defbuffer1":
                raise ScpiError(ILLEGAL_VALUE)
            if len(rest) > 1 and _number(rest[1:2]) != 1:
                raise ScpiError(ILLEGAL_VALUE)  # one reading per block here
        else:
            if len(rest) < n_args - 1:
                raise ScpiError(MISSING_PARAMETER)
            for name, text in zip(what, rest):
                if name == "delay":
                    value = _number([text])
                    if not (value == 0 or 167e-9 <= value <= MAX_DELAY_S):
                        raise ScpiError(OUT_OF_RANGE)
                    params.append(value)
                elif name == "event":
                    params.append(_word([text], _TRIGGER_EVENTS))
                elif name == "state":
                    params.append(_boolean([text]))
                else:  # a count or a block number
                    value = _number([text])
                    if value != int(value) or value < 1:
                        raise ScpiError(OUT_OF_RANGE)
                    params.append(int(value))
        self.blocks[int(number)] = (kind, tuple(params))

    def _initiate(self, args: list[str]) -> None:
        if self.model_running:
            raise ScpiError(SETTINGS_CONFLICT)
        if not self.blocks:
            raise ScpiError(SETTINGS_CONFLICT)
        self.model_running = True
        self._pc, self._model_t, self._delay_until = 1, self.clock.now(), None
        self._counters = {}
        self._trg_detected = False
        self._run_model(self.clock.now())

    def _abort_model(self, args: list[str]) -> None:
        """:ABORt: the model stops where it is; the output stays as it is."""
        self.model_running = False
        self._delay_until = None

    def _model_state(self, args: list[str]) -> str:
        state = "RUNNING" if self.model_running else "IDLE"
        return f"{state};{state};{self._pc}"

    def _fetch(self, args: list[str]) -> str:
        """:FETCh? ["defbuffer1"[, <elements>]]: the latest reading in the buffer."""
        if not self.buffer:
            raise ScpiError(NO_DATA)
        e, i, limited, on, t = self.buffer[-1]
        return self._reading_2450(e, i, args, limited=limited, on=on, t=t)
