"""The Na-metal cell model reproduces domain.md's numbers ("Numbers the simulated station should
reproduce"). Cells are 1.13 cm² (a 12 mm disc); currents in A, positive = stripping the WE."""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rig.sim.cell import PRESETS, Electrolyte, NaCell, electrolyte_for

AREA = 1.13
I_1MA = 1e-3 * AREA  # 1 mA/cm²
Q_1MAH = 3.6 * AREA  # 1 mAh/cm² in C
QUIET = {"noise_V": 0.0, "noise_rel": 0.0, "spike_rate_per_h": 0.0}
NO_SHORTS = {"short_ccd_mA_cm2": 1e9}


def cycle_overpotentials(cell: NaCell, cycles: int, dt_s: float = 120.0,
                         current_A: float = I_1MA) -> list[float]:
    """Mean |E| of each cycle of plate/strip half-cycles of 1 mAh/cm² at ``current_A``."""
    steps = round(Q_1MAH / current_A / dt_s)
    means = []
    for _ in range(cycles):
        total = 0.0
        for sign in (-1.0, 1.0):
            total += sum(abs(cell.apply_current(sign * current_A, dt_s)) for _ in range(steps))
        means.append(total / (2 * steps))
    return means


def plate_then_strip_to_cutoff(cell: NaCell, current_A: float, cutoff_V: float = 1.0,
                               dt_s: float = 2.0) -> tuple[float, float, list[float]]:
    """One Na‖Cu cycle: plate 1 mAh/cm², strip until E >= cutoff. (plated C, stripped C, strip E).

    The strip is sampled every ``dt_s``: the last step overshoots by at most I·dt (0.06 %)."""
    steps = round(Q_1MAH / current_A / 60.0)
    for _ in range(steps):
        cell.apply_current(-current_A, 60.0)
    stripped, trace = 0.0, []
    while not trace or trace[-1] < cutoff_V:
        trace.append(cell.apply_current(current_A, dt_s))
        stripped += current_A * dt_s
        assert stripped < 2 * Q_1MAH, "strip never reached the cutoff"
    return steps * current_A * 60.0, stripped, trace


def gas_per_cycle(cell: NaCell, cycles: int) -> list[float]:
    out, before = [], cell.gas_mol
    for _ in range(cycles):
        cycle_overpotentials(cell, 1, dt_s=600.0)
        out.append(cell.gas_mol - before)
        before = cell.gas_mol
    return out


@pytest.fixture(scope="module")
def standard_runs() -> dict[str, list[float]]:
    """The standard test: 200 cycles at 1 mA/cm², 1 mAh/cm² half-cycles, glyme and carbonate."""
    return {name: cycle_overpotentials(NaCell("symmetric", AREA, PRESETS[name], seed=0), 200)
            for name in ("glyme", "carbonate")}


# ----- overpotential ----------------------------------------------------------------------------
def test_glyme_overpotential_is_10_to_30_mV_and_flat_for_200_cycles(standard_runs):
    eta = standard_runs["glyme"]
    assert 0.010 <= eta[0] <= 0.030
    assert 0.010 <= eta[199] <= 0.030
    assert eta[199] / eta[0] < 1.2


def test_carbonate_overpotential_starts_100_to_300_mV_and_rises_several_fold(standard_runs):
    eta = standard_runs["carbonate"]
    assert 0.100 <= eta[0] <= 0.300
    assert eta[0] < eta[99] < eta[199]
    assert eta[199] > 2.5 * eta[0]
    assert eta[199] < 1.0, "the standard example run should stay inside the ±1 V window"


def test_carbonate_diverges_past_twice_its_early_value_within_100_to_300_cycles(standard_runs):
    eta = standard_runs["carbonate"]
    early = statistics.mean(eta[:5])
    first_over = next(k for k, value in enumerate(eta) if value > 2 * early)
    assert 50 <= first_over <= 200


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_glyme_does_not_short_in_the_standard_run(seed):
    cell = NaCell("symmetric", AREA, PRESETS["glyme"], seed=seed)
    cycle_overpotentials(cell, 200, dt_s=60.0)
    assert cell.short is None


