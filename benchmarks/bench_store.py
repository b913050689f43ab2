"""How fast the store writes samples: 1,000,000 rows through RunWriter, rows/s printed.

    python benchmarks/bench_store.py [--rows 1000000] [--channels 4] [--db PATH]

Rows are built before the clock starts, so the figure is what the writer thread sustains
(queue -> executemany -> commit, index included), measured from the first ``samples()`` call
to ``flush()`` returning; and per CPU-second of this process (both threads), the figure to
trust when other processes share the cores. Also prints the same load handed over 10 rows per
call (closer to an engine's sample loop) and the time of a decimated read of one channel.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from protocols.plan import CellSpec
from rig.store import RunWriter, get_samples, latest_sample, new_run_id, open_reader


def make_rows(n_rows: int, channels: int, per_call: int) -> list[tuple[int, list[tuple]]]:
    """(channel, rows) calls: each channel advances 1 s per sample, channels interleaved."""
    calls = []
    per_channel = n_rows // channels
    for start in range(0, per_channel, per_call):
        for ch in range(channels):
            calls.append((ch, [(float(k), k // 3600, k // 7200, 0.01 + 1e-6 * k, 1e-3,
                                1e-3 * (k % 3600)) for k in range(start, start + per_call)]))
    return calls


def bench(db: Path, n_rows: int, channels: int, per_call: int) -> float:
    calls = make_rows(n_rows, channels, per_call)
    with RunWriter(db) as w:
        key = w.create_run(run_id=new_run_id(time.time()), name="bench", kind="bench",
                           protocol_path=None, protocol_text=None, plan_json=None,
                           station_json=None, software_version=None, started_at=0.0,
                           clock="virtual")
        for ch in range(channels):
            w.add_channel(key, CellSpec(ch, f"cell{ch}", "symmetric", 1.13, "bench"), "none")
        t0, cpu0 = time.perf_counter(), time.process_time()
        for ch, rows in calls:
            w.samples(key, ch, rows)
        t_enqueue = time.perf_counter() - t0
        w.flush(timeout=600)
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        s = w.stats
    rate = s.samples_written / elapsed
    print(f"{s.samples_written:>9,} rows, {per_call:>4} rows/call: {elapsed:6.2f} s "
          f"-> {rate:>9,.0f} rows/s  (enqueue {t_enqueue:.2f} s, {s.commits} commits, "
          f"max commit {s.max_commit_s:.2f} s)\n"
          f"    CPU: {cpu:.2f} s -> {s.samples_written / cpu:,.0f} rows per CPU-second "
          f"(the figure to trust when other processes share the cores)")
    conn = open_reader(db)
    t0 = time.perf_counter()
    pts = get_samples(conn, key, 0, max_points=2000)
    t_dec = time.perf_counter() - t0
    t0 = time.perf_counter()
    latest_sample(conn, key, 0)
    t_last = time.perf_counter() - t0
    print(f"    read: {len(pts)} decimated points of {n_rows // channels:,} in "
          f"{t_dec * 1e3:.1f} ms; latest sample in {t_last * 1e3:.2f} ms")
    conn.close()
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--channels", type=int, default=4)
    ap.add_argument("--db", type=Path, default=None, help="default: a temporary directory")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = args.db or Path(tmp) / "bench.db"
        for per_call, suffix in ((1000, ""), (10, "-small")):
            db = base.with_name(base.stem + suffix + base.suffix)
            for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
                p.unlink(missing_ok=True)
            bench(db, args.rows, args.channels, per_call)


if __name__ == "__main__":
    main()
