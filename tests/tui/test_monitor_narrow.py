"""The monitor on a laptop over ssh (80x24): every column a glance needs fits the width, an
ended channel shows its output off (not its last current), a symmetric cell's CE is marked not
meaningful, and `t` swaps the plots for the station panel."""

from __future__ import annotations

from pathlib import Path

import pytest

from rig.tui import MonitorApp
from rig.tui.data import COMPACT_COLUMNS, NOT_MEANINGFUL
from rig.tui.demo import DEMO_PROTOCOL, screen_text, simulate_run
from rig.tui.widgets import ChannelTable, StationPanel
from tests.support.monitor import wait_until


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("narrow") / "demo.db"
    simulate_run(db, DEMO_PROTOCOL.format(cycles=2))
    return db


async def test_at_80x24_the_table_fits_and_ended_channels_read_off(demo_db):
    app = MonitorApp(demo_db)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.query_one(ChannelTable).row_count == 2
                         and app.last_snapshot is not None)
        await pilot.pause(0.2)
        lines = screen_text(app).splitlines()
        assert len(lines) <= 24 and all(len(ln) <= 80 for ln in lines)
        header = next(ln for ln in lines if ln.lstrip().startswith("ch  cell"))
        assert header.split() == " ".join(COMPACT_COLUMNS).split()  # every column, whole
        rows = [ln for ln in lines if ln.lstrip().startswith(("0 ", "1 "))]
        assert len(rows) == 2
        for row in rows:
            assert "ended (completed)" in row
            assert " off " in row  # the output is off: not the last sample's current
            assert f" {NOT_MEANINGFUL} " in row  # Na||Na: CE means nothing
        assert not app.query_one(StationPanel).display
        await pilot.press("t")
        await pilot.pause(0.2)
        assert app.query_one(StationPanel).display
        assert "interlock" in screen_text(app)


async def test_a_wide_terminal_keeps_every_column(demo_db):
    app = MonitorApp(demo_db)
    async with app.run_test(size=(140, 40)) as pilot:
        await wait_until(pilot, lambda: app.query_one(ChannelTable).row_count == 2)
        assert not app.query_one(ChannelTable).compact
        assert app.query_one(StationPanel).display


def test_a_half_cycle_with_no_mean_potential_does_not_stop_the_monitor():
    """A step aborted while paused is stored with no mean |E| (NULL); the monitor's poll died
    on it ('cannot read the run: TypeError') and never showed the run had ended."""
    from rig.analysis.cycles import per_cycle
    from rig.tui.data import ChannelSteps

    rows = [{"step": 1, "cycle": 1, "half_cycle": "plate", "charge_C": -4.0,
             "e_mean_abs_V": 0.02, "e_end_V": -0.02, "label": "plate", "kind": "cc"},
            {"step": 2, "cycle": 1, "half_cycle": "strip", "charge_C": 0.0,
             "e_mean_abs_V": None, "e_end_V": None, "label": "strip", "kind": "cc"}]
    cycle = per_cycle(rows)[0]
    assert cycle["eta_plate_V"] == 0.02 and cycle["eta_strip_V"] != cycle["eta_strip_V"]  # NaN
    steps = ChannelSteps()
    steps.add(rows)
    assert steps.last_eta_mV is None and steps.label == "strip"
