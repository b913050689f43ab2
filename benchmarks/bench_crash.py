"""How much data a crash loses: a run on the simulated station, on the real clock, recording
every second, is killed with SIGKILL at a random moment, then taken over with `rig resume` and
killed again — 20 times. Per kill and channel, with t_last the last committed sample and
t_kill the moment of the kill:

- samples lost: those due in (t_last, t_kill], i.e. floor((t_kill - t_last) / interval);
- data lost (s): how long before the kill the oldest lost sample was due,
  max(0, t_kill - t_last - interval): the rig had measured that long past the store. Target:
  at most 1 s (every sample is committed within a second of being due);
- since the last stored sample (s): t_kill - t_last, which also counts the interval before the
  next sample was even due (so it reaches 1 s + the commit latency; shown, not the target).

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


def spread(xs: list[float]) -> str:
    q = sorted(xs)
    return (f"min {q[0]:.2f}, median {statistics.median(q):.2f}, "
            f"p90 {q[min(len(q) - 1, int(0.9 * len(q)))]:.2f}, max {q[-1]:.2f}")


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
    data_lost: list[float] = []
    staleness: list[float] = []
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
        late = [max(0.0, t_kill - t_last - INTERVAL_S) for t_last, _ in committed.values()]
        stale = [t_kill - t_last for t_last, _ in committed.values()]
        losses.extend(lost)
        data_lost.extend(late)
        staleness.extend(stale)
        print(f"kill {k + 1:2d}: samples lost per channel {lost}, data lost "
              f"{max(late):.2f} s, {max(stale):.2f} s since the last stored sample "
              f"(committed so far: {total})")
        if run_id is None:
            conn = sqlite3.connect(db)
            run_id = conn.execute("SELECT id FROM runs").fetchone()[0]
            conn.close()
            cmd = [sys.executable, "-m", "rig.cli", "resume", run_id, "--db", str(db)]
    check = sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0]
    print(f"\n{args.kills} kills x {args.channels} channels, recording every {INTERVAL_S:g} s")
    print(f"samples lost per channel per kill: mean {statistics.mean(losses):.2f}, "
          f"max {max(losses)} (at most {1 / INTERVAL_S:.0f} = one second of samples)")
    print(f"data lost per channel per kill (s): {spread(data_lost)}  (target: at most 1 s)")
    print(f"since the last stored sample (s):   {spread(staleness)}  (interval "
          f"{INTERVAL_S:g} s + commit latency; for reference)")
    print(f"kills losing more than 1 s of data: {sum(1 for x in data_lost if x > 1.0)} of "
          f"{len(data_lost)} channel-kills")
    print(f"integrity_check: {check}")


if __name__ == "__main__":
    main()