def test_colder_cell_has_larger_overpotential():
    warm = NaCell("symmetric", AREA, PRESETS["glyme"], **QUIET)
    cold = NaCell("symmetric", AREA, PRESETS["glyme"], temperature_K=273.15, **QUIET)
    assert abs(cold.apply_current(I_1MA, 60.0)) > 1.5 * abs(warm.apply_current(I_1MA, 60.0))
    warm.temperature_K = 273.15
    assert warm.rs_ohm == pytest.approx(cold.rs_ohm)


# ----- noise ----------------------------------------------------------------------------------
def plateau(name: str, seconds: int = 2400) -> list[float]:
    """E each second in the middle of a 1 mA/cm² plating half-cycle (after the nucleation peak)."""
    cell = NaCell("symmetric", AREA, PRESETS[name], seed=3)
    for _ in range(600):
        cell.apply_current(-I_1MA, 1.0)
    return [cell.apply_current(-I_1MA, 1.0) for _ in range(seconds)]


def test_glyme_is_quiet_and_carbonate_noisy():
    glyme, carbonate = plateau("glyme"), plateau("carbonate")
    assert 0.05e-3 <= statistics.stdev(glyme) <= 0.5e-3
    assert statistics.stdev(carbonate) / abs(statistics.mean(carbonate)) > 0.015
    assert statistics.stdev(carbonate) > 10 * statistics.stdev(glyme)


def test_carbonate_shows_occasional_spikes_and_glyme_none():
    def worst_excursion(name: str) -> float:
        cell = NaCell("symmetric", AREA, PRESETS[name], seed=5, noise_V=0.0, noise_rel=0.0)
        cycle_overpotentials(cell, 1, dt_s=10.0)  # past the first-cycle transients
        trace = [abs(cell.apply_current(-I_1MA, 10.0)) for _ in range(6 * 360)][90:]
        return max(trace) / statistics.median(trace)  # 6 h of plating, the first 15 min cut

    assert worst_excursion("carbonate") > 1.08
    assert worst_excursion("glyme") < 1.02


# ----- Coulombic efficiency on Cu --------------------------------------------------------------
@functools.cache
def per_cycle_ce(name: str, cycles: int = 6, cell_type: str = "na_cu") -> list[float]:
    """CE of each plate-1-mAh/cm² / strip-to-1-V cycle at 0.5 mA/cm²."""
    cell = NaCell(cell_type, AREA, PRESETS[name], seed=1)
    ces = []
    for _ in range(cycles):
        plated, stripped, _ = plate_then_strip_to_cutoff(cell, 0.5 * I_1MA)
        ces.append(stripped / plated)
    return ces


def test_glyme_ce_on_cu_is_about_99_9_percent():
    later = per_cycle_ce("glyme")[3:]
    assert all(0.998 <= ce <= 1.0 for ce in later), later


def test_carbonate_ce_on_cu_is_80_to_95_percent_and_below_glyme():
    later = per_cycle_ce("carbonate")[3:]
    assert all(0.80 <= ce <= 0.95 for ce in later), later
    assert max(later) < min(per_cycle_ce("glyme")[3:]) - 0.04


def test_concentrated_nafsi_dme_ce_is_about_99_3_percent():
    later = per_cycle_ce("fsi_dme")[3:]
    assert all(0.990 <= ce <= 0.995 for ce in later), later


def test_first_cycle_ce_is_lowest():
    ces = per_cycle_ce("glyme", cycles=4, cell_type="na_al")
    assert ces[0] == min(ces)


def test_stripping_na_from_cu_spikes_when_the_na_runs_out():
    cell = NaCell("na_cu", AREA, PRESETS["glyme"], seed=2, na_inventory_C=1.0)
    steps_with_na = int(1.0 / I_1MA)  # 884 s of Na at 1.13 mA
    trace = [cell.apply_current(I_1MA, 1.0) for _ in range(steps_with_na + 3)]
    assert all(0.0 < e < 0.1 for e in trace[: steps_with_na - 10])
    assert trace[-1] > 2.0
    assert cell.na_inventory_C == 0.0
    assert 2.0 <= cell.open_circuit(60.0) <= 2.7


