"""The sane bounds of a protocol file: sizes, counts, nesting, free text and durations.

Everything ``rig run`` would choke on is refused by ``rig validate`` first, with one line naming
the field and what is allowed: a file too large to be a protocol (or not a file at all), tables
nested deeper than any protocol needs (tomllib and pydantic recurse), more cells than a station
opens, a cycle count or step count that would outlive the lab, a step shorter than an
instrument can time or longer than any experiment, and free text with control characters (a
terminal escape in a cell id would repaint the operator's screen). Quantities have their own
sane ranges in ``protocols.units`` ("1 ns", "1e300 s" and "1 mA/furlong^2" are refused there).

Example:
    >>> nesting_depth({"a": [{"b": 1}]})
    3
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, StringConstraints
from pydantic_core import PydanticCustomError

from protocols.plan import ConstantCurrent, ConstantPotential, Loop, Plan, Rest, Step

Problem = tuple[str, str]

MAX_FILE_BYTES = 1_000_000  # the built-in files are ~5 kB; a protocol of 1 MB is not one
MAX_NESTING = 24  # tables and arrays inside each other (a loop in a loop costs 2 levels)
MAX_LOOP_DEPTH = 8  # loops inside loops in a sequence
MAX_CELLS = 64  # cells of one run: what a station opens (the 64-channel benchmark)
MAX_CHANNEL = 1023  # the highest channel number
MAX_COUNT = 100_000  # cycles, loop counts, sweeps
MAX_STEPS_PER_CHANNEL = 1_000_000  # steps one channel executes (each one is a stored row)
MIN_STEP_S = 1e-3  # a step shorter than this cannot be timed by any instrument
MAX_STEP_S = 10_000 * 3600.0  # one step: about 14 months
MAX_RUN_S = 20_000 * 3600.0  # one channel's whole plan: about 2.3 years
MAX_NAME = 200  # name, electrolyte, labels...
MAX_ID = 64  # cell_id
MAX_NOTE = 10_000  # description, notes

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # tab and newline are text


def _no_control(text: str) -> str:
    """Free text without control characters (an ESC would be a terminal escape sequence)."""
    found = _CONTROL.search(text)
    if found:
        raise PydanticCustomError(
            "text", "contains a control character ({code}); only printable text, tabs and "
            "newlines are allowed", {"code": f"U+{ord(found.group()):04X}"})
    return text


Name = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME),
                 AfterValidator(_no_control)]
"""A name, label or short text: 1 to ``MAX_NAME`` printable characters."""
CellId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID),
                   AfterValidator(_no_control)]
Note = Annotated[str, StringConstraints(max_length=MAX_NOTE), AfterValidator(_no_control)]
"""A description or notes: up to ``MAX_NOTE`` characters, newlines and tabs allowed."""


class FileTooLarge(Exception):
    """Raised by ``read_protocol_text`` with a message for the user."""


def read_protocol_text(path: str | Path, limit: int = MAX_FILE_BYTES) -> str:
    """The text of a regular file of at most ``limit`` bytes (``/dev/zero`` or a FIFO is
    refused before it is read, and nothing larger than ``limit`` is read into memory)."""
    with open(path, "rb") as f:  # open first, then check what was opened (no race)
        mode = os.fstat(f.fileno()).st_mode
        if not stat.S_ISREG(mode):
            what = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
            raise FileTooLarge(f"{what}; give a protocol file (TOML)")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise FileTooLarge(f"larger than {limit // 1000} kB; a protocol file is a few kB")
    return data.decode("utf-8")


_OPEN = {"[": "]", "{": "}"}


def bracket_depth(text: str) -> int:
    """The deepest nesting of ``[`` and ``{`` outside strings and comments, without recursion
    (tomllib recurses into inline tables and arrays and dies of a RecursionError at ~300).

    >>> bracket_depth('a = [{b = "[[["}]  # [[[')
    2
    """
    depth = deepest = 0
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if c in "\"'":
            quote = c * 3 if text.startswith(c * 3, i) else c
            j = i + len(quote)
            while j < n and not text.startswith(quote, j):
                if c == '"' and text[j] == "\\":
                    j += 1
                elif len(quote) == 1 and text[j] == "\n":
                    break  # an unclosed string: tomllib reports it
                j += 1
            i = j + len(quote)
            continue
        if c in _OPEN:
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth = max(depth - 1, 0)
        i += 1
    return deepest


def nesting_depth(data: Any) -> int:
    """How deep tables and arrays are nested in parsed TOML, without recursion (dotted keys
    such as ``a.b.c...`` nest without brackets)."""
    deepest, stack = 0, [(data, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = list(node.values())
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth + 1)
        if depth + 1 <= MAX_NESTING:  # deeper than that is refused anyway
            stack.extend((child, depth + 1) for child in children)
    return deepest


def step_duration(step: Step) -> float | None:
    """How long a step runs at most (its time end, or its charge end at its current); None for
    a step only the cell or the instrument ends (an EIS sweep, a potential step's charge)."""
    ends = getattr(step, "ends", ())
    times = [e.value for e in ends if e.kind == "time"]
    if isinstance(step, ConstantCurrent) and step.current_A != 0:
        times += [e.value / abs(step.current_A) for e in ends if e.kind == "charge"]
    return min(times) if times else None


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.4g} h" if seconds >= 3600 else f"{seconds:.4g} s"


def plan_bounds_problems(plan: Plan) -> list[Problem]:
    """Every step lasts between ``MIN_STEP_S`` and ``MAX_STEP_S``; each channel executes at most
    ``MAX_STEPS_PER_CHANNEL`` steps within ``MAX_RUN_S``. One line per channel and limit."""
    found: list[Problem] = []
    for k, cp in enumerate(plan.channels):
        where = f"cells[{k}] ({cp.cell.cell_id})"
        steps, seconds = _count(cp.steps, 1)
        before = len(found)
        for step in _leaves(cp.steps):
            t = step_duration(step)
            if t is None:
                continue
            what = f'step "{step.label or step.kind}" lasts {_hours(t)}'
            if t < MIN_STEP_S:
                found.append((where, f"{what}; a step must last at least {MIN_STEP_S * 1e3:g} ms "
                              "(raise the charge or time, or lower the current)"))
                break
            if t > MAX_STEP_S:
                found.append((where, f"{what}; a step may last at most {_hours(MAX_STEP_S)} "
                              "(lower the charge or time, or raise the current)"))
                break
        if len(found) > before:
            continue  # the step's own bound says it: its totals would repeat it
        if steps > MAX_STEPS_PER_CHANNEL:
            found.append((where, f"runs {steps:.3g} steps; allowed: at most "
                          f"{MAX_STEPS_PER_CHANNEL:,} (fewer cycles or loop iterations)"))
        elif seconds > MAX_RUN_S:
            found.append((where, f"runs for up to {_hours(seconds)}; allowed: at most "
                          f"{_hours(MAX_RUN_S)} (fewer cycles, less charge or a higher current)"))
    return found


def _leaves(steps: tuple[Step, ...]) -> list[Step]:
    out: list[Step] = []
    stack = list(reversed(steps))
    while stack:
        s = stack.pop()
        if isinstance(s, Loop):
            stack.extend(reversed(s.steps))
        else:
            out.append(s)
    return out


def _count(steps: tuple[Step, ...], times: float) -> tuple[float, float]:
    """(steps executed, seconds at most) of a tree run ``times`` times."""
    n = seconds = 0.0
    for s in steps:
        if isinstance(s, Loop):
            dn, dt = _count(s.steps, times * s.count)
            n, seconds = n + dn + times, seconds + dt
        else:
            n += times
            if isinstance(s, (ConstantCurrent, ConstantPotential, Rest)):
                seconds += times * (step_duration(s) or 0.0)
    return n, seconds
