"""The protocol library: every kind's example file, its expansion, and its validation messages."""

from __future__ import annotations

import re

import pytest

from protocols import (
    ProtocolError,
    builtin_protocol,
    json_schema,
    load_protocol,
    parse_protocol,
    plan_totals,
    summarize,
)
from protocols.plan import (
    ConstantCurrent,
    ConstantPotential,
    Eis,
    FailureCriteria,
    Loop,
    Rest,
    plan_from_json,
)

SRC = "protocols/x.toml"
MAH = 3.6
KINDS = ("plating_stripping", "coulombic_efficiency", "critical_current_density",
         "ocv_impedance", "gas_evolution", "sequence")
OUTCOME = {"plating_stripping": "failure_cycle", "coulombic_efficiency": "reservoir_ce",
           "critical_current_density": "ccd", "ocv_impedance": "sei_growth",
           "gas_evolution": "gas_per_cycle", "sequence": "failure_cycle"}

CELL = """
[[cells]]
channel = {ch}
cell_id = "{cell_id}"
type = "{type}"
area = "{area}"
electrolyte = "1 M NaPF6 in diglyme"
{extra}
"""


def cell(ch: int = 0, type: str = "symmetric", area: str = "1 cm^2", extra: str = "",
         cell_id: str | None = None) -> str:
    return CELL.format(ch=ch, cell_id=cell_id or f"c{ch}", type=type, area=area, extra=extra)


def protocol(kind: str, body: str, cells: str | None = None, tables: str = "") -> str:
    """A protocol file: kind, name, the kind's top-level fields, extra tables, the cells."""
    return (f'kind = "{kind}"\nname = "test"\n{body}\n{tables}\n'
            + (cells if cells is not None else cell()))


def problems(text: str) -> list[str]:
    with pytest.raises(ProtocolError) as caught:
        parse_protocol(text, SRC)
    return caught.value.problems


def only_problem(text: str) -> str:
    found = problems(text)
    assert len(found) == 1, found
    return found[0].removeprefix(f"{SRC}: ")


def ends(step) -> list[tuple[str, float, str]]:
    return [(e.kind, pytest.approx(e.value), e.then) for e in step.ends]


# --- every example file -----------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_every_example_file_expands_names_its_outcome_and_round_trips(kind):
    plan = load_protocol(builtin_protocol(kind)).plan
    assert plan.kind == kind
    assert plan.outcome == OUTCOME[kind]
    assert plan_from_json(plan.to_json()) == plan
    assert summarize(plan).startswith(f"{kind}: ")
    assert sorted(plan_totals(plan)) == sorted(c.cell.channel for c in plan.channels)
    assert {c.cell.electrolyte for c in plan.channels} == {
        "1 M NaPF6 in diglyme", "1 M NaClO4 in EC:DEC"}


@pytest.mark.parametrize("kind", KINDS)
def test_every_example_file_comments_every_field_it_sets(kind):
    """Up to the second [[cells]] table, every setting follows a comment, directly or through
    a group of settings or a table header that a comment introduces. (sequence.toml explains
    the fields of [[steps]] in one block above them.)"""
    lines = builtin_protocol(kind).read_text(encoding="utf-8").splitlines()
    in_text, previous, commented, cells_seen, in_steps = False, "", False, 0, False
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if line.count('"""') == 1:
            in_text = not in_text
            if not in_text:
                continue
        if in_text or not line:
            continue
        if line.startswith("["):
            cells_seen += line == "[[cells]]"
            in_steps = line.startswith("[[steps")
            commented = previous.startswith("#")
        elif re.match(r"\w+\s*=", line) and not line.startswith("kind") and not in_steps:
            assert previous.startswith("#") or re.match(r"\w+\s*=|\{", previous) or (
                previous.startswith("[") and commented), f"{kind}.toml line {number}: {raw}"
        if cells_seen == 2:
            break
        previous = line


@pytest.mark.parametrize(("kind", "hours"), [
    ("coulombic_efficiency", 85.0), ("critical_current_density", 38.75), ("ocv_impedance", 12.0),
    ("gas_evolution", 42.0),
])
def test_example_totals_are_modest_enough_for_the_virtual_clock(kind, hours):
    for duration_s, _ in plan_totals(load_protocol(builtin_protocol(kind)).plan).values():
        assert duration_s == pytest.approx(hours * 3600)


# --- plating-stripping: rate ladder and failure criteria ---------------------------------------

LADDER = ('areal_capacity = "1 mAh/cm^2"\nrecord_interval = "10 s"\nrate_ladder = ['
          '{current_density = "0.5 mA/cm^2", cycles = 10}, '
          '{current_density = "1 mA/cm^2", cycles = 10}, '
          '{current_density = "2 mA/cm^2", cycles = 5}]')


