"""Every template on the simulated station across a grid of its documented parameters.

Current density 0.1-5 mA/cm^2, areal capacity 0.5-5 mAh/cm^2, the built-in files' glyme and
carbonate cells, a few cycles, the virtual clock. Each point must complete, or end with a failure
the science predicts (a short, a divergence; for a critical-current-density run a short is the
plan); never a safety trip or a timeout caused by the template's own defaults; and every charge
balance closes: a strip passes no more than was plated (Na‖Na: plus the counter's Na; Na‖Cu:
plus what was left on the collector).

    python benchmarks/template_grid.py            # the dense grid, a table of end reasons
    python benchmarks/template_grid.py --sparse   # the corners and centre the tests run

``tests/protocols/test_template_grid.py`` runs the sparse grid.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from protocols import builtin_protocol, parse_protocol  # noqa: E402
from rig.clock import VirtualClock  # noqa: E402
from rig.engine.run import execute  # noqa: E402
from rig.sim.station import simulated_station  # noqa: E402
from rig.store import RunWriter, get_channels, get_steps, open_reader  # noqa: E402

KINDS = ("plating_stripping", "coulombic_efficiency", "critical_current_density",
         "gas_evolution")
DENSITIES = (0.1, 0.5, 1.0, 2.0, 5.0)  # mA/cm^2
CAPACITIES = (0.5, 1.0, 2.0, 5.0)  # mAh/cm^2
SPARSE = ((0.1, 0.5), (0.1, 5.0), (5.0, 0.5), (5.0, 5.0), (1.0, 1.0))  # corners + centre
CYCLES = 2

PREDICTED = {"completed", "short_hard", "short_soft", "overpotential_divergence"}
"""End reasons the science predicts at some grid point; a safety trip, a strip that never
reached its cutoff or an instrument fault is the template's fault, not the cell's."""


def _set(text: str, field: str, value: str) -> str:
    """Replace a top-level ``field = ...`` line (or add it before the first table)."""
    line = re.compile(rf"^{field} = .*$", re.M)
    if line.search(text):
        return line.sub(lambda _: f"{field} = {value}", text, count=1)
    return text.replace("\n[", f"\n{field} = {value}\n[", 1)


SAMPLES_PER_HALF_CYCLE = 200  # the record interval is set so (at least 10 s): speed only


def grid_file(kind: str, j_mA_cm2: float, q_mAh_cm2: float, cycles: int = CYCLES) -> str:
    """The built-in file of ``kind`` at one grid point (its cells, safety and failure tables
    as shipped: those defaults are what the grid checks), with ``cycles`` cycles and a record
    interval of about ``SAMPLES_PER_HALF_CYCLE`` per half-cycle."""
    text = builtin_protocol(kind).read_text(encoding="utf-8")
    half_cycle_s = q_mAh_cm2 / j_mA_cm2 * 3600
    text = _set(text, "record_interval", f'"{max(10.0, half_cycle_s / SAMPLES_PER_HALF_CYCLE):g} s"')
    j, q = f'"{j_mA_cm2:g} mA/cm^2"', f'"{q_mAh_cm2:g} mAh/cm^2"'
    if kind == "critical_current_density":
        text = re.sub(r"^ramp = .*$", f"current_densities = [{j}]", text, count=1, flags=re.M)
        text = _set(_set(text, "areal_capacity", q), "cycles_per_step", str(cycles))
    elif kind == "coulombic_efficiency":
        text = _set(_set(text, "current_density", j), "cycle_capacity", q)
        text = _set(text, "cycles", str(cycles))
    else:
        text = _set(_set(text, "current_density", j), "areal_capacity", q)
        text = _set(text, "cycles", str(cycles))
    if kind == "gas_evolution":
        text = _set(text, "rest_before", '"10 min"')
    return text


@dataclass
class ChannelResult:
    cell_id: str
    electrolyte: str
    cell_type: str
    end_reason: str
    steps: list[dict]
    shorted: bool  # the simulated cell really shorted (its ground truth, not the detector's)

    def balance_problem(self) -> str | None:
        """Why this channel's charges do not close, or None."""
        plated_total = stripped_total = 0.0
        for s in self.steps:
            q = s["charge_C"] or 0.0
            if s["kind"] != "constant_current" or s["end_reason"] in ("short_hard", "short_soft"):
                continue  # a short's charge went through the shunt: the cell says nothing
            if q < 0:
                plated_total += -q
            else:
                stripped_total += q
        # Na‖Na: the counter electrode holds plenty of Na, but each strip of a template strips
        # what its plate put down; Na‖Cu: never more than was plated onto the collector
        slack = 1.002 * plated_total + 1e-6  # one sample of overshoot at a cutoff
        if self.cell_type in ("na_cu", "na_al") and stripped_total > slack:
            return (f"stripped {stripped_total:.4g} C but plated only {plated_total:.4g} C")
        if self.cell_type == "symmetric" and stripped_total > slack:
            return (f"stripped {stripped_total:.4g} C, more than the {plated_total:.4g} C plated")
        return None


