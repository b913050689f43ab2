"""Protocol files: units, validation messages, the plating–stripping template, summaries."""

from __future__ import annotations

import ast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from protocols import (
    ProtocolError,
    builtin_protocol,
    json_schema,
    load_protocol,
    parse_protocol,
    plan_totals,
    summarize,
)
from protocols.plan import ConstantCurrent, Loop, Rest, plan_from_json
from protocols.units import Area, ArealCapacity, CurrentDensity, PotentialRate, Time, Volume

EXAMPLE = builtin_protocol("plating_stripping")
TEXT = EXAMPLE.read_text(encoding="utf-8")
SRC = "protocols/x.toml"

MINIMAL = """
kind = "plating_stripping"
name = "one cell"
current_density = "{j}"
areal_capacity = "{q}"
cycles = 3
record_interval = "10 s"
{extra}
[[cells]]
channel = 0
cell_id = "A"
type = "symmetric"
area = "{area}"
electrolyte = "1 M NaPF6 in diglyme"
"""


def minimal(j: str = "1 mA/cm^2", q: str = "1 mAh/cm^2", area: str = "1.13 cm^2",
            extra: str = "") -> str:
    return MINIMAL.format(j=j, q=q, area=area, extra=extra)


def edited(old: str, new: str, count: int = 1) -> str:
    assert old in TEXT, old
    return TEXT.replace(old, new, count)


def problems(text: str) -> list[str]:
    with pytest.raises(ProtocolError) as caught:
        parse_protocol(text, SRC)
    return caught.value.problems


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith(needle))


# --- the example file -------------------------------------------------------------------------

def test_example_file_expands_to_four_channels_of_200_cycles():
    plan = load_protocol(EXAMPLE).plan
    assert plan.kind == "plating_stripping"
    assert plan.total_cycles == 200
    assert [c.cell.channel for c in plan.channels] == [0, 1, 2, 3]
    assert [c.cell.cell_id for c in plan.channels] == ["NaNa-G1", "NaNa-G2", "NaNa-C1", "NaNa-C2"]
    assert [c.cell.electrolyte for c in plan.channels] == (
        ["1 M NaPF6 in diglyme"] * 2 + ["1 M NaClO4 in EC:DEC"] * 2)


def test_example_file_plates_first_at_minus_1_13_mA_and_4_068_C_per_half_cycle():
    for channel in load_protocol(EXAMPLE).plan.channels:
        (loop,) = channel.steps
        assert isinstance(loop, Loop) and loop.count == 200 and loop.counts_cycles
        plate, strip = loop.steps
        assert isinstance(plate, ConstantCurrent) and isinstance(strip, ConstantCurrent)
        assert (plate.half_cycle, strip.half_cycle) == ("plate", "strip")
        assert plate.current_A == pytest.approx(-1.13e-3)
        assert strip.current_A == pytest.approx(+1.13e-3)
        for step in (plate, strip):
            (end,) = step.ends
            assert end.kind == "charge" and end.value == pytest.approx(4.068)
            assert step.record.every_s == 10.0


def test_example_file_totals_400_h_and_452_mAh_per_channel():
    totals = plan_totals(load_protocol(EXAMPLE).plan)
    assert sorted(totals) == [0, 1, 2, 3]
    for duration_s, charge_C in totals.values():
        assert duration_s == pytest.approx(400 * 3600)
        assert charge_C == pytest.approx(452 * 3.6)


def test_example_file_safety_is_the_default_window_and_twice_the_planned_current():
    safety = load_protocol(EXAMPLE).plan.safety
    assert (safety.e_min_V, safety.e_max_V) == (-1.0, 1.0)
    assert safety.i_max_A == pytest.approx(2.26e-3)


def test_loaded_protocol_keeps_the_exact_text_and_path():
    loaded = load_protocol(EXAMPLE)
    assert loaded.text == TEXT
    assert loaded.path == EXAMPLE


def test_plan_parameters_are_si_with_units_in_their_names():
    params = load_protocol(EXAMPLE).plan.parameters
    assert params["current_density_A_per_cm2"] == pytest.approx(1e-3)
    assert params["areal_capacity_C_per_cm2"] == pytest.approx(3.6)
    assert params["cycles"] == 200
    assert params["record_interval_s"] == 10.0


