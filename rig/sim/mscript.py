"""The MethodSCRIPT language the simulated EmStat4 runs: script lines -> a compiled program.

Written from PalmSens's public MethodSCRIPT material (the example scripts of
PalmSens/MethodSCRIPT_Examples and the error table of PalmSens/palmsens-sdk; see
docs/methodscript.md), not from their code. The compiler is strict: what it accepts, a real
EmStat4 accepts; what it refuses gets the vendor's error code, the line and the column
(``e!4001: Line 3, Col 1``). The runtime is ``rig.sim.emstat``.

The subset: ``#`` comments (whole lines and the rest of a line), ``var``, ``store_var NAME VALUE
TYPE``, numbers with an SI prefix or an ``i`` (integer), variables wherever a number goes,
``set_pgstat_chan``/``_mode``, ``set_max_bandwidth``, ``set_range``/``set_autoranging`` for
``ab ba da db``, ``set_range_minmax``, ``set_e``/``set_i``, ``cell_on``/``cell_off``,
``timer_start``/``timer_get``, ``wait``, ``add_var``/``sub_var``/``mul_var``/``div_var``/
``copy_var``, ``send_string "text"``, ``loop``/``endloop``/``breakloop``,
``if``/``elseif``/``else``/``endif``, ``pck_start``/``pck_add``/``pck_end``, ``on_finished:``
and the loops ``meas_loop_cp ca ocp eis geis lsv cv`` (``cv`` takes ``nscans(n)``).
"""

from __future__ import annotations

import functools
import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

# ---- the vendor's error codes (palmsens-sdk, MethodSCRIPT manual appendix A) -----------------
ERR_UNSPECIFIED = 0x0001          # an unspecified error has occurred
ERR_INVALID_VARTYPE = 0x0002      # an invalid VarType has been used
ERR_UNKNOWN_COMMAND = 0x0003      # the (host) command was not recognized
ERR_COMM_MODE = 0x0006            # communication mode invalid (Z with nothing running, e busy)
ERR_NAN = 0x0010                  # a variable has become NaN or inf
ERR_DIVIDE_BY_ZERO = 0x0028       # variable divided by zero
ERR_PGSTAT_MODE = 0x0021          # the specified PGStat mode is not supported
ERR_WRONG_MODE = 0x0023           # command is invalid for the selected PGStat mode
ERR_SCRIPT_UNKNOWN = 0x4001       # the script command is unknown
ERR_UNEXPECTED_CHAR = 0x4004      # an unexpected character was encountered
ERR_OPTIONAL_ARG = 0x4008         # this optional argument is not valid for this command
ERR_NESTED_MEAS = 0x400B          # measurement loops cannot be placed inside other ones
ERR_SITUATION = 0x400C            # command not supported in current situation
ERR_SCOPE = 0x400E                # the command had an invalid effect on scope depth
ERR_UNEXPECTED_END = 0x4018       # the script has ended unexpectedly
ERR_PCK_SEQUENCE = 0x401B         # the packet sequence is called wrong
ERR_TIMEOUT = 0x4020              # a timeout has occurred for one of the script commands
ERR_VAR_EXISTS = 0x4026           # the variable already exists when declared
ERR_VAR_NAME = 0x402B             # a variable name is a-z, then a-z, 0-9 and _
ERR_LITERAL = 0x4039              # the literal argument was not correctly formed
ERR_MUST_BE_POSITIVE = 0x4204     # argument value must be positive for this command
ERR_OUT_OF_BOUNDS = 0x4205        # argument value is outside the allowed bounds
ERR_EXTRA_ARGUMENT = 0x420A       # an unexpected, additional argument was provided
ERR_UNDECLARED = 0x420B           # argument variable is not declared

# ---- the instrument: an EmStat4 LR ------------------------------------------------------------
MAX_POTENTIAL_V = 3.0
MAX_CURRENT_A = 0.03
MAX_FREQUENCY_HZ = 200e3
MIN_FREQUENCY_HZ = 1e-5
MAX_EIS_POINTS = 1000
MAX_SWEEP_POINTS = 1_000_000
GALVANOSTATIC = 6
POTENTIOSTATIC_MODES = (2, 3, 4)
PGSTAT_MODES = (0, 2, 3, 4, 6)
# Ranges as (nominal full scale, metadata index): the EmStat4's indices (vendor mscript.py);
# the top range measures up to the instrument's limit (10 mA range: 30 mA, 1 V range: 3 V).
CURRENT_RANGES = ((1e-9, 3), (10e-9, 6), (100e-9, 9), (1e-6, 12), (10e-6, 15), (100e-6, 18),
                  (1e-3, 21), (10e-3, 24))
