"""Helpers shared by the monitor's tests (tests/tui/, tests/protocols/test_validation_bounds.py):
stores, waiting, screen text."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from pathlib import Path

from protocols.plan import CellSpec
from rig.store import RunWriter
from rig.tui import MonitorApp
from rig.tui.widgets import ChannelTable, EventLog
from tests.support.protocol_text import two_cells
from tests.support.rig_process import rig_cmd

ROOT = Path(__file__).resolve().parents[2]
SIZE = (140, 40)
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z



# what a simulated station records in runs.station_json, trimmed to what the monitor reads
STATION = {
    "name": "test", "simulated": True,
    "sensors": [
        {"name": "box-o2", "kind": "atmosphere", "channel": None, "holder": None},
        {"name": "box-h2o", "kind": "atmosphere", "channel": None, "holder": None},
        {"name": "keller-ch0", "kind": "pressure", "channel": 0,
         "holder": {"headspace_mL": 5.0, "limit_Pa": 200000.0, "rate_warning_Pa_per_s": None}},
    ],
    "interlocks": {"o2_max_ppm": 1.0, "h2o_max_ppm": 1.0},
}
HOLD_MESSAGE = ("atmosphere interlock: O2 5.00 ppm above 1 ppm for 30 s; holding every channel "
                "at open circuit")


def write_protocol(tmp: Path, cycles: int, q: str = "0.5 mAh/cm^2") -> Path:
    path = tmp / "p.toml"
    path.write_text(two_cells("monitor test", q=q, cycles=cycles))
    return path


def query(db: Path, sql: str, *params) -> list[tuple]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def table_text(app: MonitorApp) -> list[list[str]]:
    table = app.query_one(ChannelTable)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def log_rows(app: MonitorApp) -> list[list[str]]:
    log = app.query_one(EventLog)
    return [[str(c) for c in log.get_row_at(i)] for i in range(log.row_count)]


async def wait_until(pilot, predicate, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        await pilot.pause(0.05)
    raise AssertionError("condition not reached in time")


def normalized(text: str) -> str:
    """Screen text without what changes from machine to machine (the engine's pid and host)."""
    text = re.sub(r"pid \d+ on \S+", "pid PID on HOST", text)
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


def cell(channel: int, headspace_mL: float | None = None) -> CellSpec:
    return CellSpec(channel, f"G{channel}", "symmetric", 1.13, "1 M NaPF6 in diglyme",
                    headspace_mL=headspace_mL)


def new_run(writer: RunWriter, run_id: str, *, channels: int = 2, status: str = "running",
            started_at: float = T0) -> int:
    key = writer.create_run(
        run_id=run_id, name=f"run {run_id[-4:]}", kind="plating_stripping",
        protocol_path=None, protocol_text=None, plan_json=None,
        station_json=json.dumps(STATION), software_version="test", started_at=started_at,
        clock="virtual")
    for n in range(channels):
        writer.add_channel(key, cell(n, 5.0 if n == 0 else None), "simulated")
        writer.channel_status(key, n, "running")
        writer.samples(key, n, [(started_at + 10 * k, 1, 1, -0.02, -1.13e-3, -0.0113 * k)
                                for k in range(1, 7)])
    if status != "running":
        for n in range(channels):
            writer.channel_status(key, n, "ended", end_reason="completed")
        writer.run_status(key, status, ended_at=started_at + 60)
    return key


def held_store(db: Path) -> tuple[RunWriter, int]:
    """A store with an older finished run and a running one held by the atmosphere
    interlock (O2 above its threshold), written as the engine would; the writer stays open so
    a test can go on writing (the caller closes it)."""
    writer = RunWriter(db, commit_interval_s=0.05)
    new_run(writer, "20251231-120000-0ld1", status="completed", started_at=T0 - 86400)
    key = new_run(writer, "20260101-000000-he1d")
    writer.sensor_values(key, [
        *((T0 + 60 * k, "box-o2", "o2_ppm", 0.2 + 0.4 * k) for k in range(13)),
        *((T0 + 60 * k, "box-h2o", "h2o_ppm", 0.3) for k in range(13)),
        *((T0 + 60 * k, "keller-ch0", "pressure_Pa", 101325.0 + 50 * k) for k in range(13)),
        *((T0 + 60 * k, "keller-ch0", "temperature_K", 298.15) for k in range(13))])
    writer.event(key, None, T0, "info", "run_start", "run 20260101-000000-he1d started")
    writer.event(key, 1, T0 + 400, "alarm", "short_soft", "channel 1: |E| dropped by 60 %")
    writer.event(key, None, T0 + 600, "alarm", "interlock_hold", HOLD_MESSAGE)
    for n in (0, 1):
        writer.channel_status(key, n, "held")
        writer.event(key, n, T0 + 601, "info", "held", f"channel {n} held: holding at open "
                     "circuit")
    writer.flush()
    return writer, key
