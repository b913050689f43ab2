"""How fast `rig report` and the per-cycle analysis are on a run of 10 million samples.

    python benchmarks/bench_report.py [--samples 10000000] [--channels 4] [--db PATH] [--out DIR]

Builds (or reuses, when ``--db`` already holds it) a store with one plating-stripping run of
``--samples`` samples over ``--channels`` symmetric cells, 1 s apart (2.5 M samples, ~350
cycles of 1 h half-cycles per channel; a carbonate-like cell rises and has one short spike).
The run's metadata, steps and status go through ``RunWriter``; the samples are bulk-inserted
into the real schema in large transactions (the simulator would take hours to make them).

Then prints, beside a baseline measured in the same process on the same store:
- baseline: one SQL scan of every sample (``count(*)`` and ``max(abs(e))``), and a Python
  read of every sample in chunks (what any full-resolution figure has to pay);
- per-cycle analysis: steps -> ``per_cycle`` and the outcome, every channel (target < 5 s);
- report: ``build_report`` with every figure and the summary (target < 30 s);
- peak memory of the process (ru_maxrss; target < 500 MB).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from protocols.plan import CellSpec  # noqa: E402
from rig.analysis.cycles import per_cycle  # noqa: E402
from rig.analysis.outcomes import compute_outcome  # noqa: E402
from rig.store import RunWriter, get_steps, open_db, open_reader  # noqa: E402

RUN_NAME = "bench_report"
HALF_S = 3600  # one half-cycle at 1 mA/cm² and 1 mAh/cm²
AREA = 1.13
I_A = 1.13e-3
ELECTROLYTES = ("1 M NaPF6 in diglyme", "1 M NaClO4 in EC:DEC")


def _eta(cycle: np.ndarray, carbonate: bool) -> np.ndarray:
    """Overpotential of each cycle (V): flat ~20 mV in a glyme, 150 mV rising in a carbonate."""
    if carbonate:
        return 0.15 * (1 + cycle / 300.0)
    return 0.02 + 0.0 * cycle


def _channel_arrays(ch: int, k: np.ndarray, t0: float) -> dict[str, np.ndarray]:
    """Samples number ``k`` (a chunk of them) of channel ``ch``."""
    half = k // HALF_S  # 0-based half-cycle index
    cycle = half // 2 + 1
    sign = np.where(half % 2 == 0, -1.0, 1.0)  # plate first
    within = (k % HALF_S) / HALF_S
    carbonate = ch % 2 == 1
    rng = np.random.default_rng([ch, int(k[0])])
    e = sign * _eta(cycle, carbonate) * (1 + 0.3 * within ** 4) + rng.normal(0, 5e-4, len(k))
    return {"t": t0 + k.astype(float), "step": half, "cycle": cycle, "e": e, "i": sign * I_A,
            "q": sign * I_A * ((k % HALF_S) + 1)}


CHUNK = 100 * HALF_S  # samples generated and inserted at once: whole half-cycles


def build(db: Path, n_samples: int, channels: int) -> int:
    """Write the run in chunks (bounded memory); returns its key."""
    t0 = 1.8e9
    per_channel = n_samples // channels
    with RunWriter(db) as w:
        key = w.create_run(run_id=f"{RUN_NAME}-{n_samples}", name=RUN_NAME,
                           kind="plating_stripping", protocol_path=None, protocol_text=None,
                           plan_json=None, station_json=json.dumps({"name": "bench"}),
                           software_version=None, started_at=t0, clock="virtual")
        for ch in range(channels):
            w.add_channel(key, CellSpec(ch, f"B{ch}", "symmetric", AREA,
                                        ELECTROLYTES[ch % 2]), "bench")
        w.flush()
    conn = open_db(db)
    steps_by_channel: dict[int, list[dict]] = {}
    for ch in range(channels):
        steps: list[dict] = []
        for start in range(0, per_channel, CHUNK):
            a = _channel_arrays(ch, np.arange(start, min(start + CHUNK, per_channel)), t0)
            if ch % 2 == 1 and start <= per_channel // 2 < start + CHUNK:
                a["e"][per_channel // 2 - start] = 0.95  # one sample: a spike to keep
            rows = zip(a["t"].tolist(), a["step"].tolist(), a["cycle"].tolist(),
                       a["e"].tolist(), a["i"].tolist(), a["q"].tolist())
            conn.execute("BEGIN")
            conn.executemany(f"INSERT INTO samples (run_key, channel, t, step, cycle, e, i, q) "
                             f"VALUES ({key}, {ch}, ?, ?, ?, ?, ?, ?)", rows)
            conn.execute("COMMIT")
            for first in range(0, len(a["t"]), HALF_S):
                sl = slice(first, first + HALF_S)
                e, s = a["e"][sl], int(a["step"][first])
                steps.append({
                    "step": s, "cycle": int(a["cycle"][first]),
                    "label": "plate" if s % 2 == 0 else "strip", "kind": "cc",
                    "half_cycle": "plate" if s % 2 == 0 else "strip",
                    "t_start": float(a["t"][first]) - 1, "t_end": float(a["t"][sl][-1]),
                    "end_reason": "charge" if len(e) == HALF_S else "aborted",
                    "charge_C": float(a["q"][sl][-1]), "e_mean_abs_V": float(np.abs(e).mean()),
                    "e_end_V": float(e[-1]), "n_samples": len(e)})
        steps_by_channel[ch] = steps
    conn.close()
    with RunWriter(db, run_id=f"{RUN_NAME}-{n_samples}") as w:
        t_end = t0 + per_channel
        for ch, steps in steps_by_channel.items():
            for row in steps:
                w.step_end(key, ch, row)
            outcome = compute_outcome("failure_cycle", steps, "completed", {})
            w.channel_status(key, ch, "ended", end_reason="completed", outcome=outcome)
        w.run_status(key, "completed", "completed", ended_at=t_end)
    return key


def existing_run(db: Path, n_samples: int) -> int | None:
    if not db.exists():
        return None
    with sqlite3.connect(db) as conn:
        try:
            row = conn.execute("SELECT key, status FROM runs WHERE id = ?",
                               (f"{RUN_NAME}-{n_samples}",)).fetchone()
        except sqlite3.OperationalError:
            return None
    return row[0] if row and row[1] == "completed" else None


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - t, result


def baseline_scan(db: Path, key: int) -> tuple[int, float]:
    with open_reader(db) as conn:
        return conn.execute("SELECT count(*), max(abs(e)) FROM samples WHERE run_key = ?",
                            (key,)).fetchone()


def baseline_python_read(db: Path, key: int, channels: int) -> int:
    from rig.report.queries import sample_chunks

    n = 0
    with open_reader(db) as conn:
        for ch in range(channels):
            for chunk in sample_chunks(conn, key, ch):
                n += len(chunk)
    return n


def per_cycle_analysis(db: Path, key: int, channels: int) -> int:
    n = 0
    with open_reader(db) as conn:
        for ch in range(channels):
            steps = get_steps(conn, key, ch)
            n += len(per_cycle(steps))
            compute_outcome("failure_cycle", steps, "completed", {})
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=10_000_000)
    ap.add_argument("--channels", type=int, default=4)
    ap.add_argument("--db", type=Path,
                    default=Path(tempfile.gettempdir()) / "narig-bench-report.db")
    ap.add_argument("--out", type=Path, default=None, help="report directory (default: temp)")
    args = ap.parse_args()

    key = existing_run(args.db, args.samples)
    if key is None:
        for p in (args.db, Path(f"{args.db}-wal"), Path(f"{args.db}-shm")):
            p.unlink(missing_ok=True)
        dt, key = timed(build, args.db, args.samples, args.channels)
        print(f"built {args.db}: {args.samples:,} samples in {dt:.1f} s; measuring in a fresh "
              "process (so the build's memory is not counted)", flush=True)
        os.execv(sys.executable, [sys.executable, __file__, *sys.argv[1:]])
    else:
        print(f"reusing {args.db} (run {RUN_NAME}-{args.samples})")

    from rig.report.build import build_report

    dt_scan, (n, emax) = timed(baseline_scan, args.db, key)
    print(f"baseline  SQL scan of every sample (count, max |E|): {dt_scan:6.2f} s  "
          f"({n:,} samples, max |E| {emax:.3f} V)")
    dt_read, n_read = timed(baseline_python_read, args.db, key, args.channels)
    print(f"baseline  Python read of every sample in chunks:     {dt_read:6.2f} s  "
          f"({n_read:,} rows)")
    dt_cyc, n_cyc = timed(per_cycle_analysis, args.db, key, args.channels)
    print(f"per-cycle analysis (steps -> cycles, outcome):        {dt_cyc:6.2f} s  "
          f"({n_cyc:,} cycles; target < 5 s)")
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "report"
        dt_rep, report = timed(build_report, args.db, f"{RUN_NAME}-{args.samples}", out)
        print(f"report (every figure and summary.md):                 {dt_rep:6.2f} s  "
              f"({len(report.figures)} figures, {len(report.skipped)} skipped; target < 30 s)")
        for fig in report.figures:
            print(f"    {fig.path.name:<32} {fig.seconds:6.2f} s")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory (ru_maxrss of this process):              {peak_mb:6.0f} MB "
          "(target < 500 MB)")


if __name__ == "__main__":
    main()