POTENTIAL_RANGES = ((50e-3, 2), (100e-3, 3), (200e-3, 4), (500e-3, 5), (1.0, 6))
RANGE_TABLES = {"ba": CURRENT_RANGES, "db": CURRENT_RANGES, "ab": POTENTIAL_RANGES,
                "da": POTENTIAL_RANGES}
RANGE_LIMITS = {"ba": MAX_CURRENT_A, "db": MAX_CURRENT_A, "ab": MAX_POTENTIAL_V,
                "da": MAX_POTENTIAL_V}


def full_scale(vtype: str, index: int) -> float:
    """What range ``index`` of ``vtype`` measures at most."""
    table = RANGE_TABLES[vtype]
    return RANGE_LIMITS[vtype] if index == len(table) - 1 else table[index][0]


def range_for(vtype: str, value: float) -> int:
    """The smallest range of ``vtype`` that holds ``value`` (the top one beyond it)."""
    table = RANGE_TABLES[vtype]
    for k, (nominal, _) in enumerate(table):
        if abs(value) <= nominal * (1 + 1e-9):
            return k
    return len(table) - 1


# ---- what each loop stores in its variables (the vendor's examples) ----------------------------
# CA: the set potential and the measured current; CP: the measured potential and the set
# current; EIS/GEIS: the applied frequency and Z', Z''; LSV/CV: set potential, measured current.
LOOP_TYPES: dict[str, tuple[str, ...]] = {
    "ca": ("da", "ba"), "cp": ("ab", "db"), "ocp": ("ab",), "eis": ("dc", "cc", "cd"),
    "geis": ("dc", "cc", "cd"), "lsv": ("da", "ba"), "cv": ("da", "ba"),
}
LOOP_NUMBERS = {"ca": 3, "cp": 3, "ocp": 2, "eis": 5, "geis": 5, "lsv": 4, "cv": 5}
# the technique id after `M` (MethodSCRIPT manual, table of measurement loop ids)
LOOP_IDS = {"lsv": 0x0000, "cv": 0x0005, "ca": 0x0007, "cp": 0x000A, "ocp": 0x000B,
            "eis": 0x000D, "geis": 0x000E}
MEASURED = frozenset({"ab", "ba", "cc", "cd"})  # variables that carry status and range metadata

VAR_TYPES = frozenset((
    "aa ab ac ad ae af ag ah ai as at au av aw ax ay az ba bb ca cb cc cd ce cf cg ch ci cj ck "
    "cl cm cn co cp cq cr cs ct cu cv cw cx cy cz da db dc dd ea eb ec ed ee ef eg ha hb hc hd "
    "ia ib ic id ja jb jc jd").split())
SI = {"a": 1e-18, "f": 1e-15, "p": 1e-12, "n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1.0, "i": 1.0,
      "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
_LITERAL = re.compile(r"([+-]?\d+)([afpnumkMGTPEi]?)")
_HEX_LITERAL = re.compile(r"0x([0-9A-Fa-f]+)i?|0b([01]+)i?")
_VAR_NAME = re.compile(r"[a-z][a-z0-9_]*")
_OPTIONAL = re.compile(r"([a-z_]+)\(([^()]*)\)")
_TOKEN = re.compile(r'"[^"]*"|\S+')
COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, "<": operator.lt, ">=": operator.ge, "<=": operator.le,
    "==": operator.eq, "!=": operator.ne,
}
ARITH: dict[str, Callable[[float, float], float]] = {
    "add_var": operator.add, "sub_var": operator.sub, "mul_var": operator.mul,
    "div_var": operator.truediv,
}

# ---- the compiled program ------------------------------------------------------------------------
# An operand is (slot, constant): slot -1 means the constant. Instructions are tuples, opcode
# first. Jumps hold an index into the same list (main, on_finished or a loop body).
(OP_MODE, OP_CELL, OP_TIMER_START, OP_TIMER_GET, OP_SET_I, OP_SET_E, OP_STORE, OP_ARITH, OP_COPY,
 OP_JUMP, OP_UNLESS, OP_MEAS, OP_WAIT, OP_TEXT, OP_OUT, OP_RANGE, OP_PCK, OP_BREAK,
 OP_BODY_TIMER) = range(19)
