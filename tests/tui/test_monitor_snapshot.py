"""Snapshots of the monitor's screen at 140x40, compared as plain text.

The finished run is made deterministic (simulated station, seed 0, a virtual clock from a fixed
start, a fixed run id); what still differs between machines (the engine's pid and host) is
normalized. After an intended change of the screen, regenerate the files and review the diff:

    NARIG_UPDATE_SNAPSHOTS=1 python -m pytest tests/tui/test_monitor_snapshot.py
"""

from __future__ import annotations

import difflib
import os
import time
from pathlib import Path

import pytest

from rig.tui import MonitorApp
from rig.tui.app import POLL_S
from rig.tui.demo import DEMO_PROTOCOL, DEMO_RUN_ID, screen_text, simulate_run
from rig.tui.widgets import ChannelTable
from tests.support.monitor import SIZE, held_store, normalized, wait_until

SNAPSHOTS = Path(__file__).parent / "test_monitor_snapshots"
UPDATE = os.environ.get("NARIG_UPDATE_SNAPSHOTS") == "1"


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory) -> Path:
    """A finished 3-cycle run: a glyme and a carbonate Na||Na cell, each in a gas holder."""
    db = tmp_path_factory.mktemp("demo") / "demo.db"
    simulate_run(db, DEMO_PROTOCOL.format(cycles=3))
    return db


async def snapshot_of(db: Path) -> str:
    app = MonitorApp(db)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.query_one(ChannelTable).row_count == 2
                         and app.last_snapshot is not None)
        # settled: plots drawn, layout done, the same screen after two more polls
        shown, end = "", time.monotonic() + 15
        while time.monotonic() < end:
            await pilot.pause(2 * POLL_S)
            now = normalized(screen_text(app))
            if now == shown:
                return now
            shown = now
        raise AssertionError("the screen did not settle")


def check(name: str, text: str) -> None:
    path = SNAPSHOTS / name
    if UPDATE or not path.exists():
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
        if not UPDATE:
            pytest.fail(f"{path} did not exist: written now; review it and run again")
    expected = path.read_text(encoding="utf-8")
    diff = "\n".join(difflib.unified_diff(expected.splitlines(), text.splitlines(),
                                          "expected", "shown", lineterm=""))
    assert text == expected, f"the screen differs from {path} (see the module docstring):\n" \
        f"{diff}"


async def test_main_screen_of_a_finished_glyme_carbonate_run(demo_db):
    text = await snapshot_of(demo_db)
    assert DEMO_RUN_ID in text and "STATION HELD" not in text
    check("finished_140x40.txt", text)


async def test_main_screen_of_a_held_station(tmp_path):
    writer, _ = held_store(tmp_path / "held.db")
    try:
        text = await snapshot_of(tmp_path / "held.db")
    finally:
        writer.close()
    assert "STATION HELD" in text
    check("held_140x40.txt", text)