def test_plan_json_round_trip_equals_the_original():
    plan = load_protocol(EXAMPLE).plan
    assert plan_from_json(plan.to_json()) == plan
    with_rest = parse_protocol(minimal(extra='rest_before = "1 h"\nrecord_dE = "5 mV"'), SRC)
    assert plan_from_json(with_rest.to_json()) == with_rest


# --- optional parameters ----------------------------------------------------------------------

def test_rest_before_adds_an_open_circuit_rest_ahead_of_the_cycles():
    plan = parse_protocol(minimal(extra='rest_before = "1 h"'), SRC)
    rest, loop = plan.channels[0].steps
    assert isinstance(rest, Rest) and isinstance(loop, Loop)
    assert [(e.kind, e.value) for e in rest.ends] == [("time", 3600.0)]
    assert plan_totals(plan)[0][0] == pytest.approx(3600 + 3 * 2 * 3600)


def test_record_dE_becomes_the_record_rules_potential_step():
    plan = parse_protocol(minimal(extra='record_dE = "5 mV"'), SRC)
    plate = plan.channels[0].steps[0].steps[0]
    assert plate.record.every_dE_V == pytest.approx(5e-3)


def test_safety_table_overrides_the_defaults():
    extra = '[safety]\nmin_potential = "-0.5 V"\nmax_potential = "500 mV"\nmax_current = "5 mA"\n'
    text = minimal().replace("\n[[cells]]", extra + "\n[[cells]]", 1)
    safety = parse_protocol(text, SRC).safety
    assert (safety.e_min_V, safety.e_max_V, safety.i_max_A) == pytest.approx((-0.5, 0.5, 5e-3))


def test_cells_of_different_areas_get_currents_scaled_by_their_area():
    text = minimal(area="2 cm^2") + (
        '\n[[cells]]\nchannel = 5\ncell_id = "B"\ntype = "na_cu"\narea = "50 mm^2"\n'
        'electrolyte = "x"\nheadspace = "5 mL"\n')
    plan = parse_protocol(text, SRC)
    currents = [c.steps[0].steps[0].current_A for c in plan.channels]
    assert currents == pytest.approx([-2e-3, -0.5e-3])
    assert plan.channels[1].cell.headspace_mL == pytest.approx(5.0)
    assert plan.safety.i_max_A == pytest.approx(4e-3)


# --- units ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("qtype", "text", "value"), [
    (CurrentDensity, "1 mA/cm^2", 1e-3),
    (CurrentDensity, "1 mA/cm²", 1e-3),
    (CurrentDensity, "10 A/m^2", 1e-3),
    (CurrentDensity, "500 µA/cm2", 5e-4),
    (ArealCapacity, "0.5 mAh/cm²", 1.8),
    (ArealCapacity, "3.6 C/cm^2", 3.6),
    (Area, "1.13 cm^2", 1.13),
    (Area, "113 mm²", 1.13),
    (Volume, "5 mL", 5.0),
    (Time, "10 s", 10.0),
    (Time, "2 min", 120.0),
    (Time, "1.5 h", 5400.0),
    (PotentialRate, "1 mV/h", 1e-3 / 3600),
])
def test_quantities_parse_to_canonical_floats(qtype, text, value):
    assert TypeAdapter(qtype).validate_python(text) == pytest.approx(value)


@pytest.mark.parametrize(("qtype", "given", "message"), [
    (CurrentDensity, "5 V", '"5 V" is not a current density (expected e.g. "1 mA/cm^2")'),
    (CurrentDensity, 1, '1 has no unit (expected e.g. "1 mA/cm^2")'),
    (CurrentDensity, "1", '"1" has no unit (expected e.g. "1 mA/cm^2")'),
    (CurrentDensity, "mA/cm^2", '"mA/cm^2" has no number (expected e.g. "1 mA/cm^2")'),
    (Area, "1.13 furlongs", '"1.13 furlongs" is not an area (expected e.g. "1.13 cm^2")'),
    (Time, "-5 s", 'must be greater than zero (got "-5 s")'),
    (Time, "10**10**10 s", '"10**10**10 s" is not a time (expected e.g. "10 s")'),
    (Time, "10^99 s", '"10^99 s" is not a time (expected e.g. "10 s")'),
    (Time, "1 s^2^99", '"1 s^2^99" is not a time (expected e.g. "10 s")'),
])
def test_bad_quantities_say_what_was_given_and_what_is_allowed(qtype, given, message):
    with pytest.raises(ValidationError) as caught:
        TypeAdapter(qtype).validate_python(given)
    assert caught.value.errors()[0]["msg"] == message


