"""Shared plumbing of the lifecycle tests: `rig` in a subprocess (as a user starts it), polling
its store from outside, stopping it."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.support.protocol_text import GLYME, two_cells

ROOT = Path(__file__).resolve().parents[2]


def as_from_a_terminal() -> None:
    """A ``preexec_fn``: SIGHUP and SIGINT at their defaults, as a shell in a terminal starts a
    command. A suite started under nohup (or in the background of a script) would hand them on
    ignored, and rig keeps an inherited ignore (it was asked to outlive its terminal)."""
    for sig in (signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)


def rig_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "rig.cli", *args]


def rig(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(rig_cmd(*args), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, **kw)


def control_protocol(cycles: int, q: str) -> str:
    return two_cells("control test", q=q, cycles=cycles,
                     cells=(("G1", GLYME), ("G2", GLYME)))


def start_run(tmp_path: Path, cycles: int, q: str = "1 mAh/cm^2"
              ) -> tuple[subprocess.Popen, Path]:
    """`rig run` of two glyme cells in the background; (the process, its store)."""
    protocol = tmp_path / "p.toml"
    protocol.write_text(control_protocol(cycles, q))
    db = tmp_path / "store.db"
    proc = subprocess.Popen(rig_cmd("run", str(protocol), "--db", str(db)), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, db


def wait_for(predicate, timeout: float = 60.0, every: float = 0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("condition not reached in time")


def query(db: Path, sql: str, *params):
    if not db.exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return None
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.Error:
        return None
    finally:
        conn.close()


def count(db: Path, sql: str, *params) -> int:
    rows = query(db, sql, *params)
    return rows[0][0] if rows and rows[0][0] is not None else 0


def assert_no_traceback(out: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in out.stderr and "Traceback" not in out.stdout, out.stderr[-2000:]


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


os.environ.setdefault("PYTHONUNBUFFERED", "1")
