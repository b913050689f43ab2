"""How the monitor copes with a big run: time to first screen, CPU per refresh, memory.

    python benchmarks/bench_monitor.py [--db PATH] [--samples 10000000] [--channels 64]
                                       [--seconds 10]

The store (built once if ``--db`` names no file, else reused): one running run of
``--channels`` channels and 5000 one-hour cycles, ``--samples`` samples spread over them, a
step row and a step_end event per half-cycle (640,000 each at 64 channels), and the station's
sensors every 10 simulated minutes (glovebox O2/H2O/T, a pressure gauge on 8 of the cells).
It is written straight into SQLite by a child process (executemany, the store's own schema).

Measured in this process, which only runs the monitor (headless, 140x40):
- first screen: from ``MonitorApp(db)`` to the channel table holding every channel;
- refresh: polling at 2 and 4 Hz for ``--seconds`` each while a child process appends to the
  run as a busy 64-channel engine would (4 samples per channel per second, step ends, events,
  sensor readings, through RunWriter); CPU of this process (all its threads) per poll and as a
  share of one core;
- memory: peak RSS of this process (``resource.getrusage``).

Targets (issue 5): first screen < 1 s, monitor < 25 % of one core, memory < 300 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

T0 = 1_767_225_600.0
CYCLES = 5000
HALF_S = 1800.0  # each half-cycle 30 min: a cycle an hour
SENSOR_EVERY_S = 600.0
GAUGES = 8
RUN_ID = "20260101-000000-b1g0"
SIZE = (140, 40)


# ---- building the store (child process) -----------------------------------------------------
def protocol_text(channels: int) -> str:
    cells = "".join(
        f'\n[[cells]]\nchannel = {n}\ncell_id = "NaNa-{n:02d}"\ntype = "symmetric"\n'
        f'area = "1.13 cm^2"\nelectrolyte = "1 M NaPF6 in diglyme"\n'
        + ('headspace = "5 mL"\n' if n < GAUGES else "")
        for n in range(channels))
    return ('kind = "plating_stripping"\nname = "bench"\ncurrent_density = "1 mA/cm^2"\n'
            f'areal_capacity = "0.5 mAh/cm^2"\ncycles = {CYCLES}\nrecord_interval = "10 s"\n'
            + cells)


def station_json(channels: int) -> str:
    sensors = [{"name": "box-h2o", "kind": "atmosphere", "channel": None, "holder": None},
               {"name": "box-o2", "kind": "atmosphere", "channel": None, "holder": None}]
    sensors += [{"name": f"keller-ch{n}", "kind": "pressure", "channel": n,
                 "holder": {"headspace_mL": 5.0, "limit_Pa": 2e5,
                            "rate_warning_Pa_per_s": None}} for n in range(min(GAUGES,
                                                                                channels))]
    return json.dumps({"name": "bench", "simulated": True, "sensors": sensors,
                       "interlocks": {"o2_max_ppm": 1.0, "h2o_max_ppm": 1.0}})


def build(db: Path, n_samples: int, channels: int) -> None:
    from protocols.load import parse_protocol
    from rig.store import RunWriter, open_db

    text = protocol_text(channels)
    plan = parse_protocol(text, "<bench>")
    with RunWriter(db) as w:
        key = w.create_run(run_id=RUN_ID, name="bench", kind="plating_stripping",
                           protocol_path="<bench>", protocol_text=text,
                           plan_json=plan.to_json(), station_json=station_json(channels),
                           software_version="bench", started_at=T0, clock="virtual")
        for cp in plan.channels:
            w.add_channel(key, cp.cell, "synthetic")
            w.channel_status(key, cp.cell.channel, "running")
    span = CYCLES * 2 * HALF_S * 0.999  # the run so far: nearly all its cycles
    per_channel = n_samples // channels
    dt = span / per_channel
    conn = open_db(db)
    conn.execute("PRAGMA synchronous = OFF")
    t_start = time.perf_counter()
    for ch in range(channels):
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO samples (run_key, channel, t, step, cycle, e, i, q) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", _samples(key, ch, per_channel, dt))
        steps = int(span // HALF_S)
        conn.executemany(
            "INSERT INTO steps (run_key, channel, step, cycle, label, kind, half_cycle, "
            "t_start, t_end, end_reason, charge_C, e_mean_abs_V, e_end_V, n_samples) "
            "VALUES (?, ?, ?, ?, ?, 'constant_current', ?, ?, ?, 'charge', ?, ?, ?, ?)",
            _steps(key, ch, steps))
        conn.executemany(
            "INSERT INTO events (run_key, channel, t, level, kind, message) "
            "VALUES (?, ?, ?, 'info', 'step_end', ?)",
            ((key, ch, T0 + k * HALF_S, f"step {k} ended on charge") for k in
             range(1, steps + 1)))
        conn.execute("COMMIT")
        if ch % 8 == 7:
            print(f"  channel {ch + 1}/{channels}: {time.perf_counter() - t_start:.0f} s",
                  flush=True)
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO sensors (run_key, t, sensor, quantity, value) "
                     "VALUES (?, ?, ?, ?, ?)", _sensors(key, span, channels))
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def _samples(key: int, ch: int, n: int, dt: float):
    for k in range(n):
        t = k * dt
        step = int(t // HALF_S) + 1
        sign = -1.0 if step % 2 else 1.0
        yield (key, ch, T0 + t, step, (step + 1) // 2, sign * (0.02 + 1e-6 * (k % 1000)),
               sign * 1.13e-3, sign * 1.13e-3 * (t % HALF_S))


def _steps(key: int, ch: int, n: int):
    for s in range(1, n + 1):
        half = "plate" if s % 2 else "strip"
        sign = -1.0 if s % 2 else 1.0
        yield (key, ch, s, (s + 1) // 2, half, half, T0 + (s - 1) * HALF_S, T0 + s * HALF_S,
               sign * 2.034, 0.021 + 1e-7 * s, sign * 0.021, 180)


def _sensors(key: int, span: float, channels: int):
    for k in range(int(span // SENSOR_EVERY_S)):
        t = T0 + k * SENSOR_EVERY_S
        yield (key, t, "box-o2", "o2_ppm", 0.2 + 0.01 * (k % 7))
        yield (key, t, "box-h2o", "h2o_ppm", 0.3 + 0.01 * (k % 5))
        yield (key, t, "box-h2o", "temperature_K", 297.0)
        for n in range(min(GAUGES, channels)):
            yield (key, t, f"keller-ch{n}", "pressure_Pa", 101325.0 + 0.01 * k)
            yield (key, t, f"keller-ch{n}", "temperature_K", 298.15)


# ---- a live engine's writes (child process) --------------------------------------------------
def write_live(db: Path, channels: int, seconds: float) -> None:
    """Append to the run as a busy engine would, in real time, for ``seconds``."""
    from rig.store import RunWriter

    with RunWriter(db, run_id=RUN_ID) as w:
        key = w.run_key
        t = T0 + CYCLES * 2 * HALF_S * 0.999
        step = int((t - T0) // HALF_S) + 1
        end = time.monotonic() + seconds
        tick = 0
        while time.monotonic() < end:
            tick += 1
            for ch in range(channels):
                w.samples(key, ch, [(t + 0.25 * k, step, (step + 1) // 2, 0.021, 1.13e-3,
                                     1e-3 * k) for k in range(2)])
            if tick % 20 == 0:  # every 10 s: every channel ends a step
                step += 1
                for ch in range(channels):
                    w.step_end(key, ch, {"step": step - 1, "cycle": step // 2,
                                         "label": "strip", "kind": "constant_current",
                                         "half_cycle": "strip", "charge_C": 2.034,
                                         "e_mean_abs_V": 0.021, "e_end_V": 0.021,
                                         "t_start": t - HALF_S, "t_end": t, "n_samples": 180})
                    w.event(key, ch, t, "info", "step_end", f"step {step - 1} ended")
            if tick % 10 == 0:
                w.sensor_values(key, [(t, "box-o2", "o2_ppm", 0.2), (t, "box-h2o", "h2o_ppm",
                                                                       0.3)])
            t += 0.5
            time.sleep(0.5)


# ---- measuring the monitor (this process) ----------------------------------------------------
def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


async def measure(db: Path, channels: int, seconds: float) -> dict[str, float]:
    from rig.tui import MonitorApp
    from rig.tui.widgets import ChannelTable

    class Counting(MonitorApp):
        polls = 0

        def _show(self, snap):  # type: ignore[override]
            Counting.polls += 1
            super()._show(snap)

    figures: dict[str, float] = {}
    t0 = time.perf_counter()
    app = Counting(db, RUN_ID, poll_s=0.5)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(ChannelTable)
        while table.row_count < channels:
            await pilot.pause(0.005)
        figures["first_screen_s"] = time.perf_counter() - t0
        await pilot.pause(1.0)  # plots of the selected channel, the first poll's events
        live = await asyncio.to_thread(
            subprocess.Popen, [sys.executable, __file__, "--write-live", str(db),
                               "--channels", str(channels), "--seconds", str(2 * seconds + 5)],
            cwd=ROOT)
        try:
            await pilot.pause(1.0)
            for hz in (2, 4):
                app.poll_s = 1 / hz
                for timer in list(app._timers):  # the poll timer: re-armed at this rate
                    timer.stop()
                app.set_interval(app.poll_s, app.poll_store)
                app.set_interval(0.5, app._blink)
                await pilot.pause(0.5)
                n0, cpu0, w0 = Counting.polls, time.process_time(), time.perf_counter()
                await asyncio.sleep(seconds)
                cpu, wall = time.process_time() - cpu0, time.perf_counter() - w0
                polls = Counting.polls - n0
                figures[f"{hz}hz_polls"] = polls
                figures[f"{hz}hz_cpu_per_poll_ms"] = 1e3 * cpu / max(polls, 1)
                figures[f"{hz}hz_core_share"] = cpu / wall
        finally:
            live.terminate()
            live.wait(timeout=30)
    return figures


def poll_costs(db: Path) -> tuple[float, float]:
    """One StoreView's first poll and a later one, in seconds (no UI)."""
    from rig.tui.data import StoreView

    view = StoreView(db, RUN_ID)
    t0 = time.perf_counter()
    view.poll(0)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    view.poll(0)
    later = time.perf_counter() - t0
    view.close()
    return first, later


