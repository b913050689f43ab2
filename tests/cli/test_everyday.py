"""Everyday use from a plain install: built-in protocols by name, `rig protocols`, `--version`,
`python -m rig`, `rig runs` (newest first, wall start, clock-honest durations) and the console's
progress (moves within a cycle, one whole line per cycle in a pipe)."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

from protocols import load_protocol
from protocols.summary import plan_totals
from rig import __version__
from rig.console import RunConsole
from tests.support.protocol_text import two_cells

ROOT = Path(__file__).resolve().parents[2]


def rig(*args: str, cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess:
    env_path = {"PYTHONPATH": str(ROOT)}
    import os

    return subprocess.run([sys.executable, "-m", "rig", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env={**os.environ, **env_path})


def test_version_and_python_dash_m_rig():
    out = rig("--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"narig {__version__}"


def test_a_builtin_protocol_is_found_by_name_from_any_directory(tmp_path):
    out = rig("validate", "plating_stripping", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("plating_stripping: Na‖Na plating–stripping")


def test_a_file_in_the_working_directory_wins_over_the_builtin_of_that_name(tmp_path):
    (tmp_path / "plating_stripping").write_text(two_cells("my own copy"), encoding="utf-8")
    out = rig("validate", "plating_stripping", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "my own copy" in out.stdout.splitlines()[0]


def test_an_unknown_name_is_one_clear_line(tmp_path):
    out = rig("validate", "plating_strippin", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().startswith("rig: plating_strippin: cannot read the file")
    assert "Traceback" not in out.stderr


def test_rig_protocols_lists_copies_and_never_overwrites(tmp_path):
    listed = rig("protocols", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    names = {line.split()[0] for line in listed.stdout.splitlines()[:6]}
    assert names == {"coulombic_efficiency", "critical_current_density", "gas_evolution",
                     "ocv_impedance", "plating_stripping", "sequence"}
    copied = rig("protocols", "copy", "gas_evolution", cwd=tmp_path)
    assert copied.returncode == 0, copied.stderr
    target = tmp_path / "gas_evolution.toml"
    assert load_protocol(target).plan.kind == "gas_evolution"
    target.write_text(target.read_text() + "\n# my edit\n")
    again = rig("protocols", "copy", "gas_evolution", str(tmp_path), cwd=tmp_path)
    assert again.returncode == 2
    assert "not overwriting" in again.stderr
    assert target.read_text().endswith("# my edit\n")
    shown = rig("protocols", "show", "sequence", cwd=tmp_path)
    assert shown.stdout.startswith("# An explicit sequence of steps")


def test_rig_runs_newest_first_with_wall_start_and_simulated_duration(tmp_path):
    db = tmp_path / "runs.db"
    name = "a protocol name well beyond twenty-eight characters, kept whole"
    protocol = tmp_path / "p.toml"
    protocol.write_text(two_cells(name, q="0.05 mAh/cm^2", cycles=1), encoding="utf-8")
    before = time.time()
    for clock in ("virtual", "x3000"):  # x3000: the run's own clock runs far ahead of the wall
        done = rig("run", str(protocol), "--db", str(db), "--clock", clock)
        assert done.returncode == 0, done.stderr
    after = time.time()
    listed = rig("runs", "--db", str(db))
    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.splitlines()[1:]
    assert len(rows) == 2 and all(row.endswith(name) for row in rows)
    assert "x3000" not in rows[0] and " sim " in rows[0] and " sim " in rows[1]
    ids = [row.split()[0] for row in rows]
    assert ids == sorted(ids, reverse=True)  # newest first
    for row in rows:  # started: local wall time, never in the future
        started = time.mktime(time.strptime(" ".join(row.split()[2:4]), "%Y-%m-%d %H:%M:%S"))
        assert before - 1 <= started <= after + 1, row


def test_progress_moves_within_a_cycle_and_gives_wall_time_left():
    plan = load_protocol_text(two_cells("progress", cycles=2))
    console = RunConsole(out=io.StringIO())
    console.live = True  # as on a terminal, without needing one
    console.run_started("r1", plan)
    assert console.progress is not None
    console.channel_started(0, plan.channels[0].cell)
    planned = plan_totals(plan)[0][0]
    console.sample(0, 1000.0, 0.02, -1e-3)
    console.sample(0, 1000.0 + planned / 4, 0.02, -1e-3)  # within the first cycle
    task = console.progress.tasks[0]
    console.progress.stop()
    assert abs(task.completed - 0.25) < 1e-9
    assert task.fields["cycle"] == 0
    assert task.fields["left"] != "-"  # a wall-time estimate once time has passed


def test_in_a_pipe_one_whole_line_per_cycle_and_no_ce_for_symmetric_cells():
    plan = load_protocol_text(two_cells("pipe", cycles=3, cells=(
        ("a-cell-id-[bold]-long-with-markup-" + "x" * 28, "1 M NaPF6 in diglyme"),)))
    out = io.StringIO()
    console = RunConsole(out=out)
    console.run_started("r2", plan)
    console.channel_started(0, plan.channels[0].cell)
    for cycle in (1, 2, 3):
        console.sample(0, 3600.0 * cycle, 0.02, 1e-3)
        console.cycle_done(0, cycle, {"eta_plate_V": 0.02, "eta_strip_V": 0.022, "ce": 1.0})
    lines = out.getvalue().splitlines()
    cycle_lines = [ln for ln in lines if ": cycle " in ln]
    assert len(cycle_lines) == 3  # one per cycle, none wrapped onto a second line
    assert all("[bold]" in ln and "CE" not in ln for ln in cycle_lines)


def load_protocol_text(text: str):
    from protocols import parse_protocol

    return parse_protocol(text, "t.toml")