Operand = tuple[int, float]


class ScriptError(Exception):
    """A script the instrument refuses; ``code`` goes on the wire as ``!XXXX``."""

    def __init__(self, code: int, message: str, line: int = 0, col: int = 0) -> None:
        super().__init__(f"!{code:04X}: {message}")
        self.code, self.message, self.line, self.col = code, message, line, col

    def wire(self, prefix: str = "e") -> str:
        """The reply line: ``e!4001: Line 2, Col 1`` (runtime errors: ``!4205: Line 7``)."""
        where = f": Line {self.line}, Col {self.col}" if self.col else (
            f": Line {self.line}" if self.line else "")
        return f"{prefix}!{self.code:04X}{where}"


@dataclass
class LoopTemplate:
    """A measurement loop as written: its output slots and its argument operands."""

    kind: str
    slots: tuple[int, ...]
    args: tuple[Operand, ...]
    line: int
    nscans: int = 1
    body: list[tuple[Any, ...]] = field(default_factory=list)


@dataclass
class Program:
    main: list[tuple[Any, ...]]
    finished: list[tuple[Any, ...]]
    n_registers: int
    lines: Sequence[str] = ()


@dataclass
class _Block:
    kind: str                      # "if", "loop" or "meas"
    start: int = 0                 # loop: index of its condition
    pending: int | None = None     # if: the jump to the next branch, to patch
    exits: list[int] = field(default_factory=list)  # jumps to the end, to patch
    template: LoopTemplate | None = None
    code: list[Any] | None = None  # the list this block was opened in


