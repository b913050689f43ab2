"""Throughput of the whole stack on the simulated station: simulated cell -> simulated EmStat4
-> pty -> production driver -> engine -> store, on the virtual clock.

    python benchmarks/bench_sim_run.py [PROTOCOL] [--cycles N] [--profile]

Prints simulated hours per wall second, samples per second through the driver (every package
the instruments sent) and rows per second into the store (what the recording rule kept).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import pstats
import sqlite3
import tempfile
import time
from pathlib import Path

from protocols import load_protocol
from protocols.plan import Loop
from rig.clock import VirtualClock
from rig.engine.run import execute
from rig.sim.station import simulated_station
from rig.store import RunWriter

ROOT = Path(__file__).resolve().parents[1]


def with_cycles(plan, cycles: int):
    def fix(steps):
        return tuple(dataclasses.replace(s, count=cycles) if isinstance(s, Loop) else s
                     for s in steps)
    channels = tuple(dataclasses.replace(c, steps=fix(c.steps)) for c in plan.channels)
    return dataclasses.replace(plan, channels=channels, total_cycles=cycles)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("protocol", nargs="?", default=str(ROOT / "protocols/plating_stripping.toml"))
    ap.add_argument("--cycles", type=int, default=None, help="override the cycle count")
    ap.add_argument("--profile", action="store_true", help="print the top functions by time")
    args = ap.parse_args()
    loaded = load_protocol(args.protocol)
    plan = with_cycles(loaded.plan, args.cycles) if args.cycles else loaded.plan
    db = Path(tempfile.mkdtemp()) / "bench.db"
    clock = VirtualClock()
    station = simulated_station(plan, clock)
    writer = RunWriter(db)
    sim0, wall0 = clock.now(), time.perf_counter()
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    try:
        result = asyncio.run(execute(plan, station=station, clock=clock, writer=writer,
                                     protocol_text=loaded.text, protocol_path=args.protocol))
    finally:
        station.close()
        writer.close()
    wall = time.perf_counter() - wall0
    if profiler:
        profiler.disable()
    conn = sqlite3.connect(db)
    acquired = conn.execute("select sum(n_samples) from steps").fetchone()[0]
    recorded = conn.execute("select count(*) from samples").fetchone()[0]
    sim_h = (clock.now() - sim0) / 3600
    print(f"run {result.run_id}: {result.status}, {len(plan.channels)} channels, "
          f"{plan.total_cycles} cycles")
    print(f"wall time            {wall:10.2f} s")
    print(f"simulated            {sim_h:10.1f} h  ({sim_h / wall:,.0f} simulated h per wall s)")
    print(f"samples via driver   {acquired:10,d}    ({acquired / wall:,.0f} samples/s)")
    print(f"rows into the store  {recorded:10,d}    ({recorded / wall:,.0f} rows/s)")
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