def test_rate_ladder_expands_to_one_counting_loop_per_rung_numbered_globally():
    plan = parse_protocol(protocol("plating_stripping", LADDER, cell(area="2 cm^2")), SRC)
    loops = plan.channels[0].steps
    assert [(lp.label, lp.count, lp.counts_cycles) for lp in loops] == [
        ("rate_1", 10, True), ("rate_2", 10, True), ("rate_3", 5, True)]
    assert [lp.steps[0].current_A for lp in loops] == pytest.approx([-1e-3, -2e-3, -4e-3])
    assert [lp.steps[1].current_A for lp in loops] == pytest.approx([1e-3, 2e-3, 4e-3])
    assert all(lp.steps[0].ends[0].value == pytest.approx(2 * MAH) for lp in loops)
    assert plan.total_cycles == 25
    rungs = plan.parameters["rungs"]
    assert [(r["first_cycle"], r["last_cycle"]) for r in rungs] == [(1, 10), (11, 20), (21, 25)]
    assert plan.safety.i_max_A == pytest.approx(8e-3)
    assert plan.outcome == "failure_cycle"


@pytest.mark.parametrize(("extra", "expected"), [
    ('current_density = "1 mA/cm^2"',
     "current_density: give either a rate_ladder or current_density and cycles, not both"),
    ("cycles = 3", "cycles: give either a rate_ladder or current_density and cycles, not both"),
])
def test_rate_ladder_with_current_density_or_cycles_is_an_error(extra, expected):
    assert only_problem(protocol("plating_stripping", LADDER + "\n" + extra)) == expected


def test_plating_stripping_without_current_density_asks_for_it_or_a_ladder():
    body = 'areal_capacity = "1 mAh/cm^2"\ncycles = 3\nrecord_interval = "10 s"'
    assert only_problem(protocol("plating_stripping", body)) == (
        'current_density: missing; add e.g. current_density = "1 mA/cm^2" (or a rate_ladder)')


def test_example_failure_table_becomes_the_plans_failure_criteria():
    plan = load_protocol(builtin_protocol("plating_stripping")).plan
    assert plan.failure == FailureCriteria(
        short_below_V=pytest.approx(5e-3), short_drop_fraction=0.5, short_drop_window_s=60.0,
        soft_short_ends=True, divergence_factor=None, divergence_reference_cycles=5)


def test_without_a_failure_table_plating_stripping_watches_for_nothing():
    body = LADDER
    assert parse_protocol(protocol("plating_stripping", body), SRC).failure == FailureCriteria()


@pytest.mark.parametrize(("table", "expected"), [
    ("divergence_factor = 0.5",
     ("failure.divergence_factor: must be above 1 (k x the early overpotential), or 0 to switch "
     "it off (got 0.5)")),
    ("short_drop_fraction = 1.5", "failure.short_drop_fraction: must be less than 1 (got 1.5)"),
    ('short_drop_fraction = "0.5"',
     'failure.short_drop_fraction: must be a number without quotes, e.g. 0.5 (got "0.5")'),
    ('short_below = "-5 mV"', "failure.short_below: must be 0 (off) or above, got -0.005 V"),
    ('short_below = "5 mA"',
     'failure.short_below: "5 mA" is not a potential (expected e.g. "1 V")'),
    ("soft_short_ends = 1", "failure.soft_short_ends: must be true or false (got 1)"),
    ("divergence_reference_cycles = 0",
     "failure.divergence_reference_cycles: must be at least 1 (got 0)"),
    ("short_below_mV = 5",
     ('failure.short_below_mV: unknown field (did you mean "short_below"? allowed: short_below, '
     "short_below_resistance, short_drop_fraction, short_drop_window, soft_short_ends, divergence_factor, "
     "divergence_reference_cycles)")),
])
def test_failure_table_errors_name_the_field(table, expected):
    assert only_problem(protocol("plating_stripping", LADDER, tables=f"[failure]\n{table}")) == (
        expected)


# --- Coulombic efficiency ---------------------------------------------------------------------

CE = 'method = "{method}"\ncycles = {n}\nrecord_interval = "10 s"\n{extra}'


def ce(method: str = "reservoir", n: int = 10, extra: str = "", cells: str | None = None,
       tables: str = "") -> str:
    return protocol("coulombic_efficiency", CE.format(method=method, n=n, extra=extra),
                    cells if cells is not None else cell(type="na_cu"), tables)


def test_reservoir_method_expands_to_the_labelled_steps_with_domain_defaults():
    plan = parse_protocol(ce(), SRC)
    f_plate, f_strip, reservoir, loop, final = plan.channels[0].steps
    i = 0.5e-3
    assert [s.label for s in (f_plate, f_strip, reservoir, final)] == [
        "formation_plate", "formation_strip", "reservoir", "final_strip"]
    assert (f_plate.current_A, f_strip.current_A) == pytest.approx((-i, i))
    assert ends(f_plate) == [("charge", 5 * MAH, "next")]
    assert ends(f_strip) == [("potential_above", 1.0, "next"),
                             ("time", 1.25 * 5 * MAH / i, "end:cutoff_not_reached")]
    assert reservoir.current_A == pytest.approx(-i) and ends(reservoir) == [
        ("charge", 5 * MAH, "next")]
    assert (loop.count, loop.counts_cycles) == (10, True)
    plate, strip = loop.steps
    assert (plate.label, plate.half_cycle, strip.label, strip.half_cycle) == (
        "cycle_plate", "plate", "cycle_strip", "strip")
    assert ends(plate) == [("charge", MAH, "next")]
    assert ends(strip) == [("charge", MAH, "next"), ("potential_above", 1.0, "final_strip")]
    assert final.half_cycle is None and ends(final)[0] == ("potential_above", 1.0, "next")
    assert (plan.outcome, plan.total_cycles) == ("reservoir_ce", 10)
    assert (plan.safety.e_min_V, plan.safety.e_max_V) == (-1.0, 3.0)
    assert plan.parameters["reservoir_capacity_C_per_cm2"] == pytest.approx(5 * MAH)