class Compiler:
    """Script lines -> Program, or ScriptError with the line and column. The pgstat mode is
    tracked statically (from the mode the instrument is in when the script arrives)."""

    def __init__(self, mode: int) -> None:
        self.mode = mode
        self.slots: dict[str, int] = {}
        self.types: dict[int, str] = {}
        self.main: list[Any] = []
        self.finished: list[Any] = []
        self.code: list[Any] = self.main
        self.in_finished = False
        self.blocks: list[_Block] = []
        self.pck: list[tuple[str, int]] | None = None
        self.line = 0
        self.cols: list[int] = []

    # ---- driving
    def compile(self, lines: Sequence[str]) -> Program:
        for number, raw in enumerate(lines, 1):
            self.line = number
            text = _strip_comment(raw)
            tokens = [(m.group(), m.start() + 1) for m in _TOKEN.finditer(text)]
            if not tokens:
                continue
            self.cols = [c for _, c in tokens]
            try:
                self.statement(tokens[0][0], [t for t, _ in tokens[1:]])
            except ScriptError as exc:
                if not exc.line:
                    exc.line, exc.col = number, exc.col or self.cols[0]
                raise
        if self.blocks or self.pck is not None:
            raise ScriptError(ERR_UNEXPECTED_END, "script ends inside a block or a package",
                              len(lines) + 1, 1)
        return Program([tuple(op) for op in self.main], [tuple(op) for op in self.finished],
                       len(self.slots) + 1, list(lines))

    def fail(self, code: int, message: str, arg: int | None = None) -> ScriptError:
        k = 0 if arg is None else arg + 1
        col = self.cols[k] if k < len(self.cols) else self.cols[0]
        return ScriptError(code, message, self.line, col)

    def statement(self, name: str, args: list[str]) -> None:
        handler = _COMMANDS.get(name)
        if handler is None:
            if name.startswith("meas_loop_") and name[10:] in LOOP_TYPES:
                self.c_meas(name[10:], args)
                return
            raise self.fail(ERR_SCRIPT_UNKNOWN, f"unknown command {name!r}")
        handler(self, args)

    # ---- helpers
    def emit(self, op: list[Any] | tuple[Any, ...]) -> int:
        self.code.append(op)
        return len(self.code) - 1

    def nargs(self, args: list[str], n: int, optional: int = 0) -> None:
        if len(args) < n:
            raise self.fail(ERR_UNEXPECTED_CHAR, f"expected {n} arguments, got {len(args)}")
        if len(args) > n + optional:
            raise self.fail(ERR_EXTRA_ARGUMENT, f"unexpected argument {args[n]!r}", n)

    def var(self, args: list[str], k: int, typed: bool = False) -> int:
        name = args[k]
        slot = self.slots.get(name)
        if slot is None:
            if _VAR_NAME.fullmatch(name):
                raise self.fail(ERR_UNDECLARED, f"variable {name!r} not declared", k)
            raise self.fail(ERR_VAR_NAME, f"not a variable: {name!r}", k)
        if typed and slot not in self.types:
            raise self.fail(ERR_UNDECLARED, f"variable {name!r} has no value yet", k)
        return slot

    def operand(self, args: list[str], k: int) -> Operand:
        """A literal, or a variable that has a value."""
        text = args[k]
        if text[:1].isalpha() and not _HEX_LITERAL.fullmatch(text):
            return self.var(args, k, typed=True), 0.0
        return -1, self.literal(args, k)

    def literal(self, args: list[str], k: int) -> float:
        value = parse_literal(args[k])
        if value is None:
            raise self.fail(ERR_LITERAL, f"not a MethodSCRIPT number: {args[k]!r}", k)
        return value

    def bounded(self, args: list[str], k: int, low: float, high: float) -> Operand:
        op = self.operand(args, k)
        if op[0] < 0 and not low <= op[1] <= high:
            raise self.fail(ERR_OUT_OF_BOUNDS, f"{args[k]} outside [{low:g}, {high:g}]", k)
        return op

    def vartype(self, args: list[str], k: int, allowed: Sequence[str] = ()) -> str:
        vt = args[k]
        if vt not in VAR_TYPES or (allowed and vt not in allowed):
            raise self.fail(ERR_INVALID_VARTYPE, f"variable type {vt!r} not valid here", k)
        return vt

    def innermost_loop(self) -> _Block | None:
        for block in reversed(self.blocks):
            if block.kind in ("loop", "meas"):
                return block
        return None

    # ---- declarations and arithmetic
    def c_var(self, args: list[str]) -> None:
        self.nargs(args, 1)
        name = args[0]
        if not _VAR_NAME.fullmatch(name) or name in COMPARE:
            raise self.fail(ERR_VAR_NAME, f"bad variable name {name!r}", 0)
        if name in self.slots:
            raise self.fail(ERR_VAR_EXISTS, f"variable {name!r} already declared", 0)
        self.slots[name] = len(self.slots) + 1

    def c_store_var(self, args: list[str]) -> None:
        self.nargs(args, 3)
        slot = self.var(args, 0)
        value = self.literal(args, 1)
        self.types[slot] = self.vartype(args, 2)
        self.emit((OP_STORE, slot, value))

    def c_copy_var(self, args: list[str]) -> None:
        self.nargs(args, 2)
        src, dst = self.var(args, 0, typed=True), self.var(args, 1)
        self.types[dst] = self.types[src]
        self.emit((OP_COPY, src, dst))

    def c_arith(self, name: str, args: list[str]) -> None:
        self.nargs(args, 2)
        slot = self.var(args, 0, typed=True)
        self.emit((OP_ARITH, ARITH[name], slot, self.operand(args, 1)))

    def c_wait(self, args: list[str]) -> None:
        self.nargs(args, 1)
        self.meas_forbidden("wait")
        self.emit((OP_WAIT, self.bounded(args, 0, 0.0, 1e9)))

    def c_send_string(self, args: list[str]) -> None:
        self.nargs(args, 1)
        text = args[0]
        if len(text) < 2 or text[0] != '"' or text[-1] != '"':
            raise self.fail(ERR_LITERAL, f"send_string takes a quoted string, not {text!r}", 0)
        self.emit((OP_TEXT, "T" + text[1:-1]))

    # ---- the instrument's settings
    def c_chan(self, args: list[str]) -> None:
        self.nargs(args, 1)
        if self.literal(args, 0) != 0:
            raise self.fail(ERR_OUT_OF_BOUNDS, "the EmStat4 has channel 0 only", 0)

    def c_mode(self, args: list[str]) -> None:
        self.nargs(args, 1)
        self.meas_forbidden("set_pgstat_mode")
        mode = self.literal(args, 0)
        if mode not in PGSTAT_MODES:
            raise self.fail(ERR_PGSTAT_MODE, f"pgstat mode {args[0]}", 0)
        self.mode = int(mode)
        self.emit((OP_MODE, self.mode))

    def c_bandwidth(self, args: list[str]) -> None:
        self.nargs(args, 1)
        self.bounded(args, 0, 1e-3, 1e7)

    def c_range(self, args: list[str]) -> None:
        self.nargs(args, 2)
        vt = self.vartype(args, 0, ("ab", "ba", "db"))
        self.emit((OP_RANGE, vt, self.positive(args, 1), None))

    def c_autoranging(self, args: list[str]) -> None:
        self.nargs(args, 3)
        vt = self.vartype(args, 0, ("ab", "ba", "db"))
        self.emit((OP_RANGE, vt, self.positive(args, 1), self.positive(args, 2)))

    def c_range_minmax(self, args: list[str]) -> None:
        self.nargs(args, 3)
        vt = self.vartype(args, 0, ("da", "db"))
        limit = RANGE_LIMITS[vt]
        self.bounded(args, 1, -limit, limit)
        self.bounded(args, 2, -limit, limit)

    def positive(self, args: list[str], k: int) -> Operand:
        op = self.operand(args, k)
        if op[0] < 0 and not op[1] > 0:
            raise self.fail(ERR_MUST_BE_POSITIVE, f"a range must be positive, not {args[k]}", k)
        return op

    def c_set_e(self, args: list[str]) -> None:
        self.nargs(args, 1)
        self.emit((OP_SET_E, self.bounded(args, 0, -MAX_POTENTIAL_V, MAX_POTENTIAL_V)))

    def c_set_i(self, args: list[str]) -> None:
        self.nargs(args, 1)
        self.emit((OP_SET_I, self.bounded(args, 0, -MAX_CURRENT_A, MAX_CURRENT_A)))

    def c_cell_on(self, args: list[str]) -> None:
        self.nargs(args, 0)
        if self.mode == 0:
            raise self.fail(ERR_WRONG_MODE, "cell_on in pgstat mode 0")
        self.emit((OP_CELL, True))

    def c_cell_off(self, args: list[str]) -> None:
        self.nargs(args, 0)
        self.emit((OP_CELL, False))

    def c_timer_start(self, args: list[str]) -> None:
        self.nargs(args, 0)
        self.emit((OP_TIMER_START,))

    def c_timer_get(self, args: list[str]) -> None:
        self.nargs(args, 1)
        slot = self.var(args, 0)
        self.types[slot] = "eb"
        in_meas = any(b.kind == "meas" for b in self.blocks)
        self.emit((OP_BODY_TIMER if in_meas else OP_TIMER_GET, slot))

    def c_on_finished(self, args: list[str]) -> None:
        self.nargs(args, 0)
        if self.in_finished or self.blocks:
            raise self.fail(ERR_SCOPE, "on_finished: only once, outside every block")
        self.in_finished = True
        self.code = self.finished

    # ---- packages
    def c_pck_start(self, args: list[str]) -> None:
        self.nargs(args, 0)
        if self.pck is not None:
            raise self.fail(ERR_PCK_SEQUENCE, "pck_start inside a package")
        self.pck = []

    def c_pck_add(self, args: list[str]) -> None:
        self.nargs(args, 1)
        if self.pck is None:
            raise self.fail(ERR_PCK_SEQUENCE, "pck_add outside pck_start/pck_end")
        slot = self.var(args, 0, typed=True)
        self.pck.append((self.types[slot], slot))

    def c_pck_end(self, args: list[str]) -> None:
        self.nargs(args, 0)
        if not self.pck:
            raise self.fail(ERR_PCK_SEQUENCE, "pck_end without a started, non-empty package")
        self.emit((OP_PCK, tuple(self.pck)))
        self.pck = None

    # ---- control flow
    def condition(self, args: list[str]) -> list[Any]:
        self.nargs(args, 3)
        compare = COMPARE.get(args[1])
        if compare is None:
            raise self.fail(ERR_UNEXPECTED_CHAR, f"comparison {args[1]!r}", 1)
        left, right = self.operand(args, 0), self.operand(args, 2)
        return [OP_UNLESS, left[0], left[1], compare, right[0], right[1], -1]

    def c_if(self, args: list[str]) -> None:
        pending = self.emit(self.condition(args))
        self.blocks.append(_Block("if", pending=pending, code=self.code))

    def c_elseif(self, args: list[str]) -> None:
        block = self.open_if("elseif")
        block.exits.append(self.emit([OP_JUMP, -1]))
        self.patch(block.pending)
        block.pending = self.emit(self.condition(args))

    def c_else(self, args: list[str]) -> None:
        self.nargs(args, 0)
        block = self.open_if("else")
        block.exits.append(self.emit([OP_JUMP, -1]))
        self.patch(block.pending)
        block.pending = None

    def c_endif(self, args: list[str]) -> None:
        self.nargs(args, 0)
        block = self.open_if("endif")
        self.patch(block.pending)
        for k in block.exits:
            self.patch(k)
        self.blocks.pop()

    def open_if(self, name: str) -> _Block:
        if not self.blocks or self.blocks[-1].kind != "if":
            raise self.fail(ERR_SCOPE, f"{name} without if")
        if self.blocks[-1].pending is None and name != "endif":
            raise self.fail(ERR_SCOPE, f"{name} after else")
        return self.blocks[-1]

    def patch(self, k: int | None) -> None:
        if k is not None:
            self.code[k][-1] = len(self.code)

    def c_loop(self, args: list[str]) -> None:
        self.emit((OP_OUT, "L"))
        start = len(self.code)
        cond = self.emit(self.condition(args))
        self.blocks.append(_Block("loop", start=start, pending=cond, code=self.code))

    def c_breakloop(self, args: list[str]) -> None:
        self.nargs(args, 0)
        loop = self.innermost_loop()
        if loop is None:
            raise self.fail(ERR_SITUATION, "breakloop outside a loop")
        if loop.kind == "meas":
            self.emit((OP_BREAK,))
        else:
            loop.exits.append(self.emit([OP_JUMP, -1]))

    def c_endloop(self, args: list[str]) -> None:
        self.nargs(args, 0)
        if not self.blocks or self.blocks[-1].kind not in ("loop", "meas"):
            raise self.fail(ERR_SCOPE, "endloop without an open loop (or inside an if)")
        if self.pck is not None:
            raise self.fail(ERR_PCK_SEQUENCE, "endloop inside a package")
        block = self.blocks.pop()
        if block.kind == "meas":
            assert block.code is not None and block.template is not None
            block.template.body = [tuple(op) for op in self.code]
            self.code = block.code
            self.emit((OP_MEAS, block.template))
            return
        self.emit((OP_JUMP, block.start))
        self.patch(block.pending)
        for k in block.exits:
            self.patch(k)
        self.emit((OP_OUT, "+"))

    def meas_forbidden(self, name: str) -> None:
        if any(b.kind == "meas" for b in self.blocks):
            raise self.fail(0x401A, f"{name} cannot be called from within a measurement loop")

    def c_meas(self, kind: str, args: list[str]) -> None:
        if self.in_finished:
            raise self.fail(ERR_SITUATION, "measurement loop in on_finished:")
        if any(b.kind == "meas" for b in self.blocks):
            raise self.fail(ERR_NESTED_MEAS, "a measurement loop inside another")
        n_vars, n_numbers = len(LOOP_TYPES[kind]), LOOP_NUMBERS[kind]
        nscans = 1
        while len(args) > n_vars + n_numbers and _OPTIONAL.fullmatch(args[-1]):
            m = _OPTIONAL.fullmatch(args[-1])
            assert m is not None
            value = parse_literal(m.group(2))
            if kind != "cv" or m.group(1) != "nscans" or value is None or value < 1:
                raise self.fail(ERR_OPTIONAL_ARG, f"optional argument {args[-1]!r}",
                                len(args) - 1)
            nscans = int(value)
            args = args[:-1]
        self.nargs(args, n_vars + n_numbers)
        self.check_mode(kind)
        slots = tuple(self.var(args, k) for k in range(n_vars))
        numbers = tuple(self.operand(args, k) for k in range(n_vars, len(args)))
        template = LoopTemplate(kind, slots, numbers, self.line, nscans)
        constants = [v for s, v in numbers]
        if all(s < 0 for s, _ in numbers):  # all literal: refuse bad values at upload
            try:
                build_loop(template, constants)
            except ScriptError as exc:
                raise self.fail(exc.code, exc.message) from None
        for slot, vtype in zip(slots, LOOP_TYPES[kind]):
            self.types[slot] = vtype
        self.blocks.append(_Block("meas", template=template, code=self.code))
        self.code = []

    def check_mode(self, kind: str) -> None:
        if kind in ("cp", "geis") and self.mode != GALVANOSTATIC:
            raise self.fail(ERR_WRONG_MODE, f"meas_loop_{kind} needs set_pgstat_mode 6")
        if kind in ("ca", "eis", "lsv", "cv") and self.mode not in POTENTIOSTATIC_MODES:
            raise self.fail(ERR_WRONG_MODE, f"meas_loop_{kind} needs pgstat mode 2, 3 or 4")