def test_plating_on_cu_is_slightly_negative_and_ocv_follows_the_na():
    cell = NaCell("na_cu", AREA, PRESETS["glyme"], seed=2)
    assert 2.0 <= cell.open_circuit(10.0) <= 2.7  # bare Cu
    e_plate = [cell.apply_current(-I_1MA, 10.0) for _ in range(100)]
    assert all(-0.1 < e < 0.0 for e in e_plate)
    plated = 100 * 10.0 * I_1MA
    assert plated * 0.97 < cell.na_inventory_C < plated  # a fresh Cu surface loses ~2 %
    for _ in range(60):
        ocv = cell.open_circuit(60.0)
    assert abs(ocv) < 2e-3


def test_symmetric_cell_has_no_inventory():
    assert NaCell("symmetric", AREA, PRESETS["glyme"]).na_inventory_C is None


# ----- SEI and impedance ----------------------------------------------------------------------
def rest_r_sei(name: str, hours: float) -> float:
    cell = NaCell("symmetric", AREA, PRESETS[name])
    for _ in range(round(hours * 60)):
        cell.open_circuit(60.0)
    return cell.r_sei_ohm


@pytest.mark.parametrize("name", ["glyme", "carbonate"])
def test_r_sei_grows_at_rest_like_root_t(name):
    r0, r4, r16 = (rest_r_sei(name, h) for h in (0.0, 4.0, 16.0))
    assert r0 < r4 < r16
    assert (r16 - r0) == pytest.approx(2 * (r4 - r0), rel=0.01)


def test_interfacial_resistance_is_tens_of_ohm_glyme_hundreds_carbonate():
    glyme = NaCell("symmetric", AREA, PRESETS["glyme"])
    carbonate = NaCell("symmetric", AREA, PRESETS["carbonate"])
    assert 10 <= glyme.r_sei_ohm + glyme.rct_ohm <= 60
    assert 100 <= carbonate.r_sei_ohm + carbonate.rct_ohm <= 3000
    assert rest_r_sei("carbonate", 24) - carbonate.r_sei_ohm > \
        10 * (rest_r_sei("glyme", 24) - glyme.r_sei_ohm)
    for cell in (glyme, carbonate):
        assert 1.0 <= cell.rs_ohm <= 5.0


@pytest.mark.parametrize("name", ["glyme", "carbonate", "fsi_dme"])
def test_eis_has_the_equivalent_circuit_shape(name):
    cell = NaCell("symmetric", AREA, PRESETS[name])
    cycle_overpotentials(cell, 3, dt_s=600.0)
    decades = np.log10(2e5) - np.log10(0.1)
    f = np.logspace(np.log10(2e5), -1, round(6 * decades) + 1)  # 200 kHz -> 100 mHz, 6/decade
    z = cell.impedance(f)
    interfacial = cell.r_sei_ohm + cell.rct_ohm
    assert z.dtype == complex and z.shape == f.shape
    assert abs(cell.impedance([1e6])[0].real - cell.rs_ohm) < 0.05 * interfacial
    assert z[0].real - cell.rs_ohm < 0.15 * interfacial  # high-frequency intercept ~ Rs
    assert z[-1].real > cell.rs_ohm + cell.r_sei_ohm
    assert z[-1].real == pytest.approx(cell.rs_ohm + interfacial, rel=0.1)
    assert np.all(-z.imag > 0)  # capacitive everywhere
    assert np.all(np.diff(z.real) > 0)  # Z' grows as the frequency falls
    el = cell.electrolyte
    assert 0.7 <= el.cpe_sei_n <= 0.9 and 0.7 <= el.cpe_dl_n <= 0.9
    assert (-z.imag).max() < 0.5 * interfacial  # depressed arcs (CPE, n < 1)


def test_impedance_of_a_hard_short_is_its_resistance():
    cell = NaCell("symmetric", AREA, PRESETS["glyme"], short_at_charge_C=0.1)
    cell.apply_current(I_1MA, 100.0)
    z = cell.impedance([1e5, 1.0, 0.1])
    assert np.allclose(z.real, cell.electrolyte.hard_short_ohm, rtol=0.1)
    assert np.all(abs(z.imag) < 0.02)