def test_reservoir_capacities_and_current_density_scale_with_the_area():
    extra = ('current_density = "1 mA/cm^2"\ncycle_capacity = "0.5 mAh/cm^2"\n'
             'reservoir_capacity = "2 mAh/cm^2"\nformation_capacity = "3 mAh/cm^2"\n'
             'cutoff = "0.5 V"')
    plan = parse_protocol(ce(extra=extra, cells=cell(type="na_al", area="2 cm^2")), SRC)
    f_plate, f_strip, reservoir, loop, _ = plan.channels[0].steps
    assert f_plate.current_A == pytest.approx(-2e-3)
    assert f_plate.ends[0].value == pytest.approx(6 * MAH)
    assert reservoir.ends[0].value == pytest.approx(4 * MAH)
    assert loop.steps[0].ends[0].value == pytest.approx(1 * MAH)
    assert f_strip.ends[0].value == 0.5


def test_per_cycle_method_strips_to_the_cutoff_with_a_time_guard():
    plan = parse_protocol(ce("per_cycle", 5, 'cutoff = "0.5 V"'), SRC)
    (loop,) = plan.channels[0].steps
    plate, strip = loop.steps
    assert (loop.count, loop.counts_cycles) == (5, True)
    assert (plate.label, plate.half_cycle, strip.label, strip.half_cycle) == (
        "plate", "plate", "strip", "strip")
    assert plate.current_A < 0 < strip.current_A
    assert ends(strip) == [("potential_above", 0.5, "next"),
                           ("time", 1.25 * MAH / 0.5e-3, "end:cutoff_not_reached")]
    assert plan.outcome == "per_cycle_ce"
    assert plan.parameters["reservoir_capacity_C_per_cm2"] is None


@pytest.mark.parametrize(("text", "expected"), [
    (ce(cells=cell(type="symmetric")),
     ('cells[0].type: "symmetric" is not allowed for coulombic_efficiency (use na_cu or na_al: CE '
     "needs a working electrode that starts without Na)")),
    (ce("per_cycle", extra='reservoir_capacity = "5 mAh/cm^2"'),
     'reservoir_capacity: only used when method = "reservoir"; remove it'),
    (ce(tables='[safety]\nmax_potential = "0.8 V"'),
     ("cutoff: 1 V is not inside the safety window (-1 V to 0.8 V): the safety trip would end "
     "every strip")),
    (ce(method="both"), 'method: "both" is not one of reservoir, per_cycle'),
    (ce(extra='cutoff = "-1 V"'), 'cutoff: must be greater than zero (got "-1 V")'),
])
def test_coulombic_efficiency_errors(text, expected):
    assert only_problem(text) == expected


# --- critical current density -----------------------------------------------------------------

CCD = 'areal_capacity = "1 mAh/cm^2"\ncycles_per_step = 5\nrecord_interval = "10 s"\n{extra}'


def ccd(extra: str, tables: str = "", cells: str | None = None) -> str:
    return protocol("critical_current_density", CCD.format(extra=extra), cells, tables)


def test_ccd_ramp_by_factor_expands_to_counting_loops_of_rising_current():
    plan = parse_protocol(ccd('ramp = {start = "0.5 mA/cm^2", factor = 2.0, '
                              'max = "8 mA/cm^2"}'), SRC)
    loops = plan.channels[0].steps
    assert [lp.steps[1].current_A for lp in loops] == pytest.approx(
        [0.5e-3, 1e-3, 2e-3, 4e-3, 8e-3])
    assert all(isinstance(lp, Loop) and lp.count == 5 and lp.counts_cycles for lp in loops)
    assert all(lp.steps[0].ends[0].value == pytest.approx(MAH) for lp in loops)
    assert plan.total_cycles == 25
    assert plan.outcome == "ccd"
    assert plan.expected_ends == ("short_hard", "short_soft", "safety_window")
    assert plan.failure.short_below_V == pytest.approx(5e-3)
    assert plan.failure.short_drop_fraction == 0.5
    assert plan.parameters["rungs"][-1] == {"current_density_A_per_cm2": pytest.approx(8e-3),
                                            "cycles": 5, "first_cycle": 21, "last_cycle": 25}


def test_ccd_ramp_by_step_and_list_of_densities_agree():
    by_step = parse_protocol(ccd('ramp = {start = "1 mA/cm^2", step = "1 mA/cm^2", '
                                 'max = "3.5 mA/cm^2"}'), SRC)
    listed = parse_protocol(ccd('current_densities = ["1 mA/cm^2", "2 mA/cm^2", '
                                '"3 mA/cm^2"]'), SRC)
    assert by_step.channels == listed.channels
    assert listed.parameters["current_densities_A_per_cm2"] == pytest.approx([1e-3, 2e-3, 3e-3])


