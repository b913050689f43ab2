"""Named outcomes from a channel's step rows: CE, CCD, failure cycle, SEI growth, gas."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from protocols import builtin_protocol, load_protocol
from protocols.plan import CellSpec
from rig.analysis.outcomes import compute_outcome
from rig.sim.cell import PRESETS, NaCell

MAH = 3.6
AREA = 1.0


class Steps:
    """Builds step rows as the engine writes them, one after the other in time."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.t = 0.0
        self.cycle = 0

    def add(self, label: str, charge_mAh: float, hours: float = 1.0, half: str | None = None,
            end: str = "charge", kind: str = "constant_current") -> Steps:
        self.rows.append({
            "step": len(self.rows) + 1, "cycle": self.cycle, "label": label, "kind": kind,
            "half_cycle": half, "t_start": self.t, "t_end": self.t + hours * 3600,
            "end_reason": end, "charge_C": charge_mAh * MAH, "e_mean_abs_V": 0.02,
            "e_end_V": 0.02, "n_samples": 360})
        self.t += hours * 3600
        return self

    def cycles(self, n: int, q_mAh: float = 1.0, j_mA: float = 1.0, plate: str = "plate",
               strip: str = "strip", ce: float = 1.0) -> Steps:
        for _ in range(n):
            self.cycle += 1
            self.add(plate, -q_mAh, q_mAh / j_mA, "plate")
            self.add(strip, q_mAh * ce, q_mAh * ce / j_mA, "strip")
        return self


def reservoir_run(q_s_mAh: float, n: int = 10, q_t: float = 5.0, q_c: float = 1.0) -> Steps:
    s = Steps().add("formation_plate", -5.0, 10).add("formation_strip", 4.8, 9.6,
                                                      end="potential_above")
    s.add("reservoir", -q_t, q_t)
    s.cycles(n, q_c, plate="cycle_plate", strip="cycle_strip")
    return s.add("final_strip", q_s_mAh, q_s_mAh, end="potential_above")


# --- reservoir CE ------------------------------------------------------------------------------

@pytest.mark.parametrize(("q_s", "ce"), [(4.985, 0.999), (3.5, 0.9)])
def test_reservoir_ce_is_the_domain_formula_with_the_measured_charges(q_s, ce):
    # domain.md: Q_T = 5, Q_C = 1 mAh/cm^2, n = 10; CE = (n Q_C + Q_S) / (n Q_C + Q_T)
    out = compute_outcome("reservoir_ce", reservoir_run(q_s).rows, "completed", {})
    assert out["ce"] == pytest.approx((10 * 1 + q_s) / (10 * 1 + 5))
    assert out["ce"] == pytest.approx(ce)
    assert (out["n_cycles"], out["q_t_mAh"], out["q_c_mAh"], out["q_s_mAh"]) == pytest.approx(
        (10, 5.0, 1.0, q_s))
    assert out["formation_ce"] == pytest.approx(0.96)
    assert out["final_strip_end"] == "potential_above" and out["reason"] == ""
    assert not out["reservoir_exhausted"]
    assert (out["outcome"], out["end_reason"]) == ("reservoir_ce", "completed")


def test_reservoir_used_up_early_still_counts_what_was_stripped():
    s = Steps().add("reservoir", -1.0, 1)
    s.cycles(3, plate="cycle_plate", strip="cycle_strip", ce=0.8)
    s.rows[-1]["end_reason"] = "potential_above"  # the 3rd strip ran the reservoir out...
    s.add("final_strip", 0.0, 0.0, end="potential_above")  # ...and went to the final strip
    out = compute_outcome("reservoir_ce", s.rows, "completed", {})
    assert out["reservoir_exhausted"]
    assert out["ce"] == pytest.approx((3 * 0.8) / (3 + 1))


def test_reservoir_ce_without_a_final_strip_says_why():
    rows = reservoir_run(4.9).rows[:-1]
    out = compute_outcome("reservoir_ce", rows, "safety_window", {})
    assert out["ce"] is None
    assert out["reason"] == "no final_strip step: the channel ended (safety_window) before it"