# ----- gas --------------------------------------------------------------------------------------
def test_carbonate_makes_several_times_more_gas_than_glyme_and_cycle_1_the_most():
    glyme = gas_per_cycle(NaCell("symmetric", AREA, PRESETS["glyme"]), 10)
    carbonate = gas_per_cycle(NaCell("symmetric", AREA, PRESETS["carbonate"]), 10)
    assert sum(carbonate) > 3 * sum(glyme)
    assert 1e-6 <= statistics.mean(carbonate[1:]) <= 10e-6  # a few µmol per coin-cell cycle
    for per_cycle in (glyme, carbonate):
        assert per_cycle[0] == max(per_cycle) and per_cycle[0] > 1.3 * per_cycle[-1]
        assert min(per_cycle) > 0


# ----- shorts -----------------------------------------------------------------------------------
def run_with_short(kind: str, **overrides: object) -> tuple[list[float], NaCell]:
    """Glyme Na‖Na cycled at 1 mA/cm² (dt 10 s), built to short after 6 C (cycle 1, strip)."""
    cell = NaCell("symmetric", AREA, PRESETS["glyme"], seed=4, short_at_charge_C=6.0,
                  short_kind=kind, **overrides)
    trace = []
    for sign in (-1.0, 1.0, -1.0, 1.0):
        trace += [cell.apply_current(sign * I_1MA, 10.0) for _ in range(360)]
    return trace, cell


def test_hard_short_collapses_to_i_times_r_short():
    trace, cell = run_with_short("hard", **QUIET)
    assert cell.short == "hard"
    r_short = cell.electrolyte.hard_short_ohm
    shorted = trace[531:]  # 6 C passes at 531 steps of 11.3 mC
    assert all(abs(e) == pytest.approx(I_1MA * r_short, rel=0.1) for e in shorted)
    assert min(abs(e) for e in trace[360:529]) > 10 * I_1MA * r_short


def test_hard_short_with_noise_reads_about_zero():
    trace, _ = run_with_short("hard")
    assert max(abs(e) for e in trace[540:]) < 2e-3


def test_soft_short_dips_then_settles_on_a_lower_plateau():
    trace, cell = run_with_short("soft", soft_short_recover_probability=0.0)
    assert cell.short == "soft"
    before = statistics.mean(abs(e) for e in trace[400:520])
    dip = min(abs(e) for e in trace[531:545])
    plateau_ = statistics.mean(abs(e) for e in trace[1000:1080])
    assert dip < plateau_ < 0.5 * before
    later = statistics.mean(abs(e) for e in trace[1300:1440])
    assert later == pytest.approx(plateau_, rel=0.1)  # flat: a rectangular trace


def test_soft_short_can_recover():
    trace, cell = run_with_short("soft", soft_short_recover_probability=1.0,
                                 soft_short_recover_s=600.0)
    assert cell.short is None
    assert statistics.mean(abs(e) for e in trace[-100:]) > 0.015


def count_shorts(name: str, current_density_mA_cm2: float, seeds: range) -> int:
    shorted = 0
    for seed in seeds:
        cell = NaCell("symmetric", AREA, PRESETS[name], seed=seed)
        cycle_overpotentials(cell, 10, dt_s=60.0, current_A=current_density_mA_cm2 * 1e-3 * AREA)
        shorted += cell.short is not None
    return shorted


def test_shorts_are_likelier_at_high_current_and_in_carbonate():
    seeds = range(20)
    assert count_shorts("glyme", 1.0, seeds) == 0
    glyme_3 = count_shorts("glyme", 3.0, seeds)
    assert count_shorts("glyme", 6.0, seeds) > glyme_3
    assert count_shorts("carbonate", 3.0, seeds) > glyme_3