def _arith_command(name: str, compiler: Compiler, args: list[str]) -> None:
    compiler.c_arith(name, args)


_COMMANDS: dict[str, Callable[[Compiler, list[str]], None]] = {
    "var": Compiler.c_var, "store_var": Compiler.c_store_var, "copy_var": Compiler.c_copy_var,
    **{name: functools.partial(_arith_command, name) for name in ARITH},
    "wait": Compiler.c_wait, "send_string": Compiler.c_send_string,
    "set_pgstat_chan": Compiler.c_chan, "set_pgstat_mode": Compiler.c_mode,
    "set_max_bandwidth": Compiler.c_bandwidth, "set_range": Compiler.c_range,
    "set_autoranging": Compiler.c_autoranging, "set_range_minmax": Compiler.c_range_minmax,
    "set_e": Compiler.c_set_e, "set_i": Compiler.c_set_i, "cell_on": Compiler.c_cell_on,
    "cell_off": Compiler.c_cell_off, "timer_start": Compiler.c_timer_start,
    "timer_get": Compiler.c_timer_get, "on_finished:": Compiler.c_on_finished,
    "pck_start": Compiler.c_pck_start, "pck_add": Compiler.c_pck_add,
    "pck_end": Compiler.c_pck_end, "if": Compiler.c_if, "elseif": Compiler.c_elseif,
    "else": Compiler.c_else, "endif": Compiler.c_endif, "loop": Compiler.c_loop,
    "breakloop": Compiler.c_breakloop, "endloop": Compiler.c_endloop,
}
COMMANDS = frozenset(_COMMANDS) | {f"meas_loop_{k}" for k in LOOP_TYPES}