def test_reservoir_ce_whose_final_strip_timed_out_is_flagged():
    rows = reservoir_run(4.9).rows
    rows[-1]["end_reason"] = "time"
    out = compute_outcome("reservoir_ce", rows, "cutoff_not_reached", {})
    assert out["ce"] is not None
    assert out["reason"] == ("the final strip ended on time, not at the cutoff: Q_S may be "
                             "incomplete")


# --- per-cycle CE ------------------------------------------------------------------------------

def test_per_cycle_ce_lists_each_cycle_and_averages_cycles_two_to_n():
    s = Steps()
    for ce in (0.90, 0.98, 0.99, 1.00):
        s.cycles(1, ce=ce)
        s.rows[-1]["end_reason"] = "potential_above"
    out = compute_outcome("per_cycle_ce", s.rows, "completed", {})
    assert [round(c["ce"], 3) for c in out["cycles"]] == [0.9, 0.98, 0.99, 1.0]
    assert out["first_cycle_ce"] == pytest.approx(0.9)
    assert out["ce_mean"] == pytest.approx(np.mean([0.98, 0.99, 1.0]))
    assert out["ce_mean_cycles"] == [2, 4] and out["n_cycles"] == 4
    assert out["cycles"][1]["plated_mAh"] == pytest.approx(1.0)


def test_per_cycle_ce_leaves_out_a_strip_that_never_reached_the_cutoff():
    s = Steps()
    for end in ("potential_above", "potential_above", "time"):
        s.cycles(1, ce=0.95)
        s.rows[-1]["end_reason"] = end
    out = compute_outcome("per_cycle_ce", s.rows, "cutoff_not_reached", {})
    assert [c["complete"] for c in out["cycles"]] == [True, True, False]
    assert out["ce_mean_cycles"] == [2, 2]


def test_per_cycle_ce_of_one_cycle_has_no_mean_and_says_why():
    s = Steps().cycles(1, ce=0.9)
    s.rows[-1]["end_reason"] = "potential_above"
    out = compute_outcome("per_cycle_ce", s.rows, "completed", {})
    assert out["ce_mean"] is None and out["reason"] == "no complete cycle after cycle 1 to average"


# --- critical current density ------------------------------------------------------------------

def ladder_params(js_mA: list[float], per_step: int = 5) -> dict:
    rungs, first = [], 1
    for j in js_mA:
        rungs.append({"current_density_A_per_cm2": j * 1e-3, "cycles": per_step,
                      "first_cycle": first, "last_cycle": first + per_step - 1})
        first += per_step
    return {"rungs": rungs}