# ----- reproducibility ----------------------------------------------------------------------
def trace_of(seed: int, cell_type: str = "symmetric") -> list[float]:
    cell = NaCell(cell_type, AREA, PRESETS["carbonate"], seed=seed, short_ccd_mA_cm2=1.5)
    out = []
    for sign in (-1.0, 1.0, -1.0, 1.0):
        out += [cell.apply_current(sign * I_1MA, 30.0) for _ in range(120)]
    out += [cell.apply_potential(0.1, 10.0) for _ in range(10)]
    out.append(cell.open_circuit(100.0))
    return out


@pytest.mark.parametrize("cell_type", ["symmetric", "na_cu"])
def test_same_seed_gives_identical_traces_and_different_seeds_differ(cell_type):
    assert trace_of(7, cell_type) == trace_of(7, cell_type)
    assert trace_of(7, cell_type) != trace_of(8, cell_type)


# ----- sign convention and potentiostatic control ---------------------------------------------
current_densities = st.floats(min_value=1e-4, max_value=5.0).flatmap(
    lambda i: st.sampled_from([i, -i]))


@settings(max_examples=40, deadline=None)
@given(i_mA_cm2=current_densities, dt_s=st.floats(0.01, 3600.0),
       name=st.sampled_from(["glyme", "carbonate"]), rest_s=st.floats(0.0, 1e5))
def test_symmetric_cell_potential_has_the_sign_of_the_current(i_mA_cm2, dt_s, name, rest_s):
    cell = NaCell("symmetric", AREA, PRESETS[name], **QUIET)
    cell.open_circuit(rest_s)
    e = cell.apply_current(i_mA_cm2 * 1e-3 * AREA, dt_s)
    assert math.copysign(1.0, e) == math.copysign(1.0, i_mA_cm2) and e != 0.0


@settings(max_examples=30, deadline=None)
@given(i_mA_cm2=st.floats(0.5, 5.0).flatmap(lambda i: st.sampled_from([i, -i])),
       seed=st.integers(0, 2**32))
def test_noisy_symmetric_cell_potential_has_the_sign_of_the_current(i_mA_cm2, seed):
    for name in ("glyme", "carbonate"):
        cell = NaCell("symmetric", AREA, PRESETS[name], seed=seed)
        for _ in range(20):
            assert cell.apply_current(i_mA_cm2 * 1e-3 * AREA, 10.0) * i_mA_cm2 > 0


@settings(max_examples=40, deadline=None)
@given(i_mA_cm2=current_densities, dt_s=st.floats(0.1, 600.0),
       cell_type=st.sampled_from(["symmetric", "na_cu"]),
       name=st.sampled_from(["glyme", "carbonate"]), history=st.integers(0, 20))
def test_apply_potential_inverts_apply_current(i_mA_cm2, dt_s, cell_type, name, history):
    inventory = {"na_inventory_C": 2.0} if cell_type == "na_cu" else {}
    a, b = (NaCell(cell_type, AREA, PRESETS[name], seed=9, **inventory, **QUIET, **NO_SHORTS)
            for _ in range(2))
    for k in range(history):  # the same past for both
        for cell in (a, b):
            cell.apply_current((-1) ** k * 0.3 * I_1MA, 60.0)
    current = i_mA_cm2 * 1e-3 * AREA
    e = a.apply_current(current, dt_s)
    assert b.apply_potential(e, dt_s) == pytest.approx(current, rel=1e-6, abs=1e-12)
    assert b.r_sei_ohm == pytest.approx(a.r_sei_ohm, rel=1e-9)
    assert b.charge_passed_C == pytest.approx(a.charge_passed_C, rel=1e-6)


def test_potentiostatic_strip_of_na_on_cu_stops_when_the_na_is_gone():
    cell = NaCell("na_cu", AREA, PRESETS["glyme"], seed=1, na_inventory_C=0.5, **NO_SHORTS)
    currents = [cell.apply_potential(0.5, 1.0) for _ in range(40)]
    assert currents[0] > 10e-3  # strips fast while Na is there
    assert cell.na_inventory_C == 0.0
    assert all(abs(i) < 1e-6 for i in currents[-10:])  # a bare Cu electrode at 0.5 V: no current
    assert sum(currents) == pytest.approx(0.5, rel=0.02)  # 1 s steps: the charge is 0.5 C