def test_ccd_failure_table_overrides_the_defaults_and_zero_switches_off():
    plan = parse_protocol(ccd('current_densities = ["1 mA/cm^2"]',
                              '[failure]\nshort_below = "2 mV"\nshort_drop_fraction = 0'), SRC)
    assert plan.failure.short_below_V == pytest.approx(2e-3)
    assert plan.failure.short_drop_fraction is None


@pytest.mark.parametrize(("text", "expected"), [
    (ccd(""), ('current_densities: give exactly one of current_densities = ["0.5 mA/cm^2", ...] '
              "or a [ramp] table")),
    (ccd('current_densities = ["1 mA/cm^2"]\nramp = {start = "1 mA/cm^2", factor = 2.0, '
         'max = "2 mA/cm^2"}'),
     ('current_densities: give exactly one of current_densities = ["0.5 mA/cm^2", ...] or a '
     "[ramp] table")),
    (ccd('current_densities = ["1 mA/cm^2", "0.5 mA/cm^2"]'),
     "current_densities[1]: must be above the one before it (1 mA/cm^2)"),
    (ccd('current_densities = ["1 mA/cm^2", "5 V"]'),
     'current_densities[1]: "5 V" is not a current density (expected e.g. "1 mA/cm^2")'),
    (ccd("current_densities = []"), "current_densities: must not be empty"),
    (ccd('current_densities = "1 mA/cm^2"'),
     ('current_densities: must be a list, e.g. current_densities = ["0.5 mA/cm^2", '
     '"1 mA/cm^2", "2 mA/cm^2"] (got "1 mA/cm^2")')),
    (ccd('ramp = {start = "1 mA/cm^2", max = "2 mA/cm^2"}'),
     "ramp: give exactly one of step (added) or factor (multiplied)"),
    (ccd('ramp = {start = "2 mA/cm^2", factor = 2.0, max = "1 mA/cm^2"}'),
     "ramp.max: must be at least start (2 mA/cm^2)"),
    (ccd('ramp = {start = "1 mA/cm^2", factor = 1.0, max = "2 mA/cm^2"}'),
     "ramp.factor: must be greater than 1 (got 1.0)"),
    (ccd('ramp = {start = "0.01 mA/cm^2", step = "0.01 mA/cm^2", max = "5 mA/cm^2"}'),
     "ramp: makes more than 50 current densities; use a larger step or factor"),
    (ccd('current_densities = ["1 mA/cm^2"]', cells=cell(type="na_cu")),
     ('cells[0].type: "na_cu" is not allowed for critical_current_density (use symmetric: a '
     "short is seen as a symmetric cell's voltage collapsing)")),
])
def test_critical_current_density_errors(text, expected):
    assert only_problem(text) == expected


# --- OCV-impedance ----------------------------------------------------------------------------

def ocv(extra: str, tables: str = "") -> str:
    return protocol("ocv_impedance", f'record_interval = "1 min"\n{extra}', tables=tables)


def test_ocv_impedance_duration_gives_a_sweep_then_rest_and_sweep_each_interval():
    plan = parse_protocol(ocv('duration = "12 h"'), SRC)
    first, loop = plan.channels[0].steps
    assert isinstance(first, Eis) and isinstance(loop, Loop)
    assert (first.f_start_Hz, first.f_end_Hz, first.points_per_decade, first.amplitude_V,
            first.dc_V) == pytest.approx((2e5, 0.1, 6, 0.01, None))
    rest, sweep = loop.steps
    assert isinstance(rest, Rest) and ends(rest) == [("time", 3600.0, "next")]
    assert sweep == first and not loop.counts_cycles
    assert loop.count == 12 and plan.parameters["sweeps"] == 13
    assert plan.outcome == "sei_growth" and plan.total_cycles == 0
    assert plan.safety.i_max_A == pytest.approx(0.01)  # 10 mV across 1 ohm
    assert plan_totals(plan)[0] == pytest.approx((12 * 3600, 0.0))


def test_ocv_impedance_by_sweeps_with_dEdt_ends_and_a_custom_sweep():
    tables = '[eis]\nf_start = "100 kHz"\nf_end = "1 Hz"\npoints_per_decade = 10\ndc = "0 V"'
    plan = parse_protocol(ocv('sweeps = 4\ninterval = "30 min"\nsweep_at_start = false\n'
                              'rest_dEdt_below = "1 mV/h"', tables), SRC)
    (loop,) = plan.channels[0].steps
    rest, sweep = loop.steps
    assert loop.count == 4
    assert ends(rest) == [("time", 1800.0, "next"), ("dEdt_below", 1e-3 / 3600, "next")]
    assert (sweep.f_start_Hz, sweep.f_end_Hz, sweep.points_per_decade, sweep.dc_V) == (
        pytest.approx(1e5), 1.0, 10, 0.0)