# --- validation messages: file, field path, what is allowed ------------------------------------

CELL_2 = 'area = "1.13 cm^2"\nelectrolyte = "1 M NaPF6 in diglyme"\nnotes = "glyme, cell 2"'


@pytest.mark.parametrize(("old", "new", "expected"), [
    (CELL_2, CELL_2.replace('"1.13 cm^2"', '"5 V"'),
     f'{SRC}: cells[1].area: "5 V" is not an area (expected e.g. "1.13 cm^2")'),
    ('current_density = "1 mA/cm^2"', "current_density = 1",
     f'{SRC}: current_density: 1 has no unit (expected e.g. "1 mA/cm^2")'),
    ('current_density = "1 mA/cm^2"', 'current_density = "-1 mA/cm^2"',
     f'{SRC}: current_density: must be greater than zero (got "-1 mA/cm^2")'),
    ('kind = "plating_stripping"', 'kind = "plating_strip"',
     (f'{SRC}: kind: "plating_strip" is not one of plating_stripping, coulombic_efficiency, '
      "critical_current_density, ocv_impedance, gas_evolution, sequence")),
    ('kind = "plating_stripping"', "",
     f'{SRC}: kind: missing; the file must say what it is, e.g. kind = "plating_stripping"'),
    ("cycles = 200", "", f"{SRC}: cycles: missing; add e.g. cycles = 200 (or a rate_ladder)"),
    ("cycles = 200", "cycles = 0", f"{SRC}: cycles: must be at least 1 (got 0)"),
    ("cycles = 200", 'cycles = "200"',
     f'{SRC}: cycles: must be a whole number without quotes, e.g. 200 (got "200")'),
    ("cycles = 200", "cycles = 2.5", f"{SRC}: cycles: must be a whole number, e.g. 200 (got 2.5)"),
    ('type = "symmetric"', 'type = "sym"',
     f'{SRC}: cells[0].type: "sym" is not one of symmetric, na_cu, na_al, full'),
    ("channel = 1", "channel = 0", f"{SRC}: cells[1].channel: channel 0 is already used by cells[0]"),
    ('cell_id = "NaNa-C2"', 'cell_id = "NaNa-G1"',
     f'{SRC}: cells[3].cell_id: cell_id "NaNa-G1" is already used by cells[0]'),
    ('max_potential = "1 V"', 'max_potential = "-2 V"',
     f"{SRC}: safety.max_potential: must be above min_potential (-1 V), got -2 V"),
    ('# max_current = "5 mA"', 'max_current = "1 mA"',
     (f"{SRC}: safety.max_current: 1 mA is below the planned 1.13 mA (cell NaNa-G1, "
      "channel 0); raise max_current or lower the current")),
    ('# record_dE = "5 mV"', 'record_dE = "5 mA"',
     f'{SRC}: record_dE: "5 mA" is not a potential (expected e.g. "1 V")'),
])
def test_each_problem_names_file_field_and_what_is_allowed(old, new, expected):
    assert problems(edited(old, new)) == [expected]


def test_unknown_field_names_the_allowed_fields():
    (problem,) = problems(edited('notes = "glyme, cell 1"', 'notes = "x"\ncolour = "red"'))
    assert problem == (f"{SRC}: cells[0].colour: unknown field (allowed: channel, cell_id, "
                       "type, area, electrolyte, headspace, notes)")


def test_misspelt_field_suggests_the_right_one():
    assert problems(edited("cycles = 200", "cylces = 200")) == [
        (f'{SRC}: cylces: unknown field (did you mean "cycles"? allowed: name, description, '
         "safety, cells, current_density, areal_capacity, cycles, rate_ladder, record_interval, "
         "record_dE, rest_before, failure)"),
    ]