def test_apply_potential_at_zero_volts_on_a_symmetric_cell_draws_about_zero_current():
    cell = NaCell("symmetric", AREA, PRESETS["glyme"], **QUIET)
    assert cell.apply_potential(0.0, 1.0) == pytest.approx(0.0, abs=1e-12)
    assert cell.apply_potential(0.02, 60.0) > 0.5 * I_1MA


# ----- presets, electrolyte_for, construction ---------------------------------------------------
@pytest.mark.parametrize(("description", "key"), [
    ("1 M NaPF6 in diglyme", "glyme"),
    ("1M NaPF6 DEGDME", "glyme"),
    ("NaPF6 in TEGDME", "glyme"),
    ("1 M NaPF6 in DME", "glyme"),
    ("an ether", "glyme"),
    ("glyme", "glyme"),
    ("1 M NaClO4 in EC:DEC", "carbonate"),
    ("1M NaClO4 EC:DEC", "carbonate"),
    ("1 M NaPF6 in PC + 5% FEC", "carbonate"),
    ("NaClO4 in EC/DMC", "carbonate"),
    ("1 M NaFSI in EMC", "carbonate"),
    ("carbonate", "carbonate"),
    ("NaFSI in DME", "fsi_dme"),
    ("5 M NaFSI in DME", "fsi_dme"),
    ("fsi_dme", "fsi_dme"),
])
def test_electrolyte_for_maps_free_text_to_a_preset(description, key):
    assert electrolyte_for(description) is PRESETS[key]


def test_electrolyte_for_names_the_description_and_presets_when_nothing_matches():
    with pytest.raises(ValueError, match=r"'NaPF6 in water'.*glyme.*carbonate"):
        electrolyte_for("NaPF6 in water")


def test_a_user_preset_is_data(monkeypatch):
    sulfolane = Electrolyte(name="1 M NaPF6 in sulfolane", solvent_keywords=("sulfolane",))
    monkeypatch.setitem(PRESETS, "sulfolane", sulfolane)
    assert electrolyte_for("NaPF6 / sulfolane") is sulfolane
    assert NaCell("symmetric", AREA, sulfolane).apply_current(I_1MA, 1.0) > 0


@pytest.mark.parametrize("preset", list(PRESETS.values()), ids=list(PRESETS))
def test_presets_are_in_domain_ranges(preset):
    assert 0.7 <= preset.cpe_sei_n <= 0.9 and 0.7 <= preset.cpe_dl_n <= 0.9
    assert 1.0 <= preset.rs_ohm_cm2 / AREA <= 5.0


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"cell_type": "full"}, "full"),
    ({"cell_type": "na_li"}, "na_li"),
    ({"cell_type": "symmetric", "na_inventory_C": 1.0}, "na_inventory_C"),
    ({"cell_type": "symmetric", "no_such_field": 1.0}, "no_such_field"),
    ({"cell_type": "symmetric", "short_kind": "medium"}, "short_kind"),
    ({"cell_type": "symmetric", "area_cm2": 0.0}, "area_cm2"),
])
def test_bad_construction_raises_a_clear_value_error(kwargs, match):
    kwargs = {"area_cm2": AREA, "electrolyte": PRESETS["glyme"], **kwargs}
    with pytest.raises(ValueError, match=match):
        NaCell(**kwargs)


@pytest.mark.parametrize("call", [
    lambda c: c.apply_current(1e-3, -1.0),
    lambda c: c.apply_current(math.nan, 1.0),
    lambda c: c.apply_potential(math.inf, 1.0),
    lambda c: c.impedance([0.0, 1.0]),
])
def test_bad_steps_raise(call: Callable[[NaCell], object]):
    with pytest.raises(ValueError):
        call(NaCell("symmetric", AREA, PRESETS["glyme"]))


def test_zero_length_step_reads_without_advancing():
    cell = NaCell("symmetric", AREA, PRESETS["glyme"])
    assert cell.apply_current(I_1MA, 0.0) > 0.0
    assert cell.apply_potential(0.02, 0.0) > 0.5 * I_1MA
    assert cell.charge_passed_C == 0.0 and cell.time_s == 0.0