@pytest.mark.parametrize(("text", "expected"), [
    (ocv(""), "duration: give exactly one of duration (total rest time) or sweeps"),
    (ocv('duration = "1 h"\nsweeps = 2'),
     "duration: give exactly one of duration (total rest time) or sweeps"),
    (ocv('duration = "30 min"'), "duration: 1800 s is shorter than one interval (3600 s)"),
    (ocv("sweeps = 3", '[eis]\nf_start = "1 kHz"\nf_end = "1 kHz"'),
     "eis.f_end: must differ from f_start"),
    (ocv("sweeps = 3", '[eis]\namplitude = "10 mA"'),
     'eis.amplitude: "10 mA" is not a potential (expected e.g. "1 V")'),
    (ocv('sweeps = 3\nrest_dEdt_below = "1 mV"'),
     'rest_dEdt_below: "1 mV" is not a potential rate (expected e.g. "1 mV/h")'),
])
def test_ocv_impedance_errors(text, expected):
    assert only_problem(text) == expected


# --- gas evolution ----------------------------------------------------------------------------

GAS = ('current_density = "1 mA/cm^2"\nareal_capacity = "1 mAh/cm^2"\ncycles = 20\n'
       'record_interval = "10 s"')


def test_gas_evolution_rests_for_the_baseline_then_cycles_and_records_headspaces():
    cells = cell(0, extra='headspace = "5 mL"') + cell(1, extra='headspace = "3 cm^3"')
    plan = parse_protocol(protocol("gas_evolution", GAS, cells), SRC)
    rest, loop = plan.channels[0].steps
    assert rest.label == "baseline" and ends(rest) == [("time", 7200.0, "next")]
    assert (loop.count, loop.counts_cycles) == (20, True)
    assert [s.half_cycle for s in loop.steps] == ["plate", "strip"]
    assert plan.outcome == "gas_per_cycle" and plan.total_cycles == 20
    assert [c["headspace_mL"] for c in plan.parameters["cells"]] == pytest.approx([5.0, 3.0])


def test_gas_evolution_needs_every_cells_headspace():
    cells = cell(0, extra='headspace = "5 mL"') + cell(1)
    assert only_problem(protocol("gas_evolution", GAS, cells)) == (
        'cells[1].headspace: missing; gas_evolution needs the holder\'s gas volume, '
        'e.g. headspace = "5 mL"')


# --- sequence: expansion ----------------------------------------------------------------------

SEQ_HEAD = '[record]\nevery = "10 s"\n[safety]\nmax_current = "5 mA"\n'


def seq(steps: str, head: str = SEQ_HEAD, cells: str | None = None, top: str = "") -> str:
    return f'kind = "sequence"\nname = "t"\n{top}\n{head}\n{steps}\n' + (
        cells if cells is not None else cell(area="2 cm^2"))


PLATE_STRIP = """
[[steps]]
type = "loop"
count = 3
counts_cycles = true
  [[steps.steps]]
  type = "current_density"
  label = "plate"
  current_density = "-1 mA/cm^2"
  half_cycle = "plate"
  until = [{areal_charge = "1 mAh/cm^2"}, {potential_below = "-0.5 V", then = "end:diverged"}]
  [[steps.steps]]
  type = "current_density"
  label = "strip"
  current_density = "1 mA/cm^2"
  half_cycle = "strip"
  until = {areal_charge = "1 mAh/cm^2", potential_above = "0.5 V"}
"""


def test_sequence_scales_current_densities_and_areal_charges_by_each_cells_area():
    plan = parse_protocol(seq(PLATE_STRIP, cells=cell(0, area="2 cm^2") + cell(1)), SRC)
    big, small = (c.steps[0] for c in plan.channels)
    assert big.steps[0].current_A == pytest.approx(-2e-3)
    assert small.steps[0].current_A == pytest.approx(-1e-3)
    assert ends(big.steps[0]) == [("charge", 2 * MAH, "next"),
                                  ("potential_below", -0.5, "end:diverged")]
    # one table with two conditions: either ends the step
    assert ends(small.steps[1]) == [("charge", MAH, "next"), ("potential_above", 0.5, "next")]
    assert (big.count, big.counts_cycles, plan.total_cycles) == (3, True, 3)
    assert big.steps[0].record.every_s == 10.0


