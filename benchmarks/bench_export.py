"""`rig export` on a big run: time and peak memory per format, beside a baseline.

    python benchmarks/bench_export.py [--db PATH] [--samples 10000000] [--channels 4]
                                      [--formats bdf,parquet,csv] [--keep DIR]

The store (built once if ``--db`` names no file, else reused) is bench_monitor.py's: one run of
``--channels`` channels and 5000 one-hour cycles, ``--samples`` samples spread over them, a step
row per half-cycle, glovebox and holder sensors every 10 simulated minutes.

Each measurement is a fresh child process (its own peak RSS, from ``os.wait4``):
- baseline: read every sample of every channel through ``rig.store.frames.iter_samples`` (the
  chunked read every export does) and nothing else: the floor an export cannot beat;
- ``rig export latest --format F --out DIR`` for each format: wall time, rows/s, peak RSS,
  output size.

Target (issue 11): export of a 10-million-sample run in bounded memory (peak < 500 MB).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

BASELINE = """
import sys
from rig.store import get_channels, open_reader, resolve_run
from rig.store.frames import iter_samples
conn = open_reader(sys.argv[1])
run = resolve_run(conn, "latest")
n = 0
for ch in get_channels(conn, run["key"]):
    for chunk in iter_samples(conn, run["key"], ch["channel"]):
        n += len(chunk)
print(n)
"""


def measure_child(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MB, stdout) of one child process, reaped with ``os.wait4``
    so its own peak RSS is read (not the maximum over every child so far)."""
    t0 = time.perf_counter()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: exec the command with stdout into the pipe
        os.close(r)
        os.dup2(w, 1)
        os.chdir(ROOT)
        os.execvpe(cmd[0], cmd, env)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(cmd)} failed (exit {os.waitstatus_to_exitcode(status)})")
    return wall, usage.ru_maxrss / 1024, out


def size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", help="store to use (built there if missing)")
    ap.add_argument("--samples", type=int, default=10_000_000)
    ap.add_argument("--channels", type=int, default=4)
    ap.add_argument("--formats", default="bdf,parquet,csv")
    ap.add_argument("--keep", help="write the exports here (default: a temporary directory)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-export-"))
    db = Path(args.db) if args.db else tmp / "big.db"
    if not db.exists():
        import bench_monitor

        print(f"building {db}: {args.samples:,} samples on {args.channels} channels ...",
              flush=True)
        t0 = time.perf_counter()
        bench_monitor.build(db, args.samples, args.channels)
        print(f"  built in {time.perf_counter() - t0:.0f} s, {db.stat().st_size / 1e6:.0f} MB")
    env = {**os.environ, "NARIG_DB": str(db), "PYTHONPATH": str(ROOT)}
    py = sys.executable
    wall, rss, out = measure_child([py, "-c", BASELINE, str(db)], env)
    n = int(out.strip())
    print(f"\n{n:,} samples on {args.channels} channels")
    print(f"{'what':<34} {'time s':>8} {'rows/s':>11} {'peak RSS MB':>12} {'output MB':>10}")
    print(f"{'baseline: chunked read only':<34} {wall:>8.1f} {n / wall:>11,.0f} {rss:>12.0f} "
          f"{'-':>10}")
    out_root = Path(args.keep) if args.keep else tmp / "out"
    for fmt in args.formats.split(","):
        dest = out_root / fmt
        shutil.rmtree(dest, ignore_errors=True)
        wall, rss, _ = measure_child([py, "-m", "rig.cli", "export", "latest", "--format", fmt,
                                      "--out", str(dest)], env)
        print(f"{'rig export --format ' + fmt:<34} {wall:>8.1f} {n / wall:>11,.0f} {rss:>12.0f} "
              f"{size_mb(dest):>10.0f}")
    print("\ntarget: peak RSS < 500 MB for 10 million samples (issue 11)")
    if not args.keep:
        shutil.rmtree(out_root, ignore_errors=True)
    if not args.db:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
