"""`rig report`: every figure a run of each protocol has data for is rendered as a real PNG of
the expected size, the summary links them and says why the others were skipped; whole-run
traces are min/max-decimated so a one-sample spike survives."""

from __future__ import annotations

import asyncio
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from protocols import load_protocol
from protocols.plan import CellSpec
from rig.clock import VirtualClock
from rig.engine.run import execute
from rig.report import figures as figs
from rig.report.build import Report, build_report
from rig.report.context import RunContext
from rig.report.decimate import MinMaxDecimator
from rig.report.queries import decimated_series, sample_chunks
from rig.sim.glovebox import Breach
from rig.sim.station import simulated_station
from rig.store import RunWriter, open_reader, resolve_run

ROOT = Path(__file__).resolve().parents[2]
GLYME, CARBONATE = "1 M NaPF6 in diglyme", "1 M NaClO4 in EC:DEC"
WIDE_PX, TALL_PX = (1200, 675), (1200, 900)  # 8 x 4.5 and 8 x 6 inches at 150 dpi


def cells(prefix: str, cell_type: str = "symmetric", extra: str = "") -> str:
    return "".join(f"""
[[cells]]
channel = {k}
cell_id = "{prefix}-{tag}"
type = "{cell_type}"
area = "1.13 cm^2"
electrolyte = "{el}"
{extra}
""" for k, (tag, el) in enumerate((("G1", GLYME), ("C1", CARBONATE))))


PROTOCOLS = {
    "plating_stripping": """
kind = "plating_stripping"
name = "report: plating-stripping"
current_density = "1 mA/cm^2"
areal_capacity = "0.25 mAh/cm^2"
cycles = 12
record_interval = "10 s"
""" + cells("PS"),
    "coulombic_efficiency": """
kind = "coulombic_efficiency"
name = "report: per-cycle CE"
method = "per_cycle"
cycles = 5
current_density = "1 mA/cm^2"
cycle_capacity = "0.25 mAh/cm^2"
record_interval = "10 s"
[safety]
min_potential = "-1 V"
max_potential = "3 V"
""" + cells("CU", "na_cu"),
    "coulombic_efficiency_reservoir": """
kind = "coulombic_efficiency"
name = "report: reservoir CE"
method = "reservoir"
cycles = 3
current_density = "1 mA/cm^2"
cycle_capacity = "0.25 mAh/cm^2"
reservoir_capacity = "1 mAh/cm^2"
formation_capacity = "1 mAh/cm^2"
record_interval = "10 s"
""" + cells("RES", "na_cu"),
    "critical_current_density": """
kind = "critical_current_density"
name = "report: CCD"
ramp = {start = "0.5 mA/cm^2", factor = 2.0, max = "8 mA/cm^2"}
areal_capacity = "1 mAh/cm^2"
cycles_per_step = 5
record_interval = "10 s"
""" + cells("CCD"),
    "ocv_impedance": """
kind = "ocv_impedance"
name = "report: OCV and EIS"
interval = "1 h"
duration = "3 h"
record_interval = "5 min"
[eis]
points_per_decade = 5
""" + cells("EIS"),
    "gas_evolution": """
kind = "gas_evolution"
name = "report: gas"
rest_before = "30 min"
current_density = "1 mA/cm^2"
areal_capacity = "0.5 mAh/cm^2"
cycles = 4
record_interval = "30 s"
""" + cells("GAS", extra='headspace = "5 mL"'),
}

COMMON = ["potential_time_ch0.png", "potential_time_ch1.png", "atmosphere.png"]
CYCLING = ["cycles_ch0.png", "cycles_ch1.png", "overpotential.png"]
EXPECTED = {
    "plating_stripping": COMMON + CYCLING,
    "coulombic_efficiency": COMMON + CYCLING + ["coulombic_efficiency.png"],
    "coulombic_efficiency_reservoir": COMMON + CYCLING + ["coulombic_efficiency.png"],
    "critical_current_density": COMMON + CYCLING + ["ccd_ladder_ch0.png", "ccd_ladder_ch1.png"],
    "ocv_impedance": COMMON + ["nyquist_ch0.png", "nyquist_ch1.png", "resistances_time.png"],
    "gas_evolution": COMMON + CYCLING + ["gas_per_cycle.png", "pressure_temperature.png"],
}
TALL = {"ccd_ladder_ch0.png", "ccd_ladder_ch1.png", "nyquist_ch0.png", "nyquist_ch1.png",
        "resistances_time.png", "pressure_temperature.png"}


def run_protocol(path: Path, text: str, glovebox_events: tuple = ()) -> Path:
    """Run ``text`` on the simulated station on the virtual clock; the store's path."""
    protocol = path / "protocol.toml"
    protocol.write_text(text, encoding="utf-8")
    loaded = load_protocol(protocol)
    clock = VirtualClock()
    station = simulated_station(loaded.plan, clock, seed=3, glovebox_events=glovebox_events)
    db = path / "narig.db"
    writer = RunWriter(db)
    try:
        asyncio.run(execute(loaded.plan, station=station, clock=clock, writer=writer,
                            protocol_text=loaded.text, protocol_path=str(protocol)))
    finally:
        station.close()
        writer.close()
    return db


