"""`rig export`: Battery Data Format CSV and Parquet, and CSV for Origin/Excel, read back equal
to the store; the format's exact column names, units and file names; EIS rows in the
impedance columns; the sidecar's cell, protocol, station, gas and glovebox series."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from rig.cli import main
from rig.data import open_store
from rig.export.bdf import COLUMNS, REQUIRED
from rig.export.command import export_run
from rig.store import get_channels, get_eis, get_samples, get_sensors, open_reader, resolve_run
from tests.support.store_runs import make_store

ROOT = Path(__file__).resolve().parents[2]
# The Battery Data Format's names (domain.md): required, recommended, optional
BDF_REQUIRED = ["Test Time / s", "Voltage / V", "Current / A"]
BDF_KNOWN = BDF_REQUIRED + [
    "Unix Time / s", "Cycle Count / 1", "Step Count / 1", "Ambient Temperature / degC",
    "Step Type", "Step Time / s", "Charging Capacity / Ah", "Discharging Capacity / Ah",
    "Frequency / Hz", "Real Impedance / ohm", "Imaginary Impedance / ohm",
    "Ambient Pressure / Pa"]
NAME = re.compile(r"^[A-Za-z0-9.\-]+__[A-Za-z0-9.\-]+__\d{8}_\d{3,}$")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    db = tmp_path_factory.mktemp("export") / "narig.db"
    return db, make_store(db)


def rig(*args: str, db: Path) -> subprocess.CompletedProcess:
    """`rig ARGS --db DB` in this process (rig.cli.main, as the console script calls it)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([*args, "--db", str(db)])
        except SystemExit as exc:  # argparse refusing an argument
            code = int(exc.code or 0)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def rig_process(*args: str, db: Path) -> subprocess.CompletedProcess:
    """`python -m rig.cli ARGS` as a separate process, the way a user or a script runs it."""
    return subprocess.run([sys.executable, "-m", "rig.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=120, env={**os.environ, "NARIG_DB": str(db)})


def export(db: Path, run_id: str, fmt: str, out: Path, *extra: str) -> list[Path]:
    done = rig("export", run_id, "--format", fmt, "--out", str(out), *extra, db=db)
    assert done.returncode == 0, done.stderr
    return [Path(line.split("  (")[0]) for line in done.stdout.splitlines()]


def store_rows(db: Path, run_id: str, channel: int) -> tuple[dict, list[tuple], list[tuple]]:
    with open_reader(db) as conn:
        run = resolve_run(conn, run_id)
        return run, get_samples(conn, run["key"], channel), get_eis(conn, run["key"], channel)


def test_bdf_csv_has_the_formats_names_and_round_trips_to_the_store(store, tmp_path):
    db, ids = store
    files = export(db, ids["cycling"], "bdf", tmp_path)
    data = sorted(p for p in files if p.name.endswith(".bdf.csv"))
    assert [p.name.split("__")[1] for p in data] == ["G1", "C1"]
    for path in data:
        stem = path.name.removesuffix(".bdf.csv")
        assert NAME.match(stem), stem
        assert (tmp_path / f"{stem}.metadata.json").is_file()
        df = pd.read_csv(path)
        assert list(df.columns[:4]) == ["Test Time / s", "Unix Time / s", "Voltage / V",
                                        "Current / A"]
        assert set(BDF_REQUIRED) <= set(df.columns) and set(df.columns) <= set(BDF_KNOWN)
        assert all(re.fullmatch(r"[^/]+( / [^/ ]+)?", c) for c in df.columns)
        channel = 0 if "__G1__" in path.name else 1
        run, samples, _ = store_rows(db, ids["cycling"], channel)
        assert len(df) == len(samples)
        s = np.array(samples, dtype=float)
        assert np.array_equal(df["Unix Time / s"].to_numpy(), s[:, 0])
        assert np.array_equal(df["Voltage / V"].to_numpy(), s[:, 3])
        assert np.array_equal(df["Current / A"].to_numpy(), s[:, 4])  # sign as stored
        assert np.array_equal(df["Step Count / 1"].to_numpy(), s[:, 1].astype(int))
        assert np.array_equal(df["Cycle Count / 1"].to_numpy(), s[:, 2].astype(int))
        assert np.allclose(df["Test Time / s"], s[:, 0] - run["started_at"], rtol=0, atol=1e-6)
        assert df["Cycle Count / 1"].max() == 2


def test_capacities_count_each_cycles_charge_and_discharge_in_ah(store, tmp_path):
    db, ids = store
    files = export(db, ids["cycling"], "bdf", tmp_path, "--channel", "0")
    df = pd.read_csv(next(p for p in files if p.name.endswith(".bdf.csv")))
    q_ah = 0.5 * 1.13 / 1000  # 0.5 mAh/cm^2 on 1.13 cm^2
    for _, cyc in df.groupby("Cycle Count / 1"):
        assert cyc["Discharging Capacity / Ah"].max() == pytest.approx(q_ah, rel=0.01)
        assert cyc["Charging Capacity / Ah"].max() == pytest.approx(q_ah, rel=0.01)
        assert cyc["Charging Capacity / Ah"].is_monotonic_increasing
        plating = cyc[cyc["Current / A"] < 0]
        assert (plating["Charging Capacity / Ah"] == 0).all()  # plating comes first
    assert (df["Step Time / s"] >= 0).all() and (df["Step Time / s"] <= 3600 + 1e-6).all()
    assert set(df["Step Type"]) == {"constant_current"}


def test_parquet_is_typed_round_trips_and_carries_the_runs_metadata(store, tmp_path):
    db, ids = store
    files = export(db, ids["cycling"], "parquet", tmp_path, "--channel", "1")
    path = next(p for p in files if p.name.endswith(".bdf.parquet"))
    table = pq.read_table(path)
    types = {f.name: str(f.type) for f in table.schema}
    assert types["Voltage / V"] == "double" and types["Cycle Count / 1"] == "int64"
    assert types["Step Count / 1"] == "int64" and types["Step Type"] == "string"
    meta = table.schema.metadata
    run_meta = json.loads(meta[b"narig"])
    assert run_meta["cell"]["cell_id"] == "C1" and run_meta["run"]["id"] == ids["cycling"]
    assert "plating_stripping" in meta[b"bdf:protocol"].decode()
    assert json.loads(meta[b"bdf:software"])["exported_with"]
    assert b"positive current charges" in meta[b"bdf:sign_convention"]
    _, samples, _ = store_rows(db, ids["cycling"], 1)
    df = table.to_pandas()
    s = np.array(samples, dtype=float)
    for col, k in (("Unix Time / s", 0), ("Voltage / V", 3), ("Current / A", 4)):
        assert np.array_equal(df[col].to_numpy(), s[:, k])
    with open_store(db) as st:
        assert np.array_equal(df["Voltage / V"].to_numpy(), st.run(ids["cycling"]).samples(1)["e"])


def test_an_eis_export_carries_its_impedance_columns_in_time_order(store, tmp_path):
    db, ids = store
    for fmt, suffix in (("bdf", ".bdf.csv"), ("parquet", ".bdf.parquet")):
        files = export(db, ids["eis"], fmt, tmp_path / fmt)
        path = next(p for p in files if p.name.endswith(suffix))
        df = pd.read_csv(path) if fmt == "bdf" else pd.read_parquet(path)
        _, samples, eis = store_rows(db, ids["eis"], 0)
        assert len(df) == len(samples) + len(eis)
        z = df[df["Frequency / Hz"].notna()]
        assert len(z) == len(eis) == 4 * 39
        assert np.array_equal(z["Frequency / Hz"].to_numpy(), [r[2] for r in eis])
        assert np.array_equal(z["Real Impedance / ohm"].to_numpy(), [r[3] for r in eis])
        assert np.array_equal(z["Imaginary Impedance / ohm"].to_numpy(), [r[4] for r in eis])
        assert (z[z["Frequency / Hz"] > 1e3]["Imaginary Impedance / ohm"] < 0).all()
        assert z["Voltage / V"].isna().all() and set(z["Step Type"]) == {"eis"}
        assert df["Unix Time / s"].is_monotonic_increasing
        assert df[df["Frequency / Hz"].isna()]["Voltage / V"].notna().all()


def test_the_sidecar_has_cell_protocol_station_gas_and_glovebox_series(store, tmp_path):
    db, ids = store
    files = export(db, ids["gas"], "bdf", tmp_path)
    meta = json.loads(next(p for p in files if p.name.endswith(".metadata.json")).read_text())
    assert meta["cell"]["cell_id"] == "GAS-C1" and meta["cell"]["headspace_mL"] == 5.0
    assert 'kind = "gas_evolution"' in meta["protocol"]["text"]
    assert meta["software"]["recorded_with"] and meta["station"]["simulated"] is True
    assert meta["outcome"]["outcome"] == "gas_per_cycle"
    custom = meta["custom_measurements"]
    with open_reader(db) as conn:
        run = resolve_run(conn, ids["gas"])
        pressure = get_sensors(conn, run["key"], quantity="pressure_Pa")
        o2 = get_sensors(conn, run["key"], quantity="o2_ppm")
    assert custom["gas_pressure"]["unit"] == "Pa"
    assert custom["gas_pressure"]["value"] == [r[3] for r in pressure]
    assert custom["gas_pressure"]["t"] == [r[0] for r in pressure]
    assert custom["gas_temperature"]["unit"] == "degC"
    assert 15 < min(custom["gas_temperature"]["value"]) < 35
    assert custom["glovebox_o2"]["value"] == [r[3] for r in o2]
    assert custom["glovebox_h2o"]["unit"] == "ppm"
    assert set(meta["columns"]) >= set(BDF_REQUIRED)
    assert meta["columns"]["Current / A"]["unit"] == "A"
    assert [s["label"] for s in meta["steps"]][:2] == ["baseline", "plate"]
    df = pd.read_csv(next(p for p in files if p.name.endswith(".bdf.csv")))
    # the holder's gauge is the ambient temperature of this cell
    assert df["Ambient Temperature / degC"].between(15, 35).all()


def test_origin_csv_has_a_units_row_and_cycles_and_sensors_tables(store, tmp_path):
    db, ids = store
    files = export(db, ids["ce"], "csv", tmp_path)
    data = next(p for p in files if p.suffix == ".csv" and p.name.count(".") == 1)
    names, units = data.read_text().splitlines()[:2]
    assert names.split(",")[:4] == ["Test Time", "Unix Time", "Voltage", "Current"]
    assert units.split(",")[:4] == ["s", "s", "V", "A"]
    df = pd.read_csv(data, skiprows=[1])
    _, samples, _ = store_rows(db, ids["ce"], 0)
    assert np.array_equal(df["Voltage"].to_numpy(), np.array(samples)[:, 3])
    cycles = pd.read_csv(next(p for p in files if p.name.endswith(".cycles.csv")), skiprows=[1])
    with open_store(db) as st:
        expect = st.run(ids["ce"]).cycles(0)
    assert cycles["cycle"].tolist() == expect["cycle"].tolist()
    assert np.allclose(cycles["plated_C"], expect["plated_C"], rtol=1e-12)
    assert cycles["ce"].notna().all()  # a Na||Cu cell: CE is a measurement
    sensors = pd.read_csv(next(p for p in files if p.name.endswith(".sensors.csv")),
                          skiprows=[1])
    assert {"o2_ppm", "h2o_ppm"} <= set(sensors["quantity"])


def test_a_symmetric_cells_origin_cycles_leave_ce_empty(store, tmp_path):
    db, ids = store
    files = export(db, ids["cycling"], "csv", tmp_path, "--channel", "0")
    cycles = pd.read_csv(next(p for p in files if p.name.endswith(".cycles.csv")), skiprows=[1])
    assert cycles["ce"].isna().all() and cycles["plated_C"].notna().all()


def test_bad_run_channel_or_out_is_one_clear_line(store, tmp_path):
    db, ids = store
    out = rig_process("export", ids["gas"], "--out", str(tmp_path), "--channel", "9", db=db)
    assert out.returncode == 2 and "has no channel 9" in out.stderr
    assert "Traceback" not in out.stderr
    out = rig("export", "19990101", "--out", str(tmp_path), db=db)
    assert out.returncode == 2 and "no run matches" in out.stderr
    f = tmp_path / "file"
    f.write_text("x")
    out = rig("export", ids["gas"], "--out", str(f), db=db)
    assert out.returncode == 2 and "not a directory" in out.stderr
    out = rig("export", ids["gas"], "--format", "xlsx", "--out", str(tmp_path), db=db)
    assert out.returncode == 2 and "invalid choice" in out.stderr


def test_chunked_export_equals_one_chunk_and_leaves_no_partial_files(store, tmp_path):
    db, ids = store
    with open_reader(db) as conn:
        run = resolve_run(conn, ids["eis"])
        small = export_run(conn, run, tmp_path / "small", "bdf", chunk_rows=7)
        big = export_run(conn, run, tmp_path / "big", "bdf", chunk_rows=10**6)
    a = next(p for p, _ in small if p.name.endswith(".bdf.csv"))
    b = next(p for p, _ in big if p.name.endswith(".bdf.csv"))
    assert a.read_bytes() == b.read_bytes()
    assert not [p for p in (tmp_path / "small").iterdir() if p.name.endswith(".part")]


def test_the_column_list_is_the_formats(store):
    assert set(COLUMNS) <= set(BDF_KNOWN) and set(REQUIRED) == set(BDF_REQUIRED)
    db, ids = store
    with open_reader(db) as conn:
        run = resolve_run(conn, ids["cycling"])
        assert len(get_channels(conn, run["key"])) == 2


def test_a_step_without_its_row_yet_still_exports_its_samples(store, tmp_path):
    """A live (or crashed) run: the running step has samples but no steps row yet."""
    import shutil
    import sqlite3

    db, ids = store
    live = tmp_path / "live.db"
    shutil.copy(db, live)
    conn = sqlite3.connect(live)
    (key,) = conn.execute("SELECT key FROM runs WHERE id = ?", (ids["cycling"],)).fetchone()
    (last,) = conn.execute("SELECT max(step) FROM steps WHERE run_key = ? AND channel = 0",
                           (key,)).fetchone()
    conn.execute("DELETE FROM steps WHERE run_key = ? AND channel = 0 AND step = ?", (key, last))
    conn.commit()
    conn.close()
    files = export(live, ids["cycling"], "bdf", tmp_path / "out", "--channel", "0")
    df = pd.read_csv(next(p for p in files if p.name.endswith(".bdf.csv")))
    _, samples, _ = store_rows(live, ids["cycling"], 0)
    assert len(df) == len(samples)
    running = df[df["Step Count / 1"] == last]
    assert set(running["Step Type"]) == {"unknown"}
    assert running["Step Time / s"].iloc[0] == 0
    assert running["Step Time / s"].is_monotonic_increasing
    # its cycle's plating (a completed step) is still counted before it
    assert running["Discharging Capacity / Ah"].min() == pytest.approx(0.5 * 1.13e-3, rel=0.01)
    assert running["Charging Capacity / Ah"].max() == pytest.approx(0.5 * 1.13e-3, rel=0.02)
