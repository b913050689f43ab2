"""Make the README's screenshot of the monitor: docs/monitor.svg.

Simulates a plating-stripping run of two glyme and two carbonate Na||Na cells, each in a gas
holder (seed 0, a virtual clock from a fixed start: the same picture every time), opens the
monitor on it at 140x40 with the first carbonate cell selected (the carbonate cells end on
overpotential divergence) and the event log filtered to it, and saves Textual's SVG
screenshot.

    python benchmarks/make_screenshot.py [--out docs/monitor.svg] [--cycles 60]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from rig.tui import MonitorApp
from rig.tui.demo import screen_text, simulate_run
from rig.tui.widgets import ChannelTable

ROOT = Path(__file__).resolve().parents[1]
SIZE = (140, 40)

PROTOCOL = """
kind = "plating_stripping"
name = "Na‖Na plating–stripping, glyme vs carbonate"
current_density = "1 mA/cm^2"
areal_capacity = "1 mAh/cm^2"
cycles = {cycles}
record_interval = "60 s"

[failure]
short_below = "5 mV"
divergence_factor = 1.3
divergence_reference_cycles = 5
"""
CELLS = (("NaNa-G1", "1 M NaPF6 in diglyme"), ("NaNa-G2", "1 M NaPF6 in diglyme"),
         ("NaNa-C1", "1 M NaClO4 in EC:DEC"), ("NaNa-C2", "1 M NaClO4 in EC:DEC"))


def protocol(cycles: int) -> str:
    cells = "".join(
        f'\n[[cells]]\nchannel = {n}\ncell_id = "{cell}"\ntype = "symmetric"\n'
        f'area = "1.13 cm^2"\nelectrolyte = "{electrolyte}"\nheadspace = "5 mL"\n'
        for n, (cell, electrolyte) in enumerate(CELLS))
    return PROTOCOL.format(cycles=cycles) + cells


async def shoot(db: Path, out: Path, select: int) -> str:
    """Save the screenshot; return the screen as plain text (for a look in the terminal)."""
    app = MonitorApp(db, flash=False)  # the alarm count steady: the same picture every time
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(ChannelTable)
        end = time.monotonic() + 30
        while not (table.row_count == len(CELLS) and app.last_snapshot):
            if time.monotonic() > end:
                raise SystemExit("the monitor did not show the run within 30 s")
            await pilot.pause(0.1)
        for _ in range(select):
            await pilot.press("down")
        await pilot.press("f")  # the event log: that channel's events (its alarm on top)
        await pilot.pause(1.5)  # the selected channel's plots read and drawn
        out.parent.mkdir(parents=True, exist_ok=True)
        app.save_screenshot(filename=out.name, path=str(out.parent))
        return screen_text(app)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "monitor.svg"))
    p.add_argument("--cycles", type=int, default=60)
    p.add_argument("--select", type=int, default=2, help="the channel whose plots are shown")
    p.add_argument("--text", action="store_true", help="also print the screen as text")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "screenshot.db"
        t0 = time.monotonic()
        simulate_run(db, protocol(args.cycles))
        print(f"simulated {args.cycles} cycles on {len(CELLS)} channels in "
              f"{time.monotonic() - t0:.1f} s")
        text = asyncio.run(shoot(db, Path(args.out), args.select))
    if args.text:
        print(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