def test_sequence_steps_of_every_type_with_their_records_and_labels():
    steps = """
[[steps]]
type = "rest"
until = [{dEdt_below = "1 mV/h"}, {time = "2 h"}]
record = {every = "1 min", dE = "1 mV"}
[[steps]]
type = "eis"
amplitude = "5 mV"
[[steps]]
type = "current"
current = "-0.5 mA"
until = {charge = "1 mAh", time = "3 h"}
[[steps]]
type = "potential"
label = "hold"
potential = "10 mV"
until = [{current_below = "10 uA"}, {time = "1 h", then = "end:hold_timeout"}]
record = {every = "5 s", dI = "0.1 mA"}
[[steps]]
type = "rest"
until = {time = "10 min"}
"""
    plan = parse_protocol(seq(steps), SRC)
    rest, eis, current, hold, rest2 = plan.channels[0].steps
    assert isinstance(rest, Rest) and rest.label == "rest"
    assert (rest.record.every_s, rest.record.every_dE_V) == pytest.approx((60.0, 1e-3))
    assert ends(rest) == [("dEdt_below", 1e-3 / 3600, "next"), ("time", 7200.0, "next")]
    assert isinstance(eis, Eis) and eis.amplitude_V == pytest.approx(5e-3) and eis.dc_V is None
    assert isinstance(current, ConstantCurrent) and current.current_A == pytest.approx(-5e-4)
    assert current.label == "current" and current.half_cycle is None
    assert ends(current) == [("time", 3 * 3600.0, "next"), ("charge", MAH, "next")]
    assert isinstance(hold, ConstantPotential) and hold.potential_V == pytest.approx(0.01)
    assert (hold.record.every_s, hold.record.every_dI_A) == pytest.approx((5.0, 1e-4))
    assert ends(hold) == [("current_below", 1e-5, "next"), ("time", 3600.0, "end:hold_timeout")]
    assert rest2.label == "rest" and rest2.record.every_s == 10.0
    assert plan.total_cycles == 0 and plan.outcome is None


def test_sequence_auto_labels_never_shadow_a_written_label():
    steps = ('[[steps]]\ntype = "rest"\nlabel = "rest"\nuntil = {time = "1 h", then = "end:x"}\n'
             '[[steps]]\ntype = "rest"\nuntil = {time = "1 h"}\n')
    plan = parse_protocol(seq(steps), SRC)
    assert [s.label for s in plan.channels[0].steps] == ["rest", "rest_2"]


def test_sequence_cycles_count_through_nested_loops_and_gotos_jump_forward_out_of_loops():
    steps = """
[[steps]]
type = "loop"
count = 2
  [[steps.steps]]
  type = "loop"
  count = 4
  counts_cycles = true
    [[steps.steps.steps]]
    type = "current"
    current = "1 mA"
    until = [{time = "1 h"}, {potential_above = "0.5 V", then = "done"}]
[[steps]]
type = "rest"
label = "done"
until = {time = "1 h"}
"""
    plan = parse_protocol(seq(steps), SRC)
    assert plan.total_cycles == 8
    inner = plan.channels[0].steps[0].steps[0]
    assert inner.counts_cycles and inner.steps[0].ends[1].then == "done"


def test_sequence_outcome_failure_and_expected_ends_reach_the_plan():
    top = 'outcome = "per_cycle_ce"\nexpected_ends = ["diverged", "short_hard"]'
    head = SEQ_HEAD + '[failure]\nshort_below = "1 mV"\n'
    plan = parse_protocol(seq(PLATE_STRIP, head, top=top), SRC)
    assert plan.outcome == "per_cycle_ce"
    assert plan.expected_ends == ("diverged", "short_hard")
    assert plan.failure.short_below_V == pytest.approx(1e-3)


# --- sequence: every validation message -------------------------------------------------------

GOTO_LOOP = """
[[steps]]
type = "rest"
label = "settle"
until = {{time = "1 h"}}
[[steps]]
type = "loop"
count = 2
  [[steps.steps]]
  type = "current"
  label = "plate"
  current = "-1 mA"
  until = [{{charge = "1 mAh"}}, {{potential_below = "-0.5 V", then = "{then}"}}]
  [[steps.steps]]
  type = "current"
  label = "strip"
  current = "1 mA"
  until = {{charge = "1 mAh"}}
"""


@pytest.mark.parametrize(("then", "expected"), [
    ("strp", ('steps[1].steps[0].until[1].then: "strp" is not a step label (labels: settle, '
             "plate, strip)")),
    ("settle", ('steps[1].steps[0].until[1].then: "settle" (steps[0]) does not come after this '
               "step: a goto only jumps forward (to repeat steps, use a loop with a count)")),
    ("plate", ('steps[1].steps[0].until[1].then: "plate" (steps[1].steps[0]) does not come after '
              "this step: a goto only jumps forward (to repeat steps, use a loop with a count)")),
    ("end:", ('steps[1].steps[0].until[1].then: "end:": after "end:" give a name of letters, '
             'digits and _, e.g. "end:cutoff_reached"')),
    ("end:too far", ('steps[1].steps[0].until[1].then: "end:too far": after "end:" give a name of '
                    'letters, digits and _, e.g. "end:cutoff_reached"')),
])
def test_goto_errors_name_the_then_field_and_the_labels(then, expected):
    assert only_problem(seq(GOTO_LOOP.format(then=then))) == expected


def test_goto_to_the_next_step_of_its_own_loop_body_is_fine():
    plan = parse_protocol(seq(GOTO_LOOP.format(then="strip")), SRC)
    assert plan.channels[0].steps[1].steps[0].ends[1].then == "strip"


def test_goto_into_a_loop_from_outside_it_is_an_error():
    steps = GOTO_LOOP.format(then="next").replace('until = {time = "1 h"}',
                                                 'until = {time = "1 h", then = "strip"}', 1)
    assert only_problem(seq(steps)) == (
        'steps[0].until[0].then: "strip" (steps[1].steps[1]) is inside a loop this step is not '
        "in: a goto jumps to a step of its own list or of an enclosing one")


