"""A station of 64 channels plus its sensors, in real time for 60 s.

The simulated instruments run in a second process (as `rig sim serve` does), so what is measured
is the engine's own process: CPU per channel, how late each sample is handled after the
instrument measured it (p50/p99), and the time from a safety-window crossing to the moment
the output-off command has been sent (p50/p99).

    python benchmarks/bench_station.py [--channels 64] [--seconds 60] [--tripping 16]

Targets (issue 4): 64 channels at 1 Hz under 25 % of one core; p99 lateness < 100 ms;
p99 safety reaction < 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from protocols.plan import (
    CellSpec,
    ChannelPlan,
    ConstantCurrent,
    EndCondition,
    Loop,
    Plan,
    RecordRule,
    Safety,
    plan_from_json,
)

ROOT = Path(__file__).resolve().parents[1]
AREA = 1.13
I_A = 1.13e-3
REC = RecordRule(every_s=1.0)


def bench_plan(channels: int, tripping: int, seconds: float) -> Plan:
    """Symmetric glyme cells cycling for the whole run; Na||Cu carbonate cells that plate a
    little and then strip twice as much, so their Na runs out and E crosses the window at
    staggered moments (a safety trip each)."""
    plans = []
    for ch in range(channels):
        if ch < tripping:
            q = I_A * (5 + (seconds - 15) * ch / max(tripping, 1))
            steps = (ConstantCurrent(-I_A, (EndCondition("charge", q),), REC, "plate", "plate"),
                     ConstantCurrent(I_A, (EndCondition("charge", 2 * q),), REC, "strip",
                                     "strip"))
            cell = CellSpec(ch, f"T{ch}", "na_cu", AREA, "1 M NaClO4 in EC:DEC")
        else:
            half = (ConstantCurrent(-I_A, (EndCondition("charge", I_A * 30),), REC, "plate",
                                    "plate"),
                    ConstantCurrent(I_A, (EndCondition("charge", I_A * 30),), REC, "strip",
                                    "strip"))
            steps = (Loop(1000, half, counts_cycles=True),)
            cell = CellSpec(ch, f"S{ch}", "symmetric", AREA, "1 M NaPF6 in diglyme")
        plans.append(ChannelPlan(cell, steps))
    return Plan("sequence", "station bench", Safety(-1.0, 1.0, 0.01), tuple(plans))


def serve(plan_path: Path, out: Path) -> None:
    """Child process: the simulated instruments on real ptys/ports, on the wall clock."""
    from rig.clock import RealClock
    from rig.sim.serve import SimulatedInstruments, builtin_station_data, write_atomically

    plan = plan_from_json(plan_path.read_text())
    sims = SimulatedInstruments(builtin_station_data(plan), plan, RealClock(), seed=1)
    write_atomically(out, sims.text)
    try:
        while True:
            time.sleep(1)
    finally:
        sims.close()


class Measure:
    """The engine's Progress: lateness of each batch's newest sample."""

    def __init__(self) -> None:
        self.lateness: list[float] = []

    def run_started(self, *a) -> None: ...
    def channel_started(self, *a) -> None: ...
    def cycle_done(self, *a) -> None: ...
    def channel_ended(self, *a) -> None: ...

    def sample(self, channel: int, t: float, e: float, i: float) -> None:
        self.lateness.append(time.time() - t)


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else float("nan")


async def drive(station, plan: Plan, seconds: float, db: Path, measure: Measure):
    from rig.clock import RealClock
    from rig.engine.run import execute
    from rig.store import RunWriter

    reactions: list[float] = []

    class TripTimer(RunWriter):
        def event(self, run_key, channel, t, level, kind, message):
            if kind == "safety_trip":  # logged right after the output-off command returned
                reactions.append(time.time() - t)
            super().event(run_key, channel, t, level, kind, message)

    writer = TripTimer(db)
    task = asyncio.ensure_future(execute(plan, station=station, clock=RealClock(),
                                         writer=writer, protocol_text="",
                                         protocol_path="bench", progress=measure))
    await asyncio.sleep(seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    writer.close()
    return reactions


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--tripping", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--switch-ms", type=float, default=None,
                    help="the interpreter's thread switch interval (default 5 ms)")
    ap.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(Path(args.serve[0]), Path(args.serve[1]))
        return
    from rig.clock import RealClock
    from rig.station import load_station

    tmp = Path(tempfile.mkdtemp())
    plan = bench_plan(args.channels, args.tripping, args.seconds)
    (tmp / "plan.json").write_text(plan.to_json())
    out = tmp / "station.toml"
    child = subprocess.Popen([sys.executable, __file__, "--serve", str(tmp / "plan.json"),
                              str(out)], cwd=ROOT)
    try:
        while not out.exists():
            time.sleep(0.1)
        station = load_station(out, RealClock())
        measure = Measure()
        if args.switch_ms:
            sys.setswitchinterval(args.switch_ms / 1e3)
        r0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        reactions = asyncio.run(drive(station, plan, args.seconds, tmp / "bench.db", measure))
        r1, wall = resource.getrusage(resource.RUSAGE_SELF), time.monotonic() - w0
        station.close()
    finally:
        child.terminate()
        child.wait(timeout=30)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    late_ms = [x * 1e3 for x in measure.lateness]
    react_ms = [x * 1e3 for x in reactions]
    print(f"{args.channels} channels ({args.tripping} built to trip) + "
          f"{len(station.sensors)} sensors, {wall:.0f} s of real time")
    print(f"engine CPU          {cpu / wall * 100:6.1f} % of one core "
          f"({cpu / wall * 100 / args.channels:.2f} % per channel)   target < 25 % in all")
    print(f"sample lateness     p50 {pct(late_ms, 50):7.1f} ms   p99 {pct(late_ms, 99):7.1f} ms"
          f"   target p99 < 100 ms   ({len(late_ms)} reads)")
    print(f"safety reaction     p50 {pct(react_ms, 50):7.1f} ms   p99 {pct(react_ms, 99):7.1f} ms"
          f"   target p99 < 20 ms   ({len(react_ms)} trips)")
    print(json.dumps({"cpu_percent": cpu / wall * 100,
                      "lateness_ms": {"p50": pct(late_ms, 50), "p99": pct(late_ms, 99)},
                      "reaction_ms": {"p50": pct(react_ms, 50), "p99": pct(react_ms, 99),
                                      "mean": statistics.mean(react_ms) if react_ms else None}}))


if __name__ == "__main__":
    main()