def compile_script(lines: Sequence[str], mode: int = 0) -> Program:
    """Compile script lines (without the ``e`` and the final empty line); raises ScriptError."""
    return Compiler(mode).compile(lines)


def parse_literal(text: str) -> float | None:
    """``"100m" -> 0.1``, ``"11i" -> 11.0``, ``"1M" -> 1e6``, ``"0x1F" -> 31.0``; None if not one."""
    m = _LITERAL.fullmatch(text)
    if m:
        return int(m.group(1)) * SI[m.group(2)]
    m = _HEX_LITERAL.fullmatch(text)
    if m:
        return float(int(m.group(1), 16) if m.group(1) else int(m.group(2), 2))
    return None


def _strip_comment(line: str) -> str:
    """A line without its ``#`` comment (a ``#`` inside a quoted string stays)."""
    if "#" not in line:
        return line
    quoted = False
    for k, ch in enumerate(line):
        if ch == '"':
            quoted = not quoted
        elif ch == "#" and not quoted:
            return line[:k]
    return line


# ---- a loop's schedule, from its argument values -------------------------------------------------
@dataclass
class Loop:
    """A measurement loop with its numbers: what it applies and when each package is due."""

    kind: str
    slots: tuple[int, ...]
    setpoint: float = 0.0          # I (cp), E (ca), E_dc (eis), I_dc (geis); 0 for ocp
    amplitude: float = 0.0         # E_ac (eis), I_ac (geis)
    interval: float = 0.0          # cp, ca, ocp
    duration: float = 0.0
    times: tuple[float, ...] = ()  # eis, geis, lsv, cv: when each package is due
    values: tuple[float, ...] = ()  # the frequency (eis, geis) or potential (lsv, cv) per package
    scan_starts: frozenset[int] = frozenset()  # cv with nscans > 1: packages that start a scan
    body: list[tuple[Any, ...]] = field(default_factory=list)