def count_samples(db: Path) -> int:
    import sqlite3

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM samples").fetchone()[0]
    finally:
        conn.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", help="the store to use (built there if the file does not exist)")
    p.add_argument("--samples", type=int, default=10_000_000)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--seconds", type=float, default=10.0, help="measured at each poll rate")
    p.add_argument("--build", metavar="DB", help=argparse.SUPPRESS)
    p.add_argument("--write-live", metavar="DB", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.build:
        build(Path(args.build), args.samples, args.channels)
        return
    if args.write_live:
        write_live(Path(args.write_live), args.channels, args.seconds)
        return
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(args.db) if args.db else Path(tmp) / "bench_monitor.db"
        if not db.exists():
            print(f"building {db}: {args.samples:,} samples on {args.channels} channels…",
                  flush=True)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--build", str(db), "--samples",
                            str(args.samples), "--channels", str(args.channels)], check=True,
                           cwd=ROOT)
            print(f"built in {time.perf_counter() - t0:.0f} s "
                  f"({db.stat().st_size / 1e9:.2f} GB)")
        report(db, args)


def report(db: Path, args: argparse.Namespace) -> None:
    print(f"store: {db} ({count_samples(db):,} samples), monitor at {SIZE[0]}x{SIZE[1]}, "
          f"pid {os.getpid()}")
    figures = asyncio.run(measure(db, args.channels, args.seconds))
    first_poll, later_poll = poll_costs(db)
    rss = rss_mb()
    share = max(figures["2hz_core_share"], figures["4hz_core_share"])
    print(f"first screen:      {figures['first_screen_s']:.2f} s  (target < 1 s)")
    print(f"a poll, no UI:     first {first_poll * 1e3:.0f} ms, then {later_poll * 1e3:.0f} ms")
    for hz in (2, 4):
        print(f"refresh at {hz} Hz:   {figures[f'{hz}hz_polls']:.0f} polls, "
              f"{figures[f'{hz}hz_cpu_per_poll_ms']:.1f} ms CPU per poll, "
              f"{figures[f'{hz}hz_core_share']:.1%} of one core  (target < 25 %)")
    print(f"peak RSS:          {rss:.0f} MB  (target < 300 MB)")
    ok = figures["first_screen_s"] < 1 and share < 0.25 and rss < 300
    print("all targets met" if ok else "TARGET MISSED")


if __name__ == "__main__":
    main()
