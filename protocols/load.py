"""Protocol file -> validated Plan, or a ProtocolError listing every problem.

The pipeline: TOML text -> tomllib -> pydantic (``protocols.model``) -> cross-field checks ->
the kind's template (``protocols.templates``) -> Plan -> checks of the Plan against the file's
safety limits. A user never sees a traceback: every failure is a ProtocolError whose lines read
``<file>: <field.path>: <message>``.

Example:
    >>> loaded = load_protocol(builtin_protocol("plating_stripping"))
    >>> len(loaded.plan.channels), loaded.plan.total_cycles
    (4, 200)
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from protocols.bounds import (
    MAX_LOOP_DEPTH,
    MAX_NESTING,
    FileTooLarge,
    bracket_depth,
    nesting_depth,
    plan_bounds_problems,
    read_protocol_text,
)
from protocols.kinds import ProtocolFile
from protocols.messages import Problem, describe_all
from protocols.model import ProtocolBase
from protocols.plan import Plan
from protocols.templates import EXPANDERS
from protocols.templates.common import largest_current

_ADAPTER: TypeAdapter = TypeAdapter(ProtocolFile)

BUILTIN_DIR = Path(__file__).parent
"""Where the built-in protocol files (``plating_stripping.toml``, ...) live."""


def builtin_protocol(name: str) -> Path:
    """The path of a built-in protocol file, by its name without ``.toml``.

    >>> builtin_protocol("plating_stripping").name
    'plating_stripping.toml'
    """
    return BUILTIN_DIR / f"{name}.toml"


class ProtocolError(Exception):
    """A protocol file that cannot run; ``problems`` holds one line per problem.

    >>> str(ProtocolError(["x.toml: cycles: must be at least 1 (got 0)"]))
    'x.toml: cycles: must be at least 1 (got 0)'
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)

    @classmethod
    def from_problems(cls, source: str, problems: list[Problem]) -> ProtocolError:
        """Prefix each ``(path, message)`` with the file name."""
        return cls([f"{source}: {path}: {message}" for path, message in problems])


@dataclass(frozen=True)
class LoadedProtocol:
    """A protocol as the run stores it: the Plan, the file's exact text and where it came from."""

    plan: Plan
    text: str
    path: Path


def load_protocol(path: str | Path) -> LoadedProtocol:
    """Read, validate and expand a protocol file.

    >>> load_protocol(builtin_protocol("plating_stripping")).plan.kind
    'plating_stripping'
    """
    try:
        text = read_protocol_text(path)
    except FileTooLarge as e:
        raise ProtocolError([f"{path}: {e}"]) from None
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ProtocolError([f"{path}: cannot read the file: {reason}"]) from None
    return LoadedProtocol(plan=parse_protocol(text, str(path)), text=text, path=Path(path))


def parse_protocol(text: str, source_name: str = "<protocol>") -> Plan:
    """Validate protocol TOML text and expand it; ``source_name`` prefixes every error.

    >>> parse_protocol('kind = "nope"', "x.toml")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    protocols.load.ProtocolError: x.toml: kind: "nope" is not one of plating_stripping, ...
    """
    model = validate_protocol(parse_toml(text, source_name), source_name)
    plan = EXPANDERS[model.kind](model)  # type: ignore[attr-defined]
    problems = plan_problems(plan) + plan_bounds_problems(plan)
    if problems:
        raise ProtocolError.from_problems(source_name, problems)
    return plan


def parse_toml(text: str, source_name: str) -> dict:
    """tomllib, with a syntax error as a ProtocolError naming line and column.

    >>> parse_toml("cycles = 2OO", "x.toml")
    Traceback (most recent call last):
    ...
    protocols.load.ProtocolError: x.toml: line 1, column 11: not valid TOML: \
Expected newline or end of document after a statement
    """
    too_deep = [f"{source_name}: tables and arrays nest more than {MAX_NESTING} deep; a "
                "protocol needs far fewer (a loop in a loop costs 2)"]
    if bracket_depth(text) > MAX_NESTING:  # before tomllib, which recurses
        raise ProtocolError(too_deep)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ProtocolError([toml_problem(str(e), text, source_name)]) from None
    except RecursionError:  # nesting the bracket count cannot see; never a traceback
        raise ProtocolError(too_deep) from None
    if nesting_depth(data) > MAX_NESTING:  # dotted keys nest without brackets
        raise ProtocolError(too_deep)
    return data


_WHERE = re.compile(r"\s*\((?:at line (\d+), column (\d+)|at end of document)\)$")
_UNQUOTED_UNIT = re.compile(r"=\s*[-+]?[\d.]+(?:[eE][-+]?\d+)?\s+[A-Za-zµ%]")


def toml_problem(message: str, text: str, source_name: str) -> str:
    """A tomllib message as ``<file>: line L, column C: not valid TOML: <what>``."""
    match = _WHERE.search(message)
    what = _WHERE.sub("", message)
    lines = text.splitlines() or [""]
    if match and match.group(1):
        line_no, where = int(match.group(1)), f"line {match.group(1)}, column {match.group(2)}"
    else:
        line_no, where = len(lines), f"end of file (line {len(lines)})"
    line = lines[line_no - 1] if 0 < line_no <= len(lines) else ""
    hint = ' (a value with a unit needs quotes, e.g. "1 mA/cm^2")' if _UNQUOTED_UNIT.search(
        line) else ""
    return f"{source_name}: {where}: not valid TOML: {what}{hint}"


def validate_protocol(data: dict, source_name: str) -> ProtocolBase:
    """The parsed TOML as the kind's model, or every schema and cross-field problem."""
    deep = _loop_too_deep(data.get("steps"))
    if deep:
        raise ProtocolError([f"{source_name}: {deep}: loops nest at most {MAX_LOOP_DEPTH} deep"])
    try:
        model: ProtocolBase = _ADAPTER.validate_python(data)
    except ValidationError as e:
        raise ProtocolError.from_problems(source_name, describe_all(e.errors())) from None
    problems = model.problems()
    if problems:
        raise ProtocolError.from_problems(source_name, problems)
    return model


def _loop_too_deep(steps: object) -> str | None:
    """The path of the first loop nested deeper than ``MAX_LOOP_DEPTH``, or None."""
    stack = [(steps, "steps", 0)]
    while stack:
        node, path, depth = stack.pop()
        if not isinstance(node, list):
            continue
        for i, step in enumerate(node):
            if isinstance(step, dict) and step.get("type") == "loop":
                here = f"{path}[{i}]"
                if depth + 1 > MAX_LOOP_DEPTH:
                    return here
                stack.append((step.get("steps"), f"{here}.steps", depth + 1))
    return None


def plan_problems(plan: Plan) -> list[Problem]:
    """Checks of the expanded Plan: no planned current above the safety ``max_current``."""
    if not plan.channels:
        return []
    channel = max(plan.channels, key=lambda c: largest_current(c.steps))
    planned = largest_current(channel.steps)
    if planned <= plan.safety.i_max_A:
        return []
    return [("safety.max_current", (
        f"{plan.safety.i_max_A * 1e3:.4g} mA is below the planned {planned * 1e3:.4g} mA "
        f"(cell {channel.cell.cell_id}, channel {channel.cell.channel}); raise max_current "
        "or lower the current"))]