def _check(value: float, low: float, high: float, what: str) -> float:
    slack = 1e-9 * max(abs(low), abs(high))  # 10u is 1e-05 within float rounding
    if not low - slack <= value <= high + slack:
        raise ScriptError(ERR_OUT_OF_BOUNDS, f"{what} {value:g} outside [{low:g}, {high:g}]")
    return value


def build_loop(template: LoopTemplate, numbers: Sequence[float]) -> Loop:
    """The loop's schedule from its argument values; ScriptError when a value is out of range."""
    kind, n = template.kind, numbers
    loop = Loop(kind, template.slots, body=template.body)
    if kind in ("cp", "ca", "ocp"):
        if kind == "cp":
            loop.setpoint = _check(n[0], -MAX_CURRENT_A, MAX_CURRENT_A, "current")
        elif kind == "ca":
            loop.setpoint = _check(n[0], -MAX_POTENTIAL_V, MAX_POTENTIAL_V, "potential")
        loop.interval = _check(n[-2], 1e-3, 1e6, "interval")
        loop.duration = _check(n[-1], 1e-3, 1e9, "run time")
    elif kind in ("eis", "geis"):
        limit = MAX_POTENTIAL_V if kind == "eis" else MAX_CURRENT_A
        loop.amplitude = _check(n[0], 1e-12, limit, "amplitude")
        f_start = _check(n[1], MIN_FREQUENCY_HZ, MAX_FREQUENCY_HZ, "frequency")
        f_end = _check(n[2], MIN_FREQUENCY_HZ, MAX_FREQUENCY_HZ, "frequency")
        points = _check(n[3], 1, MAX_EIS_POINTS, "points")
        if points != int(points):
            raise ScriptError(ERR_OUT_OF_BOUNDS, f"points {points:g} is not an integer")
        loop.setpoint = _check(n[4], -limit, limit, "dc level")
        loop.values = eis_frequencies(f_start, f_end, int(points))
        loop.times = eis_schedule(loop.values)
    else:  # lsv, cv: a staircase sweep at scan_rate, one package per step
        potentials = [_check(v, -MAX_POTENTIAL_V, MAX_POTENTIAL_V, "potential")
                      for v in n[:-2]]
        step, rate = n[-2], n[-1]
        if not (step > 0 and rate > 0):
            raise ScriptError(ERR_MUST_BE_POSITIVE, "step and scan rate must be positive")
        if kind == "lsv":
            values = _staircase(potentials[0], potentials[1], step, include_start=True)
            starts: list[int] = []
        else:
            begin, v1, v2 = potentials
            scan = (_staircase(begin, v1, step, True) + _staircase(v1, v2, step, False)
                    + _staircase(v2, begin, step, False))
            values, starts = [], []
            for _ in range(template.nscans):
                starts.append(len(values))
                values += scan
        if len(values) > MAX_SWEEP_POINTS:
            raise ScriptError(ERR_OUT_OF_BOUNDS, f"{len(values)} steps: too many")
        dt = step / rate
        loop.values = tuple(values)
        loop.times = tuple((k + 1) * dt for k in range(len(values)))
        loop.scan_starts = frozenset(starts) if template.nscans > 1 else frozenset()
    return loop


def _staircase(a: float, b: float, step: float, include_start: bool) -> list[float]:
    n = int(round(abs(b - a) / step))
    sign = 1.0 if b >= a else -1.0
    first = 0 if include_start else 1
    return [a + sign * k * step for k in range(first, n + 1)]


def eis_frequencies(f_start: float, f_end: float, n_points: int) -> tuple[float, ...]:
    """Log-spaced, both ends included: ``eis_frequencies(100, 1, 3) -> (100.0, 10.0, 1.0)``."""
    if n_points == 1:
        return (f_start,)
    ratio = f_end / f_start
    return tuple(f_start * ratio ** (i / (n_points - 1)) for i in range(n_points))


def eis_schedule(freqs: Sequence[float]) -> tuple[float, ...]:
    """End time of each EIS point: each takes max(1 s, 3 periods) [our simulator's rule]."""
    t, times = 0.0, []
    for f in freqs:
        t += max(1.0, 3.0 / f)
        times.append(t)
    return tuple(times)