def test_toml_syntax_error_names_line_and_column():
    text = edited("cycles = 200", "cycles = ")
    line = line_of(text, "cycles =")
    assert problems(text) == [f"{SRC}: line {line}, column 10: not valid TOML: Invalid value"]


def test_unquoted_quantity_gets_a_hint_to_add_quotes():
    text = edited('current_density = "1 mA/cm^2"', "current_density = 1 mA/cm^2")
    (problem,) = problems(text)
    line = line_of(text, "current_density")
    assert problem.startswith(f"{SRC}: line {line}, column ")
    assert problem.endswith('(a value with a unit needs quotes, e.g. "1 mA/cm^2")')


def test_a_file_without_cells_asks_for_a_cells_table():
    assert problems(TEXT.split("[[cells]]")[0]) == [
        f"{SRC}: cells: missing; add one [[cells]] table per channel"]


def test_all_problems_are_reported_at_once_and_str_joins_them():
    text = edited("cycles = 200", "cycles = 0").replace('area = "1.13 cm^2"', 'area = "5 V"')
    with pytest.raises(ProtocolError) as caught:
        parse_protocol(text, SRC)
    err = caught.value
    assert len(err.problems) == 5  # cycles, and the area of each of the 4 cells
    assert str(err) == "\n".join(err.problems)
    assert all(p.startswith(f"{SRC}: ") for p in err.problems)


def test_a_missing_file_is_a_protocol_error_naming_it(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ProtocolError, match="nope.toml: cannot read the file"):
        load_protocol(missing)


# --- summary, schema, boundaries --------------------------------------------------------------

def test_summarize_shows_steps_and_totals_per_channel():
    text = summarize(load_protocol(EXAMPLE).plan)
    assert "safety: -1 V <= E <= 1 V, |I| <= 2.26 mA" in text
    assert "repeat 200x, one cycle each:" in text
    assert "plate: -1.13 mA until 1.13 mAh (1 h)" in text
    assert "strip: +1.13 mA until 1.13 mAh (1 h)" in text
    assert text.count("total: 400 h, 452 mAh passed") == 4
    assert "channel 2: NaNa-C1 (symmetric, 1.13 cm², 1 M NaClO4 in EC:DEC)" in text


def test_json_schema_describes_the_template_for_editors():
    schema = json_schema()
    ps = schema["$defs"]["PlatingStrippingModel"]
    assert ps["properties"]["kind"]["const"] == "plating_stripping"
    assert ps["additionalProperties"] is False
    assert ps["properties"]["current_density"]["type"] == "string"
    assert {"kind", "name", "cells", "areal_capacity"} <= set(ps["required"])


def test_protocols_package_imports_neither_drivers_nor_rig():
    for source in EXAMPLE.parent.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not [n for n in names if n.split(".")[0] in ("drivers", "rig")], source


# --- properties -------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(j_mA=st.floats(0.01, 20), area=st.floats(0.1, 10), q_mAh=st.floats(0.05, 10))
def test_any_current_density_expands_to_currents_of_the_right_sign_and_size(j_mA, area, q_mAh):
    plan = parse_protocol(minimal(f"{j_mA!r} mA/cm^2", f"{q_mAh!r} mAh/cm²", f"{area!r} cm^2"),
                          SRC)
    plate, strip = plan.channels[0].steps[0].steps
    assert plate.current_A < 0 < strip.current_A
    assert -plate.current_A == pytest.approx(j_mA * 1e-3 * area, rel=1e-9)
    assert strip.current_A == pytest.approx(j_mA * 1e-3 * area, rel=1e-9)
    assert plate.ends[0].value == pytest.approx(q_mAh * 3.6 * area, rel=1e-9)
    assert plan_totals(plan)[0][0] == pytest.approx(3 * 2 * 3600 * q_mAh / j_mA, rel=1e-9)


@settings(max_examples=150, deadline=None)
@given(text=st.text(alphabet="0123456789.eE+-*/^() µmkAVsChcm²³LH%", max_size=30))
def test_any_text_is_a_current_density_or_a_clear_error_never_a_crash(text):
    try:
        value = TypeAdapter(CurrentDensity).validate_python(text)
    except ValidationError as e:
        assert e.errors()[0]["type"] == "quantity"
    else:
        assert isinstance(value, float)
