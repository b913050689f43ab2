"""Fault soak: many channels for a long simulated time with every simulated instrument dropping,
garbling and disconnecting a share of its traffic (issue 9).

    python benchmarks/soak_faults.py [--channels 16] [--hours 1000] [--rate 0.01] [--keithley 2]

Prints, per instrument, the faults its simulator injected; the events the rig logged for them
and how many of the faults they account for; each channel's end; whether every recorded sample
reached the store (each step's sample count against the samples table); and whether any output
was left on when the run ended. The baseline beside it: the same run with no faults, so the
wall-time cost of the faults shows, and so does each cell's own fate: over 1000 h the simulated
carbonate cells diverge out of the safety window and the gas holders reach their limit, with or
without faults. It exits 1 if, under faults, a channel ended otherwise than it did without
(otherwise than completing, with --no-baseline), a sample is missing, or an output is on.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from protocols import parse_protocol
from protocols.plan import Plan
from rig.clock import VirtualClock
from rig.engine.run import execute
from rig.sim.station import simulated_station
from rig.store import RunWriter

ELECTROLYTES = ("1 M NaPF6 in diglyme", "1 M NaClO4 in EC:DEC")


def soak_plan(channels: int, hours: float) -> Plan:
    """Na||Na plating-stripping at 1 mA/cm^2, 1 mAh/cm^2 (2 h a cycle), gas holders on half."""
    cycles = max(1, round(hours / 2))
    cells = "".join(f"""
[[cells]]
channel = {n}
cell_id = "S{n:02d}"
type = "symmetric"
area = "1.13 cm^2"
electrolyte = "{ELECTROLYTES[n % 2]}"
{'headspace = "5 mL"' if n % 2 == 0 else ''}
""" for n in range(channels))
    return parse_protocol(f"""
kind = "plating_stripping"
name = "fault soak"
current_density = "1 mA/cm^2"
areal_capacity = "1 mAh/cm^2"
cycles = {cycles}
record_interval = "60 s"
{cells}""", "soak.toml")


def fault_profiles(plan: Plan, rate: float, keithley: set[int]) -> dict[str, Any]:
    from rig.sim.emstat import FaultProfile as EmStatFaults
    from rig.sim.glovebox import ModbusFaultProfile
    from rig.sim.keithley import FaultProfile as KeithleyFaults
    from rig.sim.keller import FaultProfile as KellerFaults

    third = rate / 3
    faults: dict[str, Any] = {
        "box-h2o": ModbusFaultProfile(no_reply=third, exception=third, disconnect=third, seed=1),
        "box-o2": ModbusFaultProfile(no_reply=third, exception=third, disconnect=third, seed=2)}
    for cp in plan.channels:
        n = cp.cell.channel
        if n in keithley:
            faults[f"k2450-ch{n}"] = KeithleyFaults(no_reply=third, garbled=third,
                                                    disconnect=third, seed=10 + n)
        else:
            faults[f"es4-ch{n}"] = EmStatFaults(no_reply=third, garbled_line=third,
                                                truncated_package=third, seed=10 + n)
        if cp.cell.headspace_mL:
            faults[f"keller-ch{n}"] = KellerFaults(no_reply=third, bad_crc=third,
                                                   truncated=third, seed=100 + n)
    return faults


def injected(sim: Any) -> int:
    """How many faults a simulator put on its wire (each simulator counts in its own way)."""
    if hasattr(sim, "faults_injected"):
        counts = sim.faults_injected
        return sum((counts() if callable(counts) else counts).values())
    faults = getattr(sim, "faults", None)
    if isinstance(faults, collections.Counter):
        return sum(v for k, v in faults.items() if k != "requests")
    if isinstance(faults, list):
        return len(faults)
    return -1  # a simulator that does not count (shown as such)


class CountingWriter(RunWriter):
    """The store's writer, counting the sample rows the engine hands it (what was recorded)."""

    handed = 0

    def samples(self, run_key: int, channel: int, rows: Any) -> None:
        rows = list(rows)
        self.handed += len(rows)
        super().samples(run_key, channel, rows)


def run_once(plan: Plan, faults: dict[str, Any] | None, keithley: set[int]) -> dict[str, Any]:
    db = Path(tempfile.mkdtemp()) / "soak.db"
    clock = VirtualClock()
    station = simulated_station(plan, clock, seed=7, keithley_channels=sorted(keithley),
                                faults=faults)
    writer = CountingWriter(db)
    wall0 = time.perf_counter()
    try:
        result = asyncio.run(execute(plan, station=station, clock=clock, writer=writer,
                                     protocol_text="", protocol_path="soak.toml"))
        assert station.simulation is not None
        sims = dict(station.simulation.by_name)
        outputs_on = [name for name, sim in sims.items() if getattr(sim, "output_on", False)]
        per_sim = {name: injected(sim) for name, sim in sims.items()}
    finally:
        station.close()
        writer.close()
    wall = time.perf_counter() - wall0
    conn = sqlite3.connect(db)
    events = collections.Counter(k for (k,) in conn.execute(
        "SELECT kind FROM events WHERE level IN ('warning', 'alarm', 'error')"))
    missing = conn.execute(
        "SELECT s.channel, s.step, s.n_samples, (SELECT count(*) FROM samples x WHERE "
        "x.run_key = s.run_key AND x.channel = s.channel AND x.step = s.step) AS stored "
        "FROM steps s WHERE s.n_samples IS NOT NULL AND s.n_samples != stored").fetchall()
    samples = conn.execute("SELECT count(*) FROM samples").fetchone()[0]
    conn.close()
    return {"result": result, "wall_s": wall, "outputs_on": outputs_on, "injected": per_sim,
            "events": events, "missing": missing, "samples": samples, "handed": writer.handed,
            "unwritten": len(writer.unwritten),
            "accounted": accounted(db, plan, keithley)}


