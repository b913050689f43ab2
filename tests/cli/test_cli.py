"""The `rig` command end to end, as a subprocess, the way a user or a script calls it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.protocol_text import two_cells

ROOT = Path(__file__).resolve().parents[2]

SMALL = two_cells("cli test")


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


BENCH_STATION = """
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
"""


def test_validate_against_a_station_file_uses_each_channels_instrument(tmp_path):
    station = tmp_path / "station.toml"
    station.write_text(BENCH_STATION)
    big = tmp_path / "big.toml"
    big.write_text(SMALL.replace('"1 mA/cm^2"', '"50 mA/cm^2"'))
    out = rig("validate", str(big), "--station", str(station), db=tmp_path / "s.db")
    assert out.returncode == 2
    assert "cells[0]" not in out.stderr  # the 2450 sources 56.5 mA
    assert "cells[1] (C1, channel 1): current 56.5 mA" in out.stderr and "es4-a" in out.stderr


def test_validate_against_a_station_refuses_steps_its_instruments_cannot_run(tmp_path):
    station = tmp_path / "station.toml"
    station.write_text(BENCH_STATION)  # channel 0: a Keithley 2450, channel 1: an EmStat4
    protocol = tmp_path / "seq.toml"
    protocol.write_text(SEQUENCE_POTENTIAL_EIS)
    out = rig("validate", str(protocol), "--station", str(station), db=tmp_path / "s.db")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    g1 = f"{protocol}: cells[0] (G1, channel 0): "
    assert 'potential step "hold"' not in out.stderr  # the 2450 runs potential steps
    assert (g1 + 'EIS steps "eis_before", "eis_high" cannot run on Keithley 2450 smu') \
        in out.stderr
    assert "only constant-current steps, potential steps, open-circuit rests" in out.stderr
    c1 = f"{protocol}: cells[1] (C1, channel 1): "
    assert (c1 + 'EIS step "eis_high" sweeps up to 500 kHz, above the 200 kHz maximum of '
            "EmStat4 es4-a") in out.stderr
    assert len(out.stderr.strip().splitlines()) == 2  # the EmStat runs the rest
    # the built-in simulated station (EmStat4s) refuses the 500 kHz sweep too, in rig run
    out = rig("run", str(protocol), db=tmp_path / "s.db")
    assert out.returncode == 2 and "above the 200 kHz maximum" in out.stderr
    assert not (tmp_path / "s.db").exists()


SEQUENCE_POTENTIAL_EIS = """
kind = "sequence"
name = "potential and EIS"
[record]
every = "10 s"
[safety]
max_current = "5 mA"
[[steps]]
type = "eis"
label = "eis_before"
f_start = "100 kHz"
[[steps]]
type = "potential"
label = "hold"
potential = "0 V"
until = {time = "1 min"}
[[steps]]
type = "eis"
label = "eis_high"
f_start = "500 kHz"
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


def _show_result(db: Path, protocol: Path) -> str:
    run = rig("run", str(protocol), db=db)
    assert run.returncode == 0, run.stderr
    show = rig("show", "latest", db=db)
    assert show.returncode == 0 and "Traceback" not in show.stderr, show.stderr
    return next(line for line in show.stdout.splitlines() if "result:" in line)


def test_show_reads_a_one_cycle_gas_run(tmp_path):
    gas = tmp_path / "gas.toml"
    # the cycle (10 min rest, 2 x 15.3 min) ends just after a sensor poll (every 10 simulated
    # min), so cycle 1 lies inside the pressure record
    gas.write_text("""
kind = "gas_evolution"
name = "gas, one cycle"
rest_before = "10 min"
current_density = "1 mA/cm^2"
areal_capacity = "0.255 mAh/cm^2"
cycles = 1
record_interval = "10 s"
[[cells]]
channel = 0
cell_id = "GAS1"
type = "symmetric"
area = "1.13 cm^2"
electrolyte = "1 M NaPF6 in diglyme"
headspace = "5 mL"
""")
    result = _show_result(tmp_path / "s.db", gas)
    assert "gas: cycle 1 " in result and " umol; no later cycles; total " in result, result