def ladder_run(js_mA: list[float], cycles_done: int, per_step: int = 5) -> Steps:
    s = Steps()
    for k in range(cycles_done):
        s.cycles(1, j_mA=js_mA[k // per_step])
    return s


def test_ccd_is_the_last_current_density_completed_before_a_short_mid_rung():
    js = [0.5, 1.0, 2.0, 4.0]
    s = ladder_run(js, 12)  # cycles 1-12 done; the short came in cycle 13 (the 2 mA/cm^2 rung)
    out = compute_outcome("ccd", s.rows, "short_hard", ladder_params(js))
    assert out["ccd_mA_cm2"] == pytest.approx(1.0)
    assert out["failing_mA_cm2"] == pytest.approx(2.0)
    assert (out["failure_cycle"], out["failure"], out["rungs_completed"]) == (13, "short_hard", 2)
    assert not out["reached_max"]


def test_ccd_when_the_short_comes_in_the_plating_half_of_a_rungs_first_cycle():
    js = [0.5, 1.0, 2.0]
    s = ladder_run(js, 10)
    s.cycle += 1
    s.add("plate", -1.0, 0.5, "plate")  # cycle 11 plated, then the strip shorted (no row)
    out = compute_outcome("ccd", s.rows, "short_soft", ladder_params(js))
    assert (out["ccd_mA_cm2"], out["failing_mA_cm2"], out["failure_cycle"]) == pytest.approx(
        (1.0, 2.0, 11))


def test_ccd_uses_the_failing_step_row_when_the_engine_wrote_one():
    js = [1.0, 2.0]
    s = ladder_run(js, 7)
    s.rows[-1]["end_reason"] = "short_soft"  # cycle 7's strip ended on the short
    out = compute_outcome("ccd", s.rows, "short_soft", ladder_params(js))
    assert (out["ccd_mA_cm2"], out["failing_mA_cm2"], out["failure_cycle"]) == pytest.approx(
        (1.0, 2.0, 7))


def test_ccd_of_a_cell_that_fails_in_the_first_rung_is_none():
    s = ladder_run([0.5], 2)
    out = compute_outcome("ccd", s.rows, "safety_window", ladder_params([0.5, 1.0]))
    assert out["ccd_mA_cm2"] is None and out["failing_mA_cm2"] == pytest.approx(0.5)


def test_ccd_of_a_cell_that_survives_every_rung_reached_the_max():
    js = [0.5, 1.0]
    out = compute_outcome("ccd", ladder_run(js, 10).rows, "completed", ladder_params(js))
    assert out["reached_max"] and out["ccd_mA_cm2"] == pytest.approx(1.0)
    assert out["failing_mA_cm2"] is None and out["failure"] is None


def test_ccd_reads_the_current_densities_off_the_steps_without_the_plans_rungs():
    js = [0.5, 1.0, 2.0]
    s = ladder_run(js, 12)
    cell = CellSpec(0, "A", "symmetric", AREA, "glyme")
    out = compute_outcome("ccd", s.rows, "short_hard", {}, cell=cell)
    assert (out["ccd_mA_cm2"], out["failing_mA_cm2"]) == pytest.approx((1.0, 2.0))
    out = compute_outcome("ccd", s.rows, "short_hard", {})
    assert out["ccd_mA_cm2"] is None and "no current densities" in out["reason"]


def test_ccd_template_parameters_carry_the_rungs_the_outcome_reads():
    plan = load_protocol(builtin_protocol("critical_current_density")).plan
    s = ladder_run([0.5, 1.0, 2.0, 4.0, 8.0], 17)
    out = compute_outcome("ccd", s.rows, "short_hard", plan.parameters)
    assert (out["ccd_mA_cm2"], out["failing_mA_cm2"]) == pytest.approx((2.0, 4.0))


# --- failure cycle -----------------------------------------------------------------------------

def test_failure_cycle_of_a_channel_that_shorted_mid_cycle():
    s = Steps().cycles(41)
    s.cycle += 1
    s.add("plate", -1.0, 1, "plate")
    out = compute_outcome("failure_cycle", s.rows, "short_hard", {})
    assert out == {"outcome": "failure_cycle", "end_reason": "short_hard", "failed": True,
                   "failure": "short_hard", "failure_cycle": 42, "cycles_completed": 41}


def test_failure_cycle_of_divergence_is_the_cycle_whose_half_diverged():
    s = Steps().cycles(120)
    out = compute_outcome("failure_cycle", s.rows, "overpotential_divergence", {})
    assert (out["failed"], out["failure_cycle"]) == (True, 120)


@pytest.mark.parametrize("reason", ["completed", "aborted", "instrument_fault"])
def test_a_channel_that_did_not_fail_has_no_failure_cycle(reason):
    out = compute_outcome("failure_cycle", Steps().cycles(3).rows, reason, {})
    assert (out["failed"], out["failure"], out["failure_cycle"], out["cycles_completed"]) == (
        False, None, None, 3)


# --- SEI growth --------------------------------------------------------------------------------

def eis_rows(cell: NaCell, sweeps: int, every_h: float = 1.0) -> tuple[list[tuple], list[float]]:
    f = np.logspace(np.log10(2e5), -1, 38)
    rows, truth = [], []
    for k in range(1, sweeps + 1):
        if k > 1:
            for _ in range(int(every_h * 60)):
                cell.open_circuit(60.0)
        t = (k - 1) * every_h * 3600 + 1e9
        rows += [(k, t, fk, z.real, z.imag) for fk, z in zip(f, cell.impedance(f))]
        truth.append(cell.r_sei_ohm)
    return rows, truth


def test_sei_growth_fits_each_sweep_and_reports_r_sei_against_time():
    cell = NaCell("symmetric", 1.13, PRESETS["carbonate"], seed=2)
    rows, truth = eis_rows(cell, 5)
    spec = CellSpec(0, "C1", "symmetric", 1.13, "1 M NaClO4 in EC:DEC")
    out = compute_outcome("sei_growth", [], "completed", {}, eis=rows, cell=spec)
    assert out["t_h"] == pytest.approx([0, 1, 2, 3, 4])
    assert out["r_sei_ohm"] == pytest.approx(truth, rel=0.1)
    assert out["r_sei_growth_ohm_per_h"] > 0 and out["r_sei_growth_ohm_per_sqrt_h"] > 0
    assert out["r_sei_ohm_cm2"] == pytest.approx(truth[-1] * 1.13, rel=0.1)
    assert [s["sweep"] for s in out["sweeps"]] == [1, 2, 3, 4, 5]
    assert {"rs_ohm", "rct_ohm", "cpe_sei_q", "cpe_sei_n", "residual"} <= set(out["sweeps"][0])
    assert out["failed_fits"] == [] and out["reason"] == ""


def test_sei_growth_reports_a_sweep_it_cannot_fit_and_carries_on():
    cell = NaCell("symmetric", 1.13, PRESETS["glyme"], seed=2)
    rows, _ = eis_rows(cell, 3)
    rows = [r for r in rows if r[0] != 2 or r[2] > 1e4]  # sweep 2 was cut short
    out = compute_outcome("sei_growth", [], "completed", {}, eis=rows)
    assert [s["sweep"] for s in out["sweeps"]] == [1, 3]
    assert out["failed_fits"][0]["sweep"] == 2
    assert "usable points" in out["failed_fits"][0]["reason"]


def test_sei_growth_without_sweeps_says_so():
    out = compute_outcome("sei_growth", [], "aborted", {}, eis=[])
    assert out["r_sei_ohm"] == [] and out["reason"] == "no EIS sweeps recorded"


# --- gas ---------------------------------------------------------------------------------------

def test_gas_per_cycle_from_sensor_rows_and_the_cells_headspace():
    s = Steps().add("baseline", 0.0, 2, kind="rest").cycles(3, j_mA=1.0)
    v_l, r, t0 = 5e-3, 8.314462618, 298.15
    n0 = 101325.0 * v_l * 1e-3 / (r * t0)
    made = {1: 3e-6, 2: 1e-6, 3: 1e-6}
    sensors = []
    for t in np.arange(0.0, s.t + 1, 60.0):
        cycle = min(int(max(t - 7200.0, 0.0) // 7200.0) + 1, 3)
        frac = min(max((t - 7200.0 - (cycle - 1) * 7200.0) / 7200.0, 0.0), 1.0)
        n = n0 + sum(made[c] for c in made if c < cycle) + made[cycle] * frac
        temp = t0 + math.sin(t / 5000.0)
        sensors += [(t, "holder0", "pressure_Pa", n * r * temp / (v_l * 1e-3)),
                    (t, "holder0", "temperature_K", temp)]
    cell = CellSpec(0, "P1", "symmetric", AREA, "1 M NaClO4 in EC:DEC", headspace_mL=5.0)
    out = compute_outcome("gas_per_cycle", s.rows, "completed", {}, sensors=sensors, cell=cell)
    assert out["first_cycle_umol"] == pytest.approx(3.0, rel=0.01)
    assert out["later_mean_umol"] == pytest.approx(1.0, rel=0.01)
    assert [c["cycle"] for c in out["cycles"]] == [1, 2, 3]
    assert out["headspace_mL"] == 5.0 and out["reason"] == ""


def test_gas_per_cycle_without_sensors_or_headspace_says_why():
    rows = Steps().cycles(2).rows
    cell = CellSpec(0, "P1", "symmetric", AREA, "x", headspace_mL=5.0)
    out = compute_outcome("gas_per_cycle", rows, "completed", {}, sensors=[], cell=cell)
    assert out["total_umol"] is None and out["reason"].startswith("no pressure readings")
    out = compute_outcome("gas_per_cycle", rows, "completed", {}, sensors=[])
    assert out["reason"] == "no headspace volume for this cell"


# --- all outcomes ------------------------------------------------------------------------------

def test_every_outcome_is_json_safe():
    cases = [("reservoir_ce", reservoir_run(4.9).rows), ("per_cycle_ce", Steps().cycles(2).rows),
             ("ccd", ladder_run([1.0], 3).rows), ("failure_cycle", Steps().cycles(2).rows),
             ("sei_growth", []), ("gas_per_cycle", [])]
    for name, rows in cases:
        out = compute_outcome(name, rows, "completed", ladder_params([1.0]), eis=[], sensors=[])
        assert json.loads(json.dumps(out)) == out


def test_an_unknown_outcome_is_a_value_error_naming_the_known_ones():
    with pytest.raises(ValueError, match="unknown outcome 'ce'; known: reservoir_ce, "):
        compute_outcome("ce", [], "completed", {})


# --- end to end: a template, the engine on the simulated station, the stored outcome -----------

CE_RUN = """
kind = "coulombic_efficiency"
name = "small reservoir CE"
method = "reservoir"
cycles = 4
current_density = "0.5 mA/cm^2"
cycle_capacity = "0.25 mAh/cm^2"
formation_capacity = "0.25 mAh/cm^2"
reservoir_capacity = "0.05 mAh/cm^2"
record_interval = "10 s"

[[cells]]
channel = 0
cell_id = "glyme"
type = "na_cu"
area = "1 cm^2"
electrolyte = "1 M NaPF6 in diglyme"

[[cells]]
channel = 1
cell_id = "carbonate"
type = "na_cu"
area = "1 cm^2"
electrolyte = "1 M NaClO4 in EC:DEC"
"""


def test_reservoir_ce_end_to_end_including_a_reservoir_that_runs_out(tmp_path):
    import asyncio

    from protocols import parse_protocol
    from rig.clock import VirtualClock
    from rig.engine.run import execute
    from rig.sim.station import simulated_station
    from rig.store import RunWriter
    from rig.store.read import get_channels, get_steps, open_reader

    # a reservoir of 0.05 mAh/cm^2: the carbonate cell (CE ~ 90 %) loses ~0.025 per cycle and
    # runs out in cycle 2 or 3, which sends it straight to the final strip (a goto out of the loop)
    text = CE_RUN
    plan = parse_protocol(text, "ce.toml")
    clock = VirtualClock()
    station = simulated_station(plan, clock, seed=1)
    writer = RunWriter(tmp_path / "r.db")
    try:
        result = asyncio.run(execute(plan, station=station, clock=clock, writer=writer,
                                     protocol_text=text, protocol_path="ce.toml"))
    finally:
        station.close()
        writer.close()
    assert result.reasons == {0: "completed", 1: "completed"}
    with open_reader(tmp_path / "r.db") as conn:
        outcome = {c["channel"]: json.loads(c["outcome_json"])
                   for c in get_channels(conn, result.run_key)}
        carbonate_labels = [s["label"] for s in get_steps(conn, result.run_key, 1)]
    glyme, carbonate = outcome[0], outcome[1]
    # a fresh glyme cell still loses a little to formation: ~99.3 % here, 99.9 % once formed
    assert 0.98 < glyme["ce"] < 1.0 and not glyme["reservoir_exhausted"]
    assert carbonate["reservoir_exhausted"] and carbonate["n_cycles"] < 4
    assert 0.8 < carbonate["ce"] < 0.95
    assert carbonate_labels[-2:] == ["cycle_strip", "final_strip"]
