"""The `rig` command end to end, as a subprocess, the way a user or a script calls it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SMALL = """
kind = "plating_stripping"
name = "cli test"
current_density = "1 mA/cm^2"
areal_capacity = "0.5 mAh/cm^2"
cycles = 3
record_interval = "10 s"

[[cells]]
channel = 0
cell_id = "G1"
type = "symmetric"
area = "1.13 cm^2"
electrolyte = "1 M NaPF6 in diglyme"

[[cells]]
channel = 1
cell_id = "C1"
type = "symmetric"
area = "1.13 cm^2"
electrolyte = "1 M NaClO4 in EC:DEC"
"""


def rig(*args: str, db: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "NARIG_DB": str(db)}
    return subprocess.run([sys.executable, "-m", "rig.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env=env)


def test_run_then_runs_then_show_text_and_json(tmp_path):
    protocol = tmp_path / "small.toml"
    protocol.write_text(SMALL)
    db = tmp_path / "store.db"
    run = rig("run", str(protocol), db=db)
    assert run.returncode == 0, run.stderr
    assert "run " in run.stdout and "completed" in run.stdout.splitlines()[-2]
    run_id = run.stdout.split()[1].rstrip(":")

    runs = rig("runs", db=db)
    assert runs.returncode == 0 and run_id in runs.stdout and "completed" in runs.stdout

    show = rig("show", run_id, db=db)
    assert show.returncode == 0, show.stderr
    assert "G1" in show.stdout and "C1" in show.stdout and "CE %" in show.stdout

    data = json.loads(rig("show", run_id[:15], "--json", db=db).stdout)
    assert data["run"] == run_id and data["status"] == "completed"
    g1, c1 = data["channels"]
    assert [c["cycle"] for c in g1["cycles"]] == [1, 2, 3]
    for c in g1["cycles"] + c1["cycles"]:
        assert abs(c["plated_mAh"] - 0.565) < 0.006 and abs(c["stripped_mAh"] - 0.565) < 0.006
    assert all(5 < c["eta_plate_mV"] < 50 for c in g1["cycles"])       # glyme: tens of mV
    assert all(c["eta_plate_mV"] > 80 for c in c1["cycles"])           # carbonate: higher
    assert g1["end_reason"] == "completed"


def test_bad_protocol_file_exits_2_with_one_clear_message(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(SMALL.replace('"1 mA/cm^2"', '"5 V"'))
    out = rig("run", str(bad), db=tmp_path / "s.db")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert f"{bad}: current_density:" in out.stderr and "current density" in out.stderr
    assert not (tmp_path / "s.db").exists()  # nothing ran


def test_missing_protocol_file_and_unknown_run_exit_2(tmp_path):
    out = rig("run", str(tmp_path / "nope.toml"), db=tmp_path / "s.db")
    assert out.returncode == 2 and "nope.toml" in out.stderr and "Traceback" not in out.stderr
    protocol = tmp_path / "small.toml"
    protocol.write_text(SMALL.replace("cycles = 3", "cycles = 1"))
    assert rig("run", str(protocol), db=tmp_path / "s.db").returncode == 0
    out = rig("show", "19990101", db=tmp_path / "s.db")
    assert out.returncode == 2 and "no run matches" in out.stderr


def test_validate_prints_the_plan_and_its_totals(tmp_path):
    out = rig("validate", "protocols/plating_stripping.toml", db=tmp_path / "s.db")
    assert out.returncode == 0, out.stderr
    assert "400 h" in out.stdout and "NaNa-C2" in out.stdout


def test_validate_schema_is_json_schema_for_editors(tmp_path):
    out = rig("validate", "--schema", db=tmp_path / "s.db")
    assert out.returncode == 0
    schema = json.loads(out.stdout)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert "plating_stripping" in out.stdout


def test_currents_beyond_the_instrument_range_are_refused_before_anything_runs(tmp_path):
    big = tmp_path / "big.toml"
    big.write_text(SMALL.replace('"1 mA/cm^2"', '"50 mA/cm^2"'))
    for cmd in (("validate", str(big)), ("run", str(big))):
        out = rig(*cmd, db=tmp_path / "s.db")
        assert out.returncode == 2 and "Traceback" not in out.stderr
        assert f"{big}: cells[0] (G1, channel 0): current 56.5 mA" in out.stderr
        assert "exceeds the 30 mA range" in out.stderr
    assert not (tmp_path / "s.db").exists()


def test_validate_against_a_station_file_uses_each_channels_instrument(tmp_path):
    station = tmp_path / "station.toml"
    station.write_text("""
name = "bench"
[[instruments]]
name = "es4-a"
driver = "emstat4"
port = "/dev/ttyUSB0"
[[instruments]]
name = "smu"
driver = "keithley2450"
resource = "TCPIP0::192.0.2.1::5025::SOCKET"
[[channels]]
channel = 0
instrument = "smu"
[[channels]]
channel = 1
instrument = "es4-a"
""")
    big = tmp_path / "big.toml"
    big.write_text(SMALL.replace('"1 mA/cm^2"', '"50 mA/cm^2"'))
    out = rig("validate", str(big), "--station", str(station), db=tmp_path / "s.db")
    assert out.returncode == 2
    assert "cells[0]" not in out.stderr  # the 2450 sources 56.5 mA
    assert "cells[1] (C1, channel 1): current 56.5 mA" in out.stderr and "es4-a" in out.stderr