def test_goto_without_any_labels_says_so():
    steps = '[[steps]]\ntype = "rest"\nuntil = {time = "1 h", then = "x"}\n'
    assert only_problem(seq(steps)) == (
        'steps[0].until[0].then: "x" is not a step label (no step has a label)')


def rest_step(until: str = '{time = "1 h"}', label: str = "", extra: str = "") -> str:
    lab = f'label = "{label}"\n' if label else ""
    return f'[[steps]]\ntype = "rest"\n{lab}until = {until}\n{extra}'


def current_step(until: str, current: str = "1 mA", kind: str = "current") -> str:
    amount = f'{kind} = "{current}"'
    return f'[[steps]]\ntype = "{kind}"\n{amount}\nuntil = {until}\n'


def potential_step(until: str, potential: str = "0 V") -> str:
    return f'[[steps]]\ntype = "potential"\npotential = "{potential}"\nuntil = {until}\n'


@pytest.mark.parametrize(("steps", "expected"), [
    (rest_step(label="a") + rest_step(label="a"),
     'steps[1].label: label "a" is already used by steps[0]'),
    (rest_step(label="next"), 'steps[0].label: "next" is reserved for then; choose another'),
    (rest_step(label="end:x"), 'steps[0].label: "end:x" is reserved for then; choose another'),
    (rest_step('{dEdt_below = "1 mV/h"}'),
     ('steps[0].until: nothing bounds this rest; add a time limit, e.g. {time = "10 h"} (a rest '
     "passes no charge, and its other ends fire only if the cell gets there)")),
    (current_step('{potential_above = "0.5 V"}'),
     ('steps[0].until: nothing bounds this step; add a charge or time limit, e.g. '
     '{time = "10 h", then = "end:timeout"} (a potential or dEdt end fires only if the cell '
     "gets there)")),
    (potential_step('{charge = "1 mAh"}'),
     ('steps[0].until: nothing bounds this potential step; add a time limit, e.g. '
     '{time = "10 h"} (the charge a potential step passes is up to the cell, and its other ends '
     "fire only if the cell gets there)")),
    (rest_step('[{time = "1 h"}, {charge = "1 mAh"}]'),
     ("steps[0].until[1].charge: a rest passes no current; end it on time, potential or "
     "dEdt_below")),
    (current_step('[{time = "1 h"}, {current_below = "1 uA"}]'),
     ("steps[0].until[1].current_below: a current step holds its current; current ends are for "
     "potential steps")),
    (potential_step('[{time = "1 h"}, {potential_above = "0.5 V"}]'),
     ("steps[0].until[1].potential_above: a potential step holds its potential; end it on time, "
     "charge or current")),
    (current_step('[{time = "1 h"}, {potential_above = "1 V"}]'),
     ("steps[0].until[1].potential_above: 1 V is not inside the safety window (-1 V to 1 V): the "
     "safety trip would always come first")),
    (potential_step('{time = "1 h"}', potential="1.5 V"),
     "steps[0].potential: 1.5 V is outside the safety window (-1 V to 1 V)"),
    (current_step('{time = "1 h"}', current="0 mA"),
     "steps[0].current: must not be zero; use a rest step for open circuit"),
    (current_step('{time = "1 h"}', current="0 mA/cm^2", kind="current_density"),
     "steps[0].current_density: must not be zero; use a rest step for open circuit"),
    (rest_step('[{time = "1 h"}, {then = "next"}]'),
     ("steps[0].until[1]: no end condition; give one of time, charge, areal_charge, "
     "potential_above, potential_below, current_above, current_below, dEdt_below")),
    (rest_step('{time = "1 h"}', extra='half_cycle = "plate"\n'),
     "steps[0].half_cycle: unknown field (allowed: label, until, record)"),
    (rest_step('"1 h"'), ('steps[0].until: must be a table or a list of tables, e.g. '
                         'until = {time = "1 h"} (got "1 h")')),
    (rest_step('{time = "1 V"}'), ('steps[0].until[0].time: "1 V" is not a time (expected e.g. '
                                  '"10 s")')),
    ('[[steps]]\nuntil = {time = "1 h"}\n',
     ('steps[0].type: missing; each step says what it is, e.g. type = "rest" (one of rest, '
     "current, current_density, potential, eis, loop)")),
    ('[[steps]]\ntype = "wait"\nuntil = {time = "1 h"}\n',
     'steps[0].type: "wait" is not one of rest, current, current_density, potential, eis, loop'),
    ('[[steps]]\ntype = "loop"\ncount = 0\n' + rest_step().replace("[[steps]]",
                                                                    "[[steps.steps]]"),
     "steps[0].count: must be at least 1 (got 0)"),
    (('[[steps]]\ntype = "loop"\ncount = 2\ncounts_cycles = true\n[[steps.steps]]\ntype = "loop"\n'
     'count = 2\ncounts_cycles = true\n[[steps.steps.steps]]\ntype = "rest"\n'
     'until = {time = "1 h"}\n'),
     ("steps[0].steps[0].counts_cycles: a loop inside a loop that counts cycles cannot count "
     "them too (steps[0] does)")),
    ('[[steps]]\ntype = "eis"\nf_start = "1 kHz"\nf_end = "1000 Hz"\n',
     "steps[0].f_end: must differ from f_start"),
    ('[[steps]]\ntype = "eis"\nf_start = "1 kHz"\ncolour = "red"\n',
     ('steps[0].colour: unknown field (allowed: label, f_start, f_end, points_per_decade, '
     "amplitude, dc)")),
])
def test_sequence_step_errors_name_the_field_path(steps, expected):
    assert only_problem(seq(steps)) == expected


