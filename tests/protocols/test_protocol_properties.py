"""Property tests (hypothesis): whatever a protocol or station file holds, the loader answers
with a plan or with clear lines ``<file>: <where>: <what>`` - never a traceback.

Files are made by mutating the built-in ones (a value replaced by a value of another type, an
absurd quantity, a key dropped or added, deep nesting) and by arbitrary text; each is checked
in-process (fast) through the same functions `rig validate` calls. Example counts are modest so
the whole file runs in seconds.
"""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols import ProtocolError, builtin_protocol, parse_protocol
from protocols.load import parse_toml

SOURCE = "fuzz.toml"
BUILTINS = ("plating_stripping", "coulombic_efficiency", "critical_current_density",
            "ocv_impedance", "gas_evolution", "sequence")
BASES = {name: tomllib.loads(builtin_protocol(name).read_text()) for name in BUILTINS}
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


# ---- a TOML writer (only inline forms: enough for any value tomllib reads back) -------------
def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) \
            else repr(v)
    if isinstance(v, str):
        return toml_string(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{toml_string(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def toml_text(data: dict) -> str:
    return "".join(f"{toml_string(k)} = {toml_value(v)}\n" for k, v in data.items())


def toml_string(v: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's (astral characters kept as they are)."""
    return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")


# ---- mutations ----------------------------------------------------------------------------------
TEXT = st.characters(exclude_categories=("Cs",))  # what a UTF-8 file can hold
UNITS = ["mA/cm^2", "mAh/cm^2", "s", "h", "ns", "V", "mV", "mA", "cm^2", "mL", "kHz", "mV/h",
         "furlong^2", "m/s", "K", "", "mA/cm²", "A/m^2", "C", "%"]
quantity = st.builds(lambda x, u: f"{x} {u}".strip(),
                     st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                               st.integers(-10**30, 10**30), st.sampled_from(["1e300", "-0", "."])),
                     st.sampled_from(UNITS))
scalars = st.one_of(
    st.booleans(), st.integers(-2**63, 2**63 - 1), st.floats(), quantity,
    st.text(TEXT, max_size=40),
    st.sampled_from(["[/link]", "x [bold]", "\x1b[2J", "end:", "next"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(TEXT, max_size=8), inner, max_size=4)),
    max_leaves=12)


def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every location in the data (keys and list indices), parents before children."""
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += paths(v, (*prefix, i))
    return out


def mutate(data: Any, where: tuple, how: str, value: Any) -> Any:
    if not where:
        return value
    head, rest = where[0], where[1:]
    if isinstance(data, dict):
        out = dict(data)
        if not rest and how == "drop":
            out.pop(head, None)
        elif not rest and how == "add":
            out[f"{head}_x"] = value
        else:
            out[head] = mutate(data[head], rest, how, value)
        return out
    out_list = list(data)
    if not rest and how == "drop":
        del out_list[head]
    elif not rest and how == "add":
        out_list.append(value)
    else:
        out_list[head] = mutate(data[head], rest, how, value)
    return out_list


def leaf(data: Any, where: tuple) -> Any:
    for part in where:
        data = data[part]
    return data


numbers = st.one_of(st.integers(-3, 10**6), st.floats(-1e6, 1e6, allow_nan=False),
                    st.sampled_from([0, 1e-12, 1e-300, 1e300, 0.001, 5, 200]))


def tweaked(old: Any, draw: st.DrawFn) -> Any:
    """A value of the same shape: another number before the same unit, another whole number
    (these mostly still validate, so expansion and the plan checks are exercised too)."""
    if isinstance(old, bool) or not isinstance(old, (str, int)):
        return old
    if isinstance(old, int):
        return draw(st.integers(-3, 2 * 10**5))
    number, _, unit = old.partition(" ")
    return f"{draw(numbers)} {unit}" if unit else old


@st.composite
def mutated_files(draw: st.DrawFn, bases: dict[str, dict]) -> str:
    data = bases[draw(st.sampled_from(sorted(bases)))]
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(paths(data)))
        how = draw(st.sampled_from(["replace", "drop", "add", "tweak", "tweak", "tweak"]))
        if how == "tweak":
            data = mutate(data, where, "replace", tweaked(leaf(data, where), draw))
        else:
            data = mutate(data, where, how, draw(values))
    if not isinstance(data, dict):
        data = {"value": data}
    return toml_text(data)


def assert_clear(problems: list[str], source: str) -> None:
    """Every line names the file and says what is wrong; none is a Python repr or traceback."""
    assert problems
    for line in problems:
        assert line.startswith(f"{source}: "), line
        assert "Traceback" not in line and "Error(" not in line, line
        assert len(line.split(": ", 2)) == 3, line  # <file>: <where>: <what>


def check_protocol(text: str) -> None:
    try:
        parse_protocol(text, SOURCE)
    except ProtocolError as exc:
        assert_clear(exc.problems, SOURCE)


# ---- protocol files -----------------------------------------------------------------------------
@SETTINGS
@given(mutated_files(BASES))
def test_a_mutated_protocol_file_gives_a_plan_or_clear_lines_never_a_traceback(text):
    check_protocol(text)


@settings(max_examples=80, deadline=None, derandomize=True)
@given(st.text(max_size=300))
def test_arbitrary_text_gives_clear_lines_never_a_traceback(text):
    check_protocol(text)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.lists(st.sampled_from(["[", "{a = ", "]", "}", "x = ", "\n", "[[a]]\n", '"', "a.",
                                 "=", "1"]), max_size=600))
def test_bracket_soup_and_deep_nesting_never_raise_recursion_error(parts):
    try:
        parse_toml("".join(parts), SOURCE)
    except ProtocolError as exc:
        assert_clear(exc.problems, SOURCE)


# ---- station files ------------------------------------------------------------------------------
def _station_base() -> dict:
    from protocols import load_protocol
    from rig.sim.serve import builtin_station_data

    plan = load_protocol(builtin_protocol("gas_evolution")).plan
    return builtin_station_data(plan, keithley_channels=(plan.channels[0].cell.channel,))


STATION = {"station": _station_base()}


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(mutated_files(STATION))
def test_a_mutated_station_file_gives_ranges_or_clear_lines_never_a_traceback(tmp_path, text):
    # the function `rig validate --station` calls: reads and validates, opens nothing
    from rig.station import StationError, station_ranges

    path = Path(tmp_path) / "station.toml"
    path.write_text(text, encoding="utf-8")
    try:
        station_ranges(path)
    except StationError as exc:
        assert_clear(str(exc).splitlines(), str(path))
