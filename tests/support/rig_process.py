"""Shared plumbing of the lifecycle tests: `rig` in a subprocess, polling the store, a tiny
real filesystem (tmpfs) to fill up or turn read-only."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def rig_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "rig.cli", *args]


def rig(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(rig_cmd(*args), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, **kw)


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


@contextmanager
def tiny_fs(where: Path, size: str = "3m") -> Iterator[Path]:
    """A real tmpfs of ``size`` at ``where`` (root only; skipped with the reason otherwise)."""
    where.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {out.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def remount(where: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(where)], check=True)


def fill(where: Path) -> Path:
    """Fill the filesystem at ``where`` to the last byte; the filler file."""
    filler = where / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    try:
        with open(filler, "ab") as f:
            while True:
                f.write(b"\0" * 512)
                f.flush()
    except OSError:
        pass
    return filler


def assert_no_traceback(out: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in out.stderr and "Traceback" not in out.stdout, out.stderr[-2000:]


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


os.environ.setdefault("PYTHONUNBUFFERED", "1")