def test_sequence_step_without_a_recording_rule_asks_for_one():
    assert only_problem(seq(rest_step(), head='[safety]\nmax_current = "5 mA"\n')) == (
        'steps[0].record: missing; add record = {every = "10 s"} to the step, or a [record] '
        "table for every step")


def test_sequence_with_potential_or_eis_steps_needs_max_current():
    assert only_problem(seq('[[steps]]\ntype = "eis"\n', head='[record]\nevery = "1 s"\n')) == (
        "safety.max_current: missing; the current of a potential or EIS step is up to the cell, "
        'so give the largest |current| allowed, e.g. max_current = "5 mA"')


def test_sequence_of_rests_only_gets_a_nonzero_default_max_current():
    plan = parse_protocol(seq(rest_step(), head='[record]\nevery = "10 s"\n'), SRC)
    assert plan.safety.i_max_A == pytest.approx(1e-3)  # not 2 x 0 A: noise would trip it
    given = parse_protocol(seq(rest_step(), head='[record]\nevery = "10 s"\n[safety]\n'
                                                 'max_current = "50 uA"\n'), SRC)
    assert given.safety.i_max_A == pytest.approx(50e-6)


def test_sequence_expected_ends_must_be_known_reasons():
    assert only_problem(seq(PLATE_STRIP, top='expected_ends = ["shrot"]')) == (
        'expected_ends[0]: "shrot" is neither an end:<outcome> of this file nor an engine end '
        "reason (allowed: diverged, short_hard, short_soft, overpotential_divergence, "
        "safety_window)")


def test_sequence_outcome_must_be_a_known_one():
    assert only_problem(seq(PLATE_STRIP, top='outcome = "ce"')) == (
        'outcome: "ce" is not one of reservoir_ce, per_cycle_ce, ccd, failure_cycle, '
        "sei_growth, gas_per_cycle")


def test_sequence_without_steps_asks_for_them():
    assert only_problem(seq("")) == (
        'steps: missing; add the steps as [[steps]] tables, e.g. type = "rest"')


# --- schema and summaries ---------------------------------------------------------------------

def test_json_schema_has_every_kind_and_every_step_type():
    schema = json_schema()
    defs = schema["$defs"]
    for model in ("PlatingStrippingModel", "CoulombicEfficiencyModel",
                  "CriticalCurrentDensityModel", "OcvImpedanceModel", "GasEvolutionModel",
                  "SequenceModel", "RestStep", "CurrentStep", "CurrentDensityStep",
                  "PotentialStep", "EisStep", "LoopStep", "FailureModel", "EndModel"):
        assert defs[model]["additionalProperties"] is False, model
    kinds = {d["properties"]["kind"]["const"] for d in defs.values()
             if "kind" in d.get("properties", {})}
    assert kinds == set(KINDS)
    until = defs["RestStep"]["properties"]["until"]
    assert [b.get("type") for b in until["anyOf"]] == [None, "array"]  # a table, or a list
    assert defs["CoulombicEfficiencyModel"]["properties"]["cutoff"]["default"] == "1 V"


def test_summary_says_when_totals_are_upper_bounds_and_shows_eis_and_gotos():
    ce_text = summarize(load_protocol(builtin_protocol("coulombic_efficiency")).plan)
    assert ("final_strip: +0.565 mA until E > 1 V or after 12.5 h then end:cutoff_not_reached "
            "(at most 12.5 h)") in ce_text
    assert "until E > 1 V then final_strip" in ce_text
    assert "total: at most 85 h" in ce_text
    ocv_text = summarize(load_protocol(builtin_protocol("ocv_impedance")).plan)
    assert "eis: EIS 200 kHz -> 100 mHz, 6/decade, 10 mV around open circuit" in ocv_text
    assert "sweeps: repeat 12x:" in ocv_text
    assert "(13 open-ended steps not counted)" in ocv_text
    seq_text = summarize(load_protocol(builtin_protocol("sequence")).plan)
    assert "hold: 0 V until |I| < 10 µA or after 30 min" in seq_text
    assert "record: every 10 s or 0.05 mA" in seq_text
    ccd_text = summarize(load_protocol(builtin_protocol("critical_current_density")).plan)
    assert "rate_5: repeat 5x, one cycle each:" in ccd_text
    assert "total: 38.75 h, 56.5 mAh passed" in ccd_text


def test_every_example_file_is_valid_against_the_json_schema():
    jsonschema = pytest.importorskip("jsonschema")
    import tomllib

    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    for kind in KINDS:
        jsonschema.validate(tomllib.loads(builtin_protocol(kind).read_text(encoding="utf-8")),
                            schema)