def run_point(kind: str, j: float, q: float, db: Path, seed: int = 0) -> list[ChannelResult]:
    """The built-in ``kind`` at ``j`` mA/cm^2 and ``q`` mAh/cm^2, run to its end."""
    return run_text(grid_file(kind, j, q), f"{kind}@{j:g}mA,{q:g}mAh", db, seed)


def run_text(text: str, name: str, db: Path, seed: int = 0) -> list[ChannelResult]:
    """A protocol file's text run on the simulated station (virtual clock), per channel."""
    plan = parse_protocol(text, name)
    clock = VirtualClock()
    station = simulated_station(plan, clock, seed=seed)
    shorted: set[int] = set()
    for cp in plan.channels:
        cell = station.simulation.cell(cp.cell.channel)
        clock.add_pump(lambda now, c=cell, n=cp.cell.channel: shorted.add(n) if c.short else None)
    writer = RunWriter(db)
    try:
        result = asyncio.run(execute(plan, station=station, clock=clock, writer=writer,
                                     protocol_text=text, protocol_path=f"grid:{name}"))
    finally:
        station.close()
        writer.close()
    conn = open_reader(db)
    try:
        cells = {cp.cell.channel: cp.cell for cp in plan.channels}
        out = []
        for ch in get_channels(conn, result.run_key):
            n = ch["channel"]
            out.append(ChannelResult(cells[n].cell_id, cells[n].electrolyte,
                                     cells[n].cell_type, ch["end_reason"],
                                     get_steps(conn, result.run_key, n), n in shorted))
        return out
    finally:
        conn.close()


def _shorted_in_half_cycle(r: ChannelResult) -> bool:
    """A short the detectors should have seen: the cell's |E| collapsed under current (a
    short that recovered between two samples, or during a rest, leaves nothing to see)."""
    return any(s["kind"] == "constant_current" and s["e_end_V"] is not None
               and abs(s["e_end_V"]) < 1e-3 for s in r.steps)


def problems(kind: str, j: float, q: float, results: list[ChannelResult]) -> list[str]:
    """What is wrong at this grid point (an empty list: the point passes)."""
    found = []
    for r in results:
        where = f"{kind} {j:g} mA/cm^2 {q:g} mAh/cm^2 {r.cell_id}"
        if r.end_reason not in PREDICTED:
            found.append(f"{where}: ended {r.end_reason}")
        elif r.end_reason.startswith("short") and not r.shorted:
            found.append(f"{where}: ended {r.end_reason} but the cell never shorted")
        elif r.shorted and r.end_reason == "completed" and _shorted_in_half_cycle(r):
            found.append(f"{where}: the cell shorted and the run completed: no detector named it")
        if not r.steps:
            found.append(f"{where}: no steps rows")
        balance = r.balance_problem()
        if balance:
            found.append(f"{where}: {balance}")
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sparse", action="store_true", help="corners and centre only")
    args = ap.parse_args()
    points = SPARSE if args.sparse else [(j, q) for j in DENSITIES for q in CAPACITIES]
    bad: list[str] = []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        for kind in KINDS:
            for k, (j, q) in enumerate(points):
                results = run_point(kind, j, q, Path(tmp) / f"{kind}-{k}.db")
                bad += problems(kind, j, q, results)
                ends = ", ".join(f"{r.cell_id} {r.end_reason}" for r in results)
                print(f"{kind:<26} {j:>4g} mA/cm^2 {q:>4g} mAh/cm^2  {ends}", flush=True)
    print(f"\n{len(KINDS) * len(points)} points in {time.monotonic() - t0:.1f} s; "
          f"{len(bad)} problem(s)")
    for line in bad:
        print("  " + line)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
