"""The protocol library on the simulated station, end to end: the answers a user runs these
protocols for come out as the science says (domain.md)."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from protocols import load_protocol
from rig.clock import VirtualClock
from rig.engine.run import execute
from rig.sim.station import simulated_station
from rig.store import RunWriter, get_channels, get_steps, open_reader

# the waits inside give the clear messages; this is only the last resort
pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parents[2]


def run_example(name: str, tmp_path: Path) -> tuple[int, dict]:
    db = tmp_path / f"{name}.db"
    env = {**os.environ, "NARIG_DB": str(db)}
    run = subprocess.run([sys.executable, "-m", "rig.cli", "run", f"protocols/{name}.toml"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    show = subprocess.run([sys.executable, "-m", "rig.cli", "show", "latest", "--json"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert show.returncode == 0, show.stderr
    data = json.loads(show.stdout)
    return run.returncode, {c["cell_id"]: c for c in data["channels"]}


def test_reservoir_ce_glyme_near_999_permille_carbonate_clearly_lower(tmp_path):
    code, ch = run_example("coulombic_efficiency", tmp_path)
    assert code == 0
    glyme, carbonate = ch["NaCu-G1"]["outcome"], ch["NaCu-C1"]["outcome"]
    assert glyme["ce"] == pytest.approx(0.999, abs=0.0015)
    assert 0.80 <= carbonate["ce"] <= 0.95
    assert glyme["final_strip_end"] == "potential_above"  # stripped until the Na ran out


def test_critical_current_density_finds_a_value_glyme_above_carbonate(tmp_path):
    code, ch = run_example("critical_current_density", tmp_path)
    assert code == 0  # a short is this protocol's planned end
    g, c = ch["CCD-G1"]["outcome"], ch["CCD-C1"]["outcome"]
    assert g["ccd_mA_cm2"] is not None and c["ccd_mA_cm2"] is not None
    assert g["ccd_mA_cm2"] > c["ccd_mA_cm2"]
    assert ch["CCD-G1"]["end_reason"].startswith("short")


def test_ocv_impedance_sweeps_show_r_sei_growing_at_rest(tmp_path):
    code, ch = run_example("ocv_impedance", tmp_path)
    assert code == 0
    for cell in ch.values():
        r = cell["outcome"]["r_sei_ohm"]
        assert len(r) >= 6 and r[-1] > r[0]
        assert cell["outcome"]["r_sei_growth_ohm_per_h"] > 0
    assert (ch["EIS-C1"]["outcome"]["r_sei_ohm"][0]
            > 5 * ch["EIS-G1"]["outcome"]["r_sei_ohm"][0])  # carbonate SEI far more resistive


def test_gas_per_cycle_matches_the_cells_produced_moles_despite_a_temperature_swing(tmp_path):
    loaded = load_protocol(ROOT / "protocols" / "gas_evolution.toml")
    plan = loaded.plan
    clock = VirtualClock()
    station = simulated_station(plan, clock, seed=4)
    sims = station.simulation
    trace: dict[int, list[tuple[float, float]]] = {}
    for cp in plan.channels:
        ch = cp.cell.channel
        holder, cell = sims.holders[ch], sims.cell(ch)
        # a 1 K swing every 3 h: about the pressure signal of a whole cycle (domain.md)
        holder.set_temperature_profile(
            lambda t: 298.15 + 1.0 * math.sin(2 * math.pi * t / 10800.0), clock.now())
        trace[ch] = []
        clock.add_pump(lambda now, c=cell, tr=trace[ch]: tr.append((now, c.gas_mol)))
    writer = RunWriter(tmp_path / "gas.db")
    try:
        result = asyncio.run(execute(plan, station=station, clock=clock, writer=writer,
                                     protocol_text=loaded.text, protocol_path="gas",
                                     sensor_floor_s=0))
    finally:
        station.close()
        writer.close()
    assert result.status == "completed"
    conn = open_reader(tmp_path / "gas.db")
    channels = {c["cell_id"]: c for c in get_channels(conn, result.run_key)}
    per_cell = {}
    for cp in plan.channels:
        ch = cp.cell.channel
        outcome = json.loads(channels[cp.cell.cell_id]["outcome_json"])
        steps = get_steps(conn, result.run_key, ch)
        produced = []
        for c in outcome["cycles"]:
            cyc = [s for s in steps if s["cycle"] == c["cycle"] and s["half_cycle"]]
            t0, t1 = cyc[0]["t_start"], cyc[-1]["t_end"]
            produced.append((gas_at(trace[ch], t1) - gas_at(trace[ch], t0)) * 1e6)
        for c, made in zip(outcome["cycles"], produced):
            assert c["gas_umol"] == pytest.approx(made, rel=0.02)
        per_cell[cp.cell.cell_id] = outcome
    g, c = per_cell["GAS-G1"], per_cell["GAS-C1"]
    assert c["total_umol"] > 3 * g["total_umol"]  # carbonate gasses several times more
    assert c["first_cycle_umol"] > c["later_mean_umol"]  # cycle 1 apart from later cycles


def gas_at(trace: list[tuple[float, float]], t: float) -> float:
    """The cell's produced gas at clock time t (the last pump at or before t)."""
    return max((x for x in trace if x[0] <= t + 1e-6), key=lambda x: x[0])[1]
