"""How much data a crash loses: a run on the simulated station, on the real clock, recording
every second, is killed with SIGKILL at a random moment, then taken over with `rig resume` and
killed again — 20 times. Lost samples per kill = samples due between the last committed one and
the moment of the kill (per channel). Target: at most one second of data.

    python benchmarks/bench_crash.py [--kills 20] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INTERVAL_S = 1.0
PROTOCOL = """
kind = "plating_stripping"
name = "crash bench"
current_density = "1 mA/cm^2"
areal_capacity = "1 mAh/cm^2"
cycles = 100
record_interval = "1 s"
{cells}
"""
CELL = """
[[cells]]
channel = {ch}
cell_id = "B{ch}"
type = "symmetric"
area = "1.13 cm^2"
electrolyte = "{el}"
"""


def last_committed(db: Path) -> dict[int, tuple[float, int]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return {ch: (t, n) for ch, t, n in conn.execute(
            "SELECT channel, max(t), count(*) FROM samples GROUP BY channel")}
    finally:
        conn.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--channels", type=int, default=4)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp())
    cells = "".join(CELL.format(ch=c, el="1 M NaPF6 in diglyme" if c % 2 == 0
                                else "1 M NaClO4 in EC:DEC") for c in range(args.channels))
    protocol = tmp / "p.toml"
    protocol.write_text(PROTOCOL.format(cells=cells))
    db = tmp / "crash.db"
    cmd = [sys.executable, "-m", "rig.cli", "run", str(protocol), "--db", str(db),
           "--clock", "real"]
    losses: list[int] = []
    run_id = None
    previous_total = 0
    for k in range(args.kills):
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(4.0, 8.0))  # start-up, then some seconds of data
        proc.send_signal(signal.SIGKILL)
        t_kill = time.time()
        proc.wait()
        committed = last_committed(db)
        total = sum(n for _, n in committed.values())
        if total == previous_total:  # killed while still starting up: nothing was measured
            print(f"kill {k + 1:2d}: killed before it measured anything (start-up)")
            continue
        previous_total = total
        lost = [max(0, math.floor((t_kill - t_last) / INTERVAL_S)) for t_last, _ in
                committed.values()]
        losses.extend(lost)
        print(f"kill {k + 1:2d}: samples lost per channel {lost}  (committed so far: {total})")
        if run_id is None:
            conn = sqlite3.connect(db)
            run_id = conn.execute("SELECT id FROM runs").fetchone()[0]
            conn.close()
            cmd = [sys.executable, "-m", "rig.cli", "resume", run_id, "--db", str(db)]
    check = sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0]
    print(f"\n{args.kills} kills x {args.channels} channels, recording every {INTERVAL_S:g} s")
    print(f"samples lost per channel per kill: mean {statistics.mean(losses):.2f}, "
          f"max {max(losses)} (target: at most {1 / INTERVAL_S:.0f}, i.e. one second)")
    print(f"integrity_check: {check}")


if __name__ == "__main__":
    main()
