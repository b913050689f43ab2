"""`rig validate` refuses what `rig run` would choke on (issue 9, item 6): absurd quantities,
counts, sizes and nesting, timing the instrument cannot do, and free text that is markup.

Each case was accepted by `rig validate` before and then ended every channel with
`instrument_fault`, crashed pyserial, raised RecursionError, exhausted memory or crashed
`rig run`. Now each is one line `<file>: <field>: <what is allowed>` and exit 2.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from drivers.keithley2450 import Keithley2450
from protocols import parse_protocol
from rig.tui import MonitorApp
from rig.tui.widgets import ChannelTable
from rig.validate import check_ranges
from tests.support.monitor import table_text, wait_until

ROOT = Path(__file__).resolve().parents[2]

BASE = """
kind = "plating_stripping"
name = "{name}"
current_density = "{j}"
areal_capacity = "{q}"
cycles = {cycles}
record_interval = "{every}"
"""
CELL = """
[[cells]]
channel = {channel}
cell_id = "{cell_id}"
type = "symmetric"
area = "1.13 cm^2"
electrolyte = "1 M NaPF6 in diglyme"
"""


def protocol(*, name: str = "bounds", j: str = "1 mA/cm^2", q: str = "0.01 mAh/cm^2",
             cycles: int | str = 2, every: str = "10 s", cells: int = 1,
             cell_id: str = "A{k}") -> str:
    return BASE.format(name=name, j=j, q=q, cycles=cycles, every=every) + "".join(
        CELL.format(channel=k, cell_id=cell_id.format(k=k)) for k in range(cells))


def rig(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rig.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


def refused(path: Path, *extra: str) -> str:
    """`rig validate` exits 2 with exactly one line on stderr, no traceback; that line."""
    out = rig("validate", str(path), *extra)
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr[-2000:])
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"rig: {path}: ")
    return lines[0]


@pytest.mark.parametrize(("fields", "field", "allowed"), [
    ({"every": "1 ns"}, "record_interval", "allowed: 1 ms to 1 day"),
    ({"every": "1e300 s"}, "record_interval", "allowed: 1 ms to 1 day"),
    ({"q": "1e300 mAh/cm^2"}, "areal_capacity", "to 100 mAh/cm^2"),
    # a weird but dimensionally valid unit converts; its value is what is refused
    ({"j": "1 mA/furlong^2"}, "current_density", "2.471e-09 mA/cm^2; allowed: 1e-06 mA/cm^2"),
    ({"cycles": "1000000000000000000"}, "cycles", "must be at most 100000"),
    ({"cells": 300}, "cells", "at most 64 [[cells]] tables (got 300)"),
])
def test_absurd_values_are_refused_with_the_field_and_what_is_allowed(tmp_path, fields, field,
                                                                      allowed):
    path = tmp_path / "p.toml"
    path.write_text(protocol(**fields))
    line = refused(path)
    assert f": {field}: " in line and allowed in line, line


def test_a_step_longer_than_any_experiment_is_refused_naming_the_cell_and_step(tmp_path):
    path = tmp_path / "slow.toml"  # 50 mAh/cm^2 at 1 uA/cm^2: a 50 000 h plating step
    path.write_text(protocol(j="0.001 mA/cm^2", q="50 mAh/cm^2"))
    line = refused(path)
    assert 'cells[0] (A0): step "plate" lasts 5e+04 h' in line
    assert "at most 1e+04 h" in line


def test_a_run_longer_than_years_is_refused(tmp_path):
    path = tmp_path / "long.toml"  # 100 000 cycles of 2 x 10 h
    path.write_text(protocol(q="10 mAh/cm^2", cycles=100000))
    assert "runs for up to 2e+06 h; allowed: at most 2e+04 h" in refused(path)


def test_a_record_interval_faster_than_the_instrument_measures_is_refused(tmp_path):
    # 10 ms is a sane interval for an EmStat4 but not for a Keithley 2450 (NPLC 1 + round trip)
    path = tmp_path / "fast.toml"
    path.write_text(protocol(every="10 ms"))
    assert rig("validate", str(path)).returncode == 0
    problems = check_ranges(parse_protocol(path.read_text(), str(path)),
                            {0: ("Keithley 2450", Keithley2450.ranges)}, str(path))
    assert problems == [f'{path}: cells[0] (A0, channel 0): steps "plate", "strip" acquire '
                        "every 10 ms, faster than Keithley 2450 measures (at most every 50 ms); "
                        "raise the record interval"]


def test_rig_run_refuses_a_record_interval_its_keithley_cannot_do_before_switching_on(tmp_path):
    path = tmp_path / "fast.toml"
    path.write_text(protocol(every="10 ms"))
    out = rig("run", str(path), "--keithley", "0", "--db", str(tmp_path / "s.db"))
    assert out.returncode == 2, out.stdout + out.stderr
    assert "faster than Keithley 2450" in out.stderr
    assert not (tmp_path / "s.db").exists()


def test_deeply_nested_inline_tables_are_refused_not_a_recursion_error(tmp_path):
    path = tmp_path / "nest.toml"
    path.write_text("x = " + "{a = " * 400 + "1" + "}" * 400 + "\n" + protocol())
    assert "nest more than 24 deep" in refused(path)


def test_dotted_keys_nesting_deeply_are_refused(tmp_path):
    path = tmp_path / "dotted.toml"
    path.write_text(protocol() + "[failure]\n" + ".".join(["a"] * 400) + " = 1\n")
    assert "nest more than 24 deep" in refused(path)


def _loops(depth: int) -> str:
    inner = '{type = "rest", until = {time = "1 s"}}'
    for _ in range(depth):
        inner = '{type = "loop", count = 2, steps = [' + inner + "]}"
    return inner


SEQUENCE = """
kind = "sequence"
name = "loops"
record = {{every = "10 s"}}
steps = [{steps}]
[[cells]]
channel = 0
cell_id = "A"
type = "symmetric"
area = "1.13 cm^2"
electrolyte = "x"
"""


def test_two_hundred_nested_loops_are_refused_not_a_recursion_error(tmp_path):
    path = tmp_path / "loops.toml"
    path.write_text(SEQUENCE.format(steps=_loops(200)))
    assert "nest more than 24 deep" in refused(path)


def test_loops_nested_deeper_than_eight_are_refused_with_the_path(tmp_path):
    path = tmp_path / "loops9.toml"
    path.write_text(SEQUENCE.format(steps=_loops(9)))
    line = refused(path)
    assert line.endswith(": steps[0]" + ".steps[0]" * 8 + ": loops nest at most 8 deep"), line
    path.write_text(SEQUENCE.format(steps=_loops(8)))
    assert rig("validate", str(path)).returncode == 0


def test_validate_dev_zero_and_a_fifo_are_refused_without_reading_them():
    line = refused(Path("/dev/zero"))
    assert line == "rig: /dev/zero: not a regular file; give a protocol file (TOML)"


def test_a_file_larger_than_a_megabyte_is_refused_unread(tmp_path):
    path = tmp_path / "big.toml"
    path.write_text(protocol() + "# padding\n" * 200_000)
    assert "larger than 1000 kB" in refused(path)


def test_control_characters_in_free_text_are_refused(tmp_path):
    path = tmp_path / "esc.toml"
    path.write_text(protocol(cell_id="A\\u001b[2J{k}"))
    line = refused(path)
    assert ": cells[0].cell_id: contains a control character (U+001B)" in line


def test_an_overlong_name_is_refused(tmp_path):
    path = tmp_path / "long_name.toml"
    path.write_text(protocol(name="n" * 500))
    assert ": name: must be at most 200 characters (got 500)" in refused(path)


MARKUP = "x [/link] [bold]"


def test_rich_markup_in_name_and_cell_id_runs_and_is_shown_literally(tmp_path):
    path = tmp_path / "markup.toml"
    path.write_text(protocol(name=MARKUP, cell_id=MARKUP + "{k}"))
    assert rig("validate", str(path)).returncode == 0
    db = tmp_path / "m.db"
    out = rig("run", str(path), "--db", str(db))
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"run {out.stdout.split()[1]} {MARKUP} (plating_stripping)" in out.stdout
    assert f"ch0 {MARKUP}0: cycle 2/2" in out.stdout
    async def monitor() -> list[list[str]]:
        app = MonitorApp(db)
        async with app.run_test(size=(160, 48)) as pilot:
            await wait_until(pilot, lambda: app.query_one(ChannelTable).row_count == 1)
            return table_text(app)

    rows = asyncio.run(monitor())
    assert rows[0][1] == MARKUP + "0"
