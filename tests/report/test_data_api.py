"""The notebook API (rig.data): runs, samples, cycles, steps, EIS, sensors and events as
DataFrames in SI units with the cell's metadata, and the same numbers `rig show --json` prints."""

from __future__ import annotations

import doctest
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import rig.data
from rig.data import SAMPLE_COLUMNS, open_store
from rig.store import AmbiguousRun, RunNotFound, get_samples, open_reader
from tests.support.protocol_text import two_cells
from tests.support.store_runs import make_store, run_protocol

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    db = tmp_path_factory.mktemp("data") / "narig.db"
    return db, make_store(db)


def show_json(db: Path, run: str, *extra: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "rig.cli", "show", run, "--json", *extra],
                         capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={**os.environ, "NARIG_DB": str(db)})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_the_module_docstring_examples_run(tmp_path):
    db = tmp_path / "doc.db"
    run_protocol(db, two_cells("doc", cycles=2), "doc")
    result = doctest.testmod(rig.data, extraglobs={"db": db}, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 8 and result.failed == 0


def test_runs_are_picked_by_id_prefix_or_latest(store):
    db, ids = store
    with open_store(db) as s:
        assert s.runs()["id"].tolist() == [ids["eis"], ids["gas"], ids["ce"], ids["cycling"]]
        assert s.run("latest").id == ids["cycling"]
        assert s.run(ids["gas"]).id == ids["gas"]
        assert s.run(ids["ce"][:-1]).id == ids["ce"]  # a unique prefix
        with pytest.raises(AmbiguousRun):
            s.run(ids["ce"][:8])
        with pytest.raises(RunNotFound):
            s.run("19990101")


def test_samples_are_si_frames_with_the_cell_and_equal_the_store(store):
    db, ids = store
    with open_store(db) as s:
        run = s.run(ids["cycling"])
        df = run.samples(1)
        assert list(df.columns) == SAMPLE_COLUMNS
        assert df.attrs["cell"]["cell_id"] == "C1" and df.attrs["cell"]["area_cm2"] == 1.13
        assert df.attrs["run"] == ids["cycling"]
        with open_reader(db) as conn:
            raw = get_samples(conn, run.key, 1)
        assert len(df) == len(raw) == run.n_samples(1)
        assert list(df[["t", "step", "cycle", "e", "i", "q"]].itertuples(index=False, name=None)) \
            == [tuple(r) for r in raw]
        assert (df["test_time_s"] == df["t"] - run.started_at).all()
        # plating is negative current: about -1.13 mA in the plating half-cycles
        plating = df[(df["i"] < 0)]
        assert plating["i"].median() == pytest.approx(-1.13e-3, rel=0.01)
        both = run.samples()
        assert set(both["channel"]) == {0, 1} and len(both) == run.n_samples()


def test_samples_read_by_window_thinned_or_in_chunks(store):
    db, ids = store
    with open_store(db) as s:
        run = s.run(ids["cycling"])
        full = run.samples(0)
        t0, t1 = full["t"].iloc[100], full["t"].iloc[200]
        window = run.samples(0, t_from=t0, t_to=t1)
        assert window["t"].min() == t0 and window["t"].max() == t1 and len(window) == 101
        assert len(run.samples(0, max_points=50)) <= 50
        chunks = list(run.iter_samples(0, chunk_rows=97))
        assert all(len(c) == 97 for c in chunks[:-1]) and 0 < len(chunks[-1]) <= 97
        assert pd.concat(chunks, ignore_index=True).equals(full)


def test_cycles_steps_and_show_json_say_the_same(store):
    db, ids = store
    shown = show_json(db, ids["cycling"])
    with open_store(db) as s:
        run = s.run(ids["cycling"])
        assert run.summary() == shown
        for ch in shown["channels"]:
            cycles = run.cycles(ch["channel"])
            assert cycles.attrs["ce_meaningful"] is False and ch["ce_meaningful"] is False
            assert cycles["cycle"].tolist() == [c["cycle"] for c in ch["cycles"]]
            for row, c in zip(cycles.to_dict("records"), ch["cycles"]):
                assert row["plated_C"] / 3.6 == pytest.approx(c["plated_mAh"], abs=1e-6)
                assert row["eta_strip_V"] * 1e3 == pytest.approx(c["eta_strip_mV"], abs=1e-3)
                assert row["e_plate_end_V"] * 1e3 == pytest.approx(c["e_plate_end_mV"], abs=1e-3)
                assert row["duration_s"] / 3600 == pytest.approx(c["duration_h"], abs=1e-4)
                assert row["current_density_A_m2"] / 10 == pytest.approx(
                    c["current_density_mA_cm2"], abs=1e-4)
                assert c["current_density_mA_cm2"] == pytest.approx(1.0, rel=0.01)
                assert c["e_plate_end_mV"] < 0 < c["e_strip_end_mV"]  # signed
            steps = run.steps(ch["channel"])
            assert steps["half_cycle"].dropna().tolist()[:2] == ["plate", "strip"]
            assert steps.attrs["cell"]["cell_id"] == ch["cell_id"]


def test_eis_fits_and_points_match_show_json(store):
    db, ids = store
    shown = show_json(db, ids["eis"], "--channel", "0")["channels"][0]
    with open_store(db) as s:
        run = s.run(ids["eis"])
        points = run.eis(0)
        assert list(points.columns) == ["sweep", "t", "f_Hz", "z_re", "z_im"]
        assert points["sweep"].nunique() == 4 and (points.groupby("sweep").size() == 39).all()
        assert (points[points["f_Hz"] > 1e3]["z_im"] < 0).all()  # capacitive arcs
        fits = run.eis_fits(0)
        assert fits["fit_ok"].all()
        assert fits["r_sei_ohm"].tolist() == pytest.approx([e["r_sei_ohm"] for e in shown["eis"]])
        assert fits["r_sei_ohm"].tolist() == pytest.approx(run.outcome(0)["r_sei_ohm"])
        assert all(e["r_sei_ohm_err"] is not None for e in shown["eis"])


def test_sensors_events_and_cells_of_a_gas_run(store):
    db, ids = store
    shown = show_json(db, ids["gas"])
    with open_store(db) as s:
        run = s.run(ids["gas"])
        series = run.sensor_series()
        assert {"pressure_Pa", "temperature_K", "o2_ppm", "h2o_ppm"} <= set(series["quantity"])
        p = run.sensors(quantity="pressure_Pa")
        assert len(p) == series[series["quantity"] == "pressure_Pa"]["n"].sum()
        assert p["value"].between(5e4, 2e5).all() and p["t"].is_monotonic_increasing
        wide = run.sensors(wide=True)
        assert any(c.endswith("/pressure_Pa") for c in wide.columns)
        ev = run.events()
        assert {"run_start", "run_end"} <= set(ev["kind"])
        cells = run.channels
        assert cells.loc[0, "headspace_mL"] == 5.0 and cells.loc[0, "cell_id"] == "GAS-C1"
        gas = shown["channels"][0]["gas"]
        assert [g["cycle"] for g in gas] == [1, 2, 3]
        assert gas == [{k: c[k] for k in ("cycle", "gas_umol", "gas_uL_stp")}
                       for c in run.outcome(0)["cycles"]]
        assert run.station["simulated"] is True and "gas_evolution" in run.protocol_text


def test_formation_ce_and_ce_column_of_a_na_cu_run(store):
    db, ids = store
    ch = show_json(db, ids["ce"])["channels"][0]
    assert ch["ce_meaningful"] is True
    assert 0.9 < ch["formation_ce"] < 1.0
    with open_store(db) as s:
        cycles = s.run(ids["ce"]).cycles(0)
        assert cycles.attrs["ce_meaningful"] is True
        assert not math.isnan(cycles["ce"].iloc[0])


def test_an_unknown_channel_is_a_clear_error(store):
    db, ids = store
    with open_store(db) as s, pytest.raises(KeyError, match="has no channel 7"):
        s.run(ids["gas"]).samples(7)


def test_a_run_stored_before_fit_uncertainties_still_shows_and_exports(store, tmp_path):
    """Old stores open: an ocv_impedance outcome recorded by the previous code (fits without
    ``*_err``, ``chi_square``, ``n_points``) is shown as stored, its uncertainty as unknown."""
    import shutil
    import sqlite3

    db, ids = store
    old = tmp_path / "old.db"
    shutil.copy(db, old)
    conn = sqlite3.connect(old)
    (key,) = conn.execute("SELECT key FROM runs WHERE id = ?", (ids["eis"],)).fetchone()
    (text,) = conn.execute("SELECT outcome_json FROM channels WHERE run_key = ?",
                           (key,)).fetchone()
    outcome = json.loads(text)
    for row in outcome["sweeps"]:
        for k in [k for k in row if k.endswith("_err") or k in ("chi_square", "n_points")]:
            del row[k]
    conn.execute("UPDATE channels SET outcome_json = ? WHERE run_key = ?",
                 (json.dumps(outcome), key))
    conn.commit()
    conn.close()
    shown = show_json(old, ids["eis"])["channels"][0]["eis"]
    assert [s["r_sei_ohm"] for s in shown] == [s["r_sei_ohm"] for s in outcome["sweeps"]]
    assert all(s["fit_ok"] and "r_sei_ohm_err" not in s for s in shown)
    text_out = subprocess.run([sys.executable, "-m", "rig.cli", "show", ids["eis"]],
                              capture_output=True, text=True, cwd=ROOT, timeout=120,
                              env={**os.environ, "NARIG_DB": str(old)})
    assert text_out.returncode == 0 and "± ?" in text_out.stdout
    with open_store(old) as s:
        assert s.run(ids["eis"]).eis_fits(0)["r_sei_ohm"].tolist() == pytest.approx(
            outcome["r_sei_ohm"])


def show_text(db: Path, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "rig.cli", "show", *args], capture_output=True,
                         text=True, cwd=ROOT, timeout=120, env={**os.environ, "NARIG_DB": str(db)})
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_show_prints_ce_only_where_it_means_something_and_one_channel_on_request(store):
    db, ids = store
    sym = show_text(db, ids["cycling"], "--channel", "1")
    assert "C1" in sym and "G1" not in sym
    assert "CE % not shown: not meaningful for a symmetric cell" in sym
    assert "η plate mV" in sym and "E strip end mV" in sym and "j mA/cm²" in sym
    na_cu = show_text(db, ids["ce"])
    header = next(line for line in na_cu.splitlines() if "plated mAh" in line)
    assert " CE %" in header and "not meaningful" not in na_cu
    assert "formation CE" in na_cu
    eis = show_text(db, ids["eis"])
    assert "R_SEI ohm" in eis and eis.count(" ± ") >= 8  # R_SEI and Rct of 4 sweeps
    gas = show_text(db, ids["gas"])
    assert "gas umol" in gas and "uL STP" in gas


def test_show_says_fit_failed_instead_of_a_number():
    from rig.show import channel_lines

    ch = {"cycles": [], "eis": [
        {"sweep": 1, "t_h": 0.0, "fit_ok": True, "reason": "", "rs_ohm": 2.2, "r_sei_ohm": 7.1,
         "r_sei_ohm_err": 0.25, "rct_ohm": 9.1, "rct_ohm_err": 0.3, "residual": 0.006},
        {"sweep": 2, "t_h": 1.0, "fit_ok": False,
         "reason": "R_SEI is not determined by the data"}]}
    lines = channel_lines(ch)
    assert "7.10 ± 0.25" in lines[1] and "9.10 ± 0.3" in lines[1]
    assert lines[2].split()[:2] == ["2", "1.00"]
    assert "fit failed: R_SEI is not determined by the data" in lines[2]