@pytest.fixture(scope="session")
def reports(tmp_path_factory):
    """``reports(protocol)`` -> ``(store, Report)``: one run and one report per protocol, made
    when first asked for and shared by every test of the session."""
    made: dict[str, tuple[Path, Report]] = {}

    def get(name: str) -> tuple[Path, Report]:
        if name not in made:
            path = tmp_path_factory.mktemp(name)
            # a glove breach 2 h in: the atmosphere figure has a hold to shade
            events = (Breach(2 * 3600, 5.0, 600.0, ("o2",)),) if name == "plating_stripping" \
                else ()
            db = run_protocol(path, PROTOCOLS[name], events)
            made[name] = db, build_report(db, "latest", path / "report")
        return made[name]

    return get


def context(db: Path) -> RunContext:
    conn = open_reader(db)
    return RunContext.load(conn, resolve_run(conn, "latest"))


@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_every_figure_the_run_has_data_for_is_a_real_png_of_the_expected_size(reports, name):
    _, report = reports(name)
    made = sorted(f.path.name for f in report.figures)
    assert made == sorted(EXPECTED[name])
    for f in report.figures:
        image = imread(f.path)  # fails on anything but a real PNG
        height, width = image.shape[:2]
        assert (width, height) == (TALL_PX if f.path.name in TALL else WIDE_PX), f.path.name
        assert image[..., :3].std() > 0.05, f"{f.path.name} is blank"  # something is drawn


@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_the_summary_links_every_figure_and_says_why_the_others_were_skipped(reports, name):
    _, report = reports(name)
    text = report.summary.read_text(encoding="utf-8")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert sorted(links) == sorted(f.path.name for f in report.figures)
    assert all((report.out / link).is_file() for link in links)
    for s in report.skipped:
        assert f"{s.title}: {s.reason}" in text
    for cell in ("-G1", "-C1"):
        assert cell in text
    assert "## Channels" in text and "| end reason |" in text


def test_a_symmetric_cell_gets_no_ce_figure_nor_ce_column(reports):
    _, report = reports("plating_stripping")
    skipped = {s.title: s.reason for s in report.skipped}
    assert "fixed charge" in skipped["Coulombic efficiency vs cycle"]
    text = report.summary.read_text(encoding="utf-8")
    assert "CE %" not in text and "CE is not listed" in text


def test_the_na_cu_run_lists_ce_per_cycle(reports):
    _, report = reports("coulombic_efficiency")
    text = report.summary.read_text(encoding="utf-8")
    assert "| CE % |" in text
    rows = re.findall(r"^\| 3 \| [\d.]+ \| [\d.]+ \| ([\d.]+) \|", text, re.M)
    assert rows and all(80 < float(ce) <= 100.5 for ce in rows)  # carbonate: 80-95 % (domain.md)


def test_the_reservoir_method_shows_its_ce_and_formation_not_a_per_cycle_100_percent(reports):
    db, report = reports("coulombic_efficiency_reservoir")
    ctx = context(db)
    ax = figs.coulombic_efficiency(ctx).axes[0]
    labels = [ln.get_label() for ln in ax.lines]
    for ch in ctx.channels:
        o = ch.outcome
        if o["ce"] is not None:
            assert f"{ch.label}: reservoir method {o['ce'] * 100:.2f} %" in labels
        # the cycles pass a fixed charge both ways: no per-cycle CE line for them
        assert ch.label not in labels
    assert any("reservoir method" in label for label in labels)
    text = report.summary.read_text(encoding="utf-8")
    assert "| CE % |" not in text and "the reservoir-method CE is the channel's outcome" in text


def test_the_ccd_ladder_marks_the_short_where_it_happened(reports):
    db, _ = reports("critical_current_density")
    ctx = context(db)
    for ch in ctx.channels:
        shorts = [e for e in ctx.events if e["channel"] == ch.number
                  and e["kind"] in figs.SHORT_KINDS]
        assert shorts, f"channel {ch.number} ended {ch.row['end_reason']} without a short"
        fig = figs.ccd_ladder(ctx, ch)
        ax_j, ax_e = fig.axes[:2]
        marks = [ln.get_xdata()[0] for ln in ax_e.lines if ln.get_linestyle() == "--"]
        assert marks and math.isclose(marks[0], float(ctx.hours(shorts[0]["t"])))
        j = np.concatenate([ln.get_ydata() for ln in ax_j.lines[:1]])
        assert max(abs(j)) == pytest.approx(
            ch.outcome["failing_mA_cm2"], rel=0.02)  # the ladder reaches the failing rung