def test_show_reads_a_one_sweep_impedance_run(tmp_path):
    eis = tmp_path / "eis.toml"
    eis.write_text("""
kind = "ocv_impedance"
name = "one sweep"
interval = "10 min"
sweeps = 1
record_interval = "1 min"
[eis]
f_start = "10 kHz"
f_end = "1 Hz"
points_per_decade = 4
[[cells]]
channel = 0
cell_id = "EIS1"
type = "symmetric"
area = "1.13 cm^2"
electrolyte = "1 M NaPF6 in diglyme"
""")
    result = _show_result(tmp_path / "s.db", eis)
    assert "R_SEI " in result and " ohm cm^2 at the end (1 sweep fitted: no growth rate)" \
        in result, result


def test_show_says_a_ccd_run_failed_in_its_first_rung_in_words(tmp_path):
    ccd = tmp_path / "ccd.toml"
    # a hard-short threshold of 1 V: the first rung's ~0.13 V reads as a short
    ccd.write_text("""
kind = "critical_current_density"
name = "first rung fails"
current_densities = ["0.5 mA/cm^2", "1 mA/cm^2"]
areal_capacity = "0.1 mAh/cm^2"
cycles_per_step = 2
record_interval = "10 s"
[failure]
short_below = "1 V"
short_drop_window = "60 s"
[[cells]]
channel = 0
cell_id = "CCD1"
type = "symmetric"
area = "1.13 cm^2"
electrolyte = "1 M NaClO4 in EC:DEC"
""")
    result = _show_result(tmp_path / "s.db", ccd)
    assert ("result: no stable current density: short_hard in the first rung at 0.5 mA/cm^2 "
            "in cycle 1") in result, result
    assert "{" not in result


def test_a_full_cell_on_the_simulated_station_is_one_clear_message(tmp_path):
    full = tmp_path / "full.toml"
    full.write_text(SMALL.replace('cell_id = "C1"\ntype = "symmetric"',
                                  'cell_id = "C1"\ntype = "full"'))
    assert rig("validate", str(full), db=tmp_path / "s.db").returncode == 0
    out = rig("run", str(full), db=tmp_path / "s.db")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip() == (
        "rig: channel 1 (C1): the simulated station cannot model this cell: cell_type 'full' "
        "is not modelled yet; use symmetric, na_cu or na_al")
    assert not (tmp_path / "s.db").exists()


def test_validate_schema_into_a_pipe_closed_after_one_line_exits_quietly(tmp_path):
    import fcntl

    read_end, write_end = os.pipe()
    if hasattr(fcntl, "F_SETPIPE_SZ"):  # a small pipe: the schema cannot fit before we close
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    proc = subprocess.Popen([sys.executable, "-m", "rig.cli", "validate", "--schema"],
                            stdout=write_end, stderr=subprocess.PIPE, cwd=ROOT,
                            env={**os.environ, "NARIG_DB": str(tmp_path / "s.db")})
    os.close(write_end)
    with os.fdopen(read_end, "rb") as out:
        assert out.readline() == b"{\n"  # `| head -1`: one line, then the reader is gone
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=60) in (0, 1)
    assert stderr == "", stderr


def test_a_channel_on_the_simulated_keithley_runs_like_the_emstat_ones(tmp_path):
    protocol = tmp_path / "small.toml"
    protocol.write_text(two_cells("keithley", q="0.2 mAh/cm^2", cycles=2))
    db = tmp_path / "store.db"
    run = rig("run", str(protocol), "--keithley", "1", db=db)
    assert run.returncode == 0, run.stdout + run.stderr
    data = json.loads(rig("show", "latest", "--json", db=db).stdout)
    emstat, keithley = data["channels"]
    assert "EmStat4" in emstat["instrument"] and "Keithley" in keithley["instrument"]
    for ch in (emstat, keithley):
        assert [c["cycle"] for c in ch["cycles"]] == [1, 2]
        for c in ch["cycles"]:
            assert abs(c["plated_mAh"] - 0.226) < 0.003 and abs(c["stripped_mAh"] - 0.226) < 0.003
    assert all(c["eta_plate_mV"] > 80 for c in keithley["cycles"])  # the carbonate cell
