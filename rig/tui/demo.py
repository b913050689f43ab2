"""Deterministic simulated runs for the monitor's snapshot test, its README screenshot and
its benchmark: a fixed seed, a virtual clock from a fixed start, a fixed run id.

    >>> simulate_run(tmp / "demo.db", DEMO_PROTOCOL.format(cycles=3))
    '20260101-000000-demo'
"""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from textual.app import App

DEMO_START = 1_767_225_600.0  # 2026-01-01T00:00:00Z
DEMO_RUN_ID = "20260101-000000-demo"

# Two glyme and two carbonate Na||Na cells, each in a gas holder (so the station panel has a
# pressure gauge per cell). ``{cycles}`` is filled in by the caller.
DEMO_PROTOCOL = """
kind = "plating_stripping"
name = "glyme vs carbonate"
current_density = "1 mA/cm^2"
areal_capacity = "0.5 mAh/cm^2"
cycles = {cycles}
record_interval = "60 s"

[[cells]]
channel = 0
cell_id = "NaNa-G1"
type = "symmetric"
area = "1.13 cm^2"
electrolyte = "1 M NaPF6 in diglyme"
headspace = "5 mL"

[[cells]]
channel = 1
cell_id = "NaNa-C1"
type = "symmetric"
area = "1.13 cm^2"
electrolyte = "1 M NaClO4 in EC:DEC"
headspace = "5 mL"
"""


def simulate_run(db: str | os.PathLike, protocol_text: str, *, run_id: str = DEMO_RUN_ID,
                 start: float = DEMO_START, seed: int = 0,
                 glovebox_events: Sequence[Any] = (), progress: Any = None) -> str:
    """Run ``protocol_text`` on the simulated station into ``db``, on a virtual clock that
    starts at ``start``; returns the run id. Blocks until the run has ended. ``progress``:
    the engine's Progress (default: none)."""
    from protocols.load import parse_protocol
    from rig.clock import VirtualClock
    from rig.engine.run import execute
    from rig.sim.station import simulated_station
    from rig.store import RunWriter

    plan = parse_protocol(protocol_text, "<demo>")
    clock = VirtualClock(start=start)
    station = simulated_station(plan, clock, seed=seed, glovebox_events=glovebox_events)
    writer = RunWriter(Path(db))
    try:
        result = asyncio.run(execute(plan, station=station, clock=clock, writer=writer,
                                     protocol_text=protocol_text, protocol_path="<demo>",
                                     run_id=run_id, progress=progress))
    finally:
        station.close()
        writer.close()
    return result.run_id


def screen_text(app: App) -> str:
    """The running app's screen as plain text: what ``App.export_screenshot`` draws, without
    styles (for text snapshots and a look at a screenshot in a terminal)."""
    from rich.console import Console

    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True,
                      color_system="truecolor", record=True, legacy_windows=False,
                      safe_box=False)
    console.print(app.screen._compositor.render_update(
        full=True, screen_stack=app._background_screens))
    return console.export_text()