def test_the_atmosphere_figure_shades_the_interlock_hold(reports):
    db, _ = reports("plating_stripping")
    ctx = context(db)
    hold = next(e for e in ctx.events if e["kind"] == "interlock_hold")
    release = next(e for e in ctx.events if e["kind"] == "interlock_release")
    ax = figs.atmosphere(ctx).axes[0]
    spans = [p for p in ax.patches if p.get_label() == "interlock hold"]
    assert len(spans) == 1
    x0, x1 = spans[0].get_x(), spans[0].get_x() + spans[0].get_width()
    assert x0 == pytest.approx(float(ctx.hours(hold["t"])))
    assert x1 == pytest.approx(float(ctx.hours(release["t"])))


def test_the_eis_fits_carry_an_uncertainty_for_r_sei_and_rct(reports):
    _, report = reports("ocv_impedance")
    text = report.summary.read_text(encoding="utf-8")
    fitted = re.findall(r"^\| \d+ \| [\d.]+ \| [\d.]+ \| ([\d.]+) ± ([\d.e+-]+) \| "
                        r"([\d.]+) ± ([\d.e+-]+) \|", text, re.M)
    failed = re.findall(r"^\| \d+ \| [\d.]+ \| – \| – \| – \| – \| fit failed: .+ \|$", text, re.M)
    assert len(fitted) + len(failed) == 8  # 4 sweeps x 2 channels: a fit with errors, or why not
    assert len(fitted) >= 6
    assert all(float(e) < float(r) for r, e, *_ in fitted)


def test_selected_cycles_are_the_ones_asked_for_that_the_run_has(reports):
    db, _ = reports("plating_stripping")
    ctx = context(db)
    ax = figs.cycles_overlay(ctx, ctx.channels[0], [1, 10, 100]).axes[0]
    assert [ln.get_label() for ln in ax.lines if ln.get_label().startswith("cycle")] == [
        "cycle 1", "cycle 10"]
    default = figs.cycles_overlay(ctx, ctx.channels[0]).axes[0]
    labels = [ln.get_label() for ln in default.lines if ln.get_label().startswith("cycle")]
    assert labels[0] == "cycle 1" and labels[-1] == "cycle 12" and len(labels) == 5


# ---- decimation ----------------------------------------------------------------------------

def spiky(n: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(n, dtype=float)
    e = 0.02 + 1e-4 * np.sin(t / 50.0)
    e[n // 3] = 0.95  # a one-sample spike
    e[2 * n // 3] = 0.0001  # a one-sample dip (a short)
    return t, e


def test_decimation_keeps_a_one_sample_spike_and_dip_whatever_the_chunking():
    n = 1_000_000
    t, e = spiky(n)
    results = []
    for chunk in (n, 65_536, 999):
        dec = MinMaxDecimator(t[0], t[-1], buckets=1000)
        for start in range(0, n, chunk):
            dec.add(t[start:start + chunk], e[start:start + chunk, None])
        results.append(dec.series()[0])
    for td, ed in results:
        assert len(td) <= 2000 and np.all(np.diff(td) >= 0)
        assert ed.max() == 0.95 and td[ed.argmax()] == n // 3
        assert ed.min() == 0.0001 and td[ed.argmin()] == 2 * n // 3
        np.testing.assert_array_equal(td, results[0][0])
    # every nth sample, the naive way, loses both
    assert e[::500].max() < 0.1 and e[::500].min() > 0.01


def test_a_stored_spike_survives_the_chunked_read_and_the_decimation(tmp_path):
    n = 50_000
    t, e = spiky(n)
    with RunWriter(tmp_path / "s.db") as w:
        key = w.create_run(run_id="spike", name="spike", kind="sequence", protocol_path=None,
                           protocol_text=None, plan_json=None, station_json=None,
                           software_version=None, started_at=0.0, clock="virtual")
        w.add_channel(key, CellSpec(0, "S1", "symmetric", 1.13, GLYME), "none")
        w.samples(key, 0, [(float(ti), 0, 1, float(ei), 1e-3, 0.0) for ti, ei in zip(t, e)])
    with open_reader(tmp_path / "s.db") as conn:
        assert sum(len(c) for c in sample_chunks(conn, key, 0, chunk_rows=7_000)) == n
        td, ed = decimated_series(conn, key, 0, ("e",), buckets=300)["e"]
        assert len(td) <= 600 and ed.max() == 0.95 and ed.min() == 0.0001


# ---- the command ---------------------------------------------------------------------------

def rig(*args: str, db: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NARIG_DB": str(db)}
    return subprocess.run([sys.executable, "-m", "rig.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_rig_report_writes_the_report_and_refuses_bad_input_in_one_line(reports, tmp_path):
    db, _ = reports("gas_evolution")
    done = rig("report", "latest", "--out", str(tmp_path / "r"), "--cycles", "1,3", db=db)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "r" / "summary.md").is_file()
    assert "gas_per_cycle.png" in done.stdout
    for args, word in ((("--cycles", "1,x"), "--cycles"), (("--dpi", "5"), "--dpi")):
        bad = rig("report", "latest", "--out", str(tmp_path / "b"), *args, db=db)
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and word in bad.stderr
    missing = rig("report", "no-such-run", "--out", str(tmp_path / "b"), db=db)
    assert missing.returncode == 2 and "no run matches" in missing.stderr
    assert "Traceback" not in missing.stderr