ATTEMPTS_PER_POLL = 3  # a sensor poll that gave nothing: its driver's first try and 2 retries


def accounted(db: Path, plan: Plan, keithley: set[int]) -> collections.Counter[str]:
    """Per instrument or sensor, the wire faults the run's events account for: a skipped
    package, a timeout waited out, a lost reply the driver recovered from (``instrument_retried``
    counts them), a channel's fault; a sensor's retried attempts, and every attempt of a poll
    that gave nothing."""
    name_of = {cp.cell.channel: (f"k2450-ch{cp.cell.channel}" if cp.cell.channel in keithley
                                 else f"es4-ch{cp.cell.channel}") for cp in plan.channels}
    out: collections.Counter[str] = collections.Counter()
    conn = sqlite3.connect(db)
    try:
        for channel, kind, message in conn.execute("SELECT channel, kind, message FROM events"):
            if kind == "sensor_retried":
                m = re.match(r"sensor (\S+): (\d+) failed attempt", message)
                if m:
                    out[m[1]] += int(m[2])
            elif kind == "sensor_ok":
                m = re.match(r"sensor (\S+) answers again after (\d+) failed poll", message)
                if m:
                    out[m[1]] += ATTEMPTS_PER_POLL * int(m[2])
            elif kind in ("garbled_package", "instrument_timeout", "instrument_fault"):
                out[name_of.get(channel, "?")] += 1
            elif kind == "instrument_retried":
                m = re.match(r"(\d+) ", message)
                out[name_of.get(channel, "?")] += int(m[1]) if m else 1
    finally:
        conn.close()
    return out


def main() -> int:
    import logging

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # it logs every dropped frame
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--hours", type=float, default=1000.0, help="simulated hours")
    ap.add_argument("--rate", type=float, default=0.01, help="fault rate of every instrument")
    ap.add_argument("--keithley", type=int, default=2,
                    help="how many channels are on a simulated Keithley 2450 (the last ones)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the fault-free run")
    args = ap.parse_args()
    plan = soak_plan(args.channels, args.hours)
    keithley = set(range(args.channels - args.keithley, args.channels))
    runs: list[tuple[str, dict[str, Any] | None]] = [
        ("faults", fault_profiles(plan, args.rate, keithley))]
    if not args.no_baseline:
        runs.insert(0, ("baseline", None))
    bad = False
    reference: dict[int, str] = {}  # channel -> how it ended without faults (the cell's own fate)
    for label, faults in runs:
        out = run_once(plan, faults, keithley)
        r = out["result"]
        ends = collections.Counter(r.reasons.values())
        print(f"{label}: {args.channels} channels, {args.hours:g} h simulated in "
              f"{out['wall_s']:.1f} s wall; status {r.status}; ends {dict(ends)}; "
              f"{out['samples']} samples stored")
        print(f"  warning/alarm/error events: {sum(out['events'].values())} "
              f"({', '.join(f'{k} {v}' for k, v in out['events'].most_common())})")
        if not faults:
            reference = dict(r.reasons)
        else:
            total = sum(v for v in out["injected"].values() if v > 0)
            print(f"  faults injected: {total} "
                  f"({', '.join(f'{k} {v}' for k, v in sorted(out['injected'].items()))})")
            counted = {k: v for k, v in out["injected"].items() if v >= 0}
            acc = out["accounted"]
            short = {k: (v, acc[k]) for k, v in counted.items() if acc[k] < v}
            print(f"  faults the events account for: {sum(acc[k] for k in counted)} of "
                  f"{sum(counted.values())} injected on the instruments that count them"
                  + (f"; fewer than injected on {', '.join(f'{k} ({a} of {v})' for k, (v, a) in sorted(short.items()))}"
                     if short else "; none fewer than injected")
                  + (f"; not counted by their simulator: "
                     f"{', '.join(f'{k} ({acc[k]} in events)' for k in sorted(out['injected']) if out['injected'][k] < 0)}"
                     if any(v < 0 for v in out["injected"].values()) else ""))
        lost = out["handed"] - out["samples"]
        print(f"  samples recorded (handed to the store) {out['handed']}, stored "
              f"{out['samples']}: {lost} lost" + (f", {out['unwritten']} writes failed"
                                                 if out["unwritten"] else ""))
        # a step's n_samples counts every reading judged, the samples table what the record
        # rule kept: a second reading at the same instant (a Keithley read again when an end is
        # asked) is judged, not recorded; shown, not a loss
        print(f"  steps whose judged readings are not all in the samples table: "
              f"{len(out['missing'])}" + (f" e.g. {out['missing'][:3]} (channel, step, judged, "
                                          f"stored)" if out["missing"] else ""))
        print(f"  outputs left on at the end: {out['outputs_on'] or 'none'}")
        bad |= bool(lost or out["unwritten"] or out["outputs_on"])
        if faults:
            # a fault must not change what happens to a cell: each channel ends as it did
            # without faults (completed, or the failure its cell model had on its own)
            expected = reference or {ch: "completed" for ch in r.reasons}
            changed = {ch: (why, expected.get(ch)) for ch, why in sorted(r.reasons.items())
                       if why != expected.get(ch)}
            print(f"  channels that ended otherwise than {'without faults' if reference else 'completed'}: "
                  + (", ".join(f"{ch} {why} ({was})" for ch, (why, was) in changed.items())
                     if changed else "none"))
            bad |= bool(changed)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
