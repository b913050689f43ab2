"""Hardware in the loop: the instruments a station file names, checked from the outside.

Every instrument identifies and every sensor reads once; on each channel wired to a dummy
resistor (``dummy_resistor`` in the station file) a small current gives E = I x R, a 3-cycle
plating-stripping run completes with the charge it planned, the output is off after the
run ends and after an abort, and a Keithley 2450 whose host stops reading switches its output
off within its watchdog's bound. The runs go through ``rig run`` as a user starts them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from rig.clock import RealClock
from rig.store import latest_sample, list_runs, open_reader
from rig.station import StationFile, check_station, format_check, open_instrument, \
    read_station_file

ROOT = Path(__file__).resolve().parents[1]
TARGET_V = 0.1  # the small current is chosen so that I x R is about this
MAX_TEST_CURRENT_A = 1e-3
REL_TOL, ABS_TOL_V = 0.02, 2e-3  # E = I x R within 2 % + 2 mV (resistor tolerance, offsets)


@pytest.fixture(scope="session")
def config(station_file: Path) -> StationFile:
    return read_station_file(station_file)


def dummies(config: StationFile) -> list[Any]:
    return [c for c in config.channels if c.dummy_resistor is not None]


@pytest.fixture(scope="session")
def dummy(config: StationFile) -> Any:
    found = dummies(config)
    if not found:
        pytest.skip("the station file wires no channel to a dummy resistor "
                    '(add dummy_resistor = "1 kohm" to a [[channels]] entry)')
    return found[0]


def test_every_instrument_identifies_and_every_sensor_reads(config):
    results = check_station(config, RealClock())
    assert all(r.ok for r in results), format_check(results)
    assert len(results) == len(config.instruments) + len(config.sensors)


def test_a_small_current_through_the_dummy_gives_e_equals_i_times_r(config, dummy):
    r_ohm = dummy.dummy_resistor
    current = min(TARGET_V / r_ohm, MAX_TEST_CURRENT_A)
    expected = current * r_ohm
    driver = open_instrument(config.instrument(dummy.instrument), RealClock())
    try:
        driver.start_current(current, 0.1, 5.0, -4 * expected - 0.05, 4 * expected + 0.05)
        samples: list[Any] = []
        deadline = time.monotonic() + 10.0
        while len(samples) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
            got, ended = driver.read_samples(time.monotonic())
            samples += got
            if ended:
                break
        assert samples, "no reading from the dummy"
        for s in samples[-3:]:
            assert s.current_A == pytest.approx(current, rel=REL_TOL, abs=1e-7)
            assert s.potential_V == pytest.approx(expected, rel=REL_TOL, abs=ABS_TOL_V)
        driver.output_off()
        assert_output_off(driver)
    finally:
        driver.close()


def plating_stripping(channel: int, r_ohm: float, cycles: int = 3, half_s: float = 2.0) -> str:
    current_mA = min(TARGET_V / r_ohm, MAX_TEST_CURRENT_A) * 1e3
    window = max(1.0, 4 * current_mA * 1e-3 * r_ohm)
    return f"""
kind = "sequence"
name = "hil dummy plating-stripping"
[record]
every = "0.5 s"
[safety]
min_potential = "-{window:g} V"
max_potential = "{window:g} V"
max_current = "{2 * current_mA:g} mA"
[[steps]]
type = "loop"
label = "cycling"
count = {cycles}
counts_cycles = true
  [[steps.steps]]
  type = "current"
  label = "plate"
  current = "-{current_mA:g} mA"
  half_cycle = "plate"
  until = {{time = "{half_s:g} s"}}
  [[steps.steps]]
  type = "current"
  label = "strip"
  current = "{current_mA:g} mA"
  half_cycle = "strip"
  until = {{time = "{half_s:g} s"}}
[[cells]]
channel = {channel}
cell_id = "dummy-{channel}"
type = "symmetric"
area = "1 cm^2"
electrolyte = "1 M NaPF6 in diglyme"
"""


def rig(*args: str, db: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "NARIG_DB": str(db)}
    return subprocess.run([sys.executable, "-m", "rig.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env=env)


def assert_output_off(driver: Any) -> None:
    """Instruments that can say (the Keithley's ``:OUTP?``) must say off."""
    if hasattr(driver, "output_is_on"):
        assert not driver.output_is_on(), "the output is still ON"


def output_is_off_now(config: StationFile, dummy: Any) -> None:
    driver = open_instrument(config.instrument(dummy.instrument), RealClock())
    try:
        assert_output_off(driver)
    finally:
        driver._disconnect() if hasattr(driver, "_disconnect") else driver.close()


def test_three_plating_stripping_cycles_on_the_dummy_then_the_output_is_off(
        tmp_path, station_file, config, dummy):
    protocol = tmp_path / "dummy.toml"
    protocol.write_text(plating_stripping(dummy.channel, dummy.dummy_resistor))
    db = tmp_path / "hil.db"
    run = rig("run", str(protocol), "--station", str(station_file), db=db)
    assert run.returncode == 0, run.stdout + run.stderr
    data = json.loads(rig("show", "latest", "--json", db=db).stdout)
    (channel,) = data["channels"]
    assert [c["cycle"] for c in channel["cycles"]] == [1, 2, 3]
    current = min(TARGET_V / dummy.dummy_resistor, MAX_TEST_CURRENT_A)
    for c in channel["cycles"]:  # 2 s at the current each way; a resistor gives it all back
        assert c["plated_mAh"] == pytest.approx(current * 2.0 / 3.6, rel=0.1)
        assert c["stripped_mAh"] == pytest.approx(c["plated_mAh"], rel=0.05)
    output_is_off_now(config, dummy)


def sourcing(db: Path, channel: int) -> bool:
    """The run has recorded a sample with current flowing on the channel."""
    if not db.exists():
        return False
    try:
        conn = open_reader(db)
        try:
            runs = list_runs(conn)
            sample = latest_sample(conn, runs[0]["key"], channel) if runs else None
        finally:
            conn.close()
    except Exception:  # noqa: BLE001 - the store is being created: not yet
        return False
    return sample is not None and abs(sample[4]) > 0


def test_an_aborted_run_leaves_the_output_off(tmp_path, station_file, config, dummy):
    protocol = tmp_path / "long.toml"
    protocol.write_text(plating_stripping(dummy.channel, dummy.dummy_resistor, cycles=50,
                                          half_s=10.0))
    db = tmp_path / "abort.db"
    env = {**os.environ, "NARIG_DB": str(db)}
    proc = subprocess.Popen([sys.executable, "-m", "rig.cli", "run", str(protocol),
                             "--station", str(station_file)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not sourcing(db, dummy.channel):
            time.sleep(0.2)
        aborted = rig("abort", "latest", db=db)
        assert aborted.returncode == 0, aborted.stdout + aborted.stderr
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, out + err  # ended early: aborted
    output_is_off_now(config, dummy)


WATCHDOG_TEST_S = 8.0  # a short bound, so the test waits seconds, not the station's minute


def test_a_keithley_whose_host_stops_reading_switches_its_output_off(config, dummy):
    """The instrument stays safe without its host: the 2450's trigger-model watchdog switches
    the output off within its bound once the host stops reading (the host here simply goes
    silent and drops its connection, as a killed engine does)."""
    from drivers.keithley2450 import Keithley2450

    entry = config.instrument(dummy.instrument)
    if getattr(entry, "driver", "") != "keithley2450" or entry.command_set != "2450":
        pytest.skip("the watchdog is the Keithley 2450's (the 2400 command set has none)")
    current = min(TARGET_V / dummy.dummy_resistor, MAX_TEST_CURRENT_A)
    expected = current * dummy.dummy_resistor
    host = Keithley2450(entry.resource, command_set="2450", host_watchdog_s=WATCHDOG_TEST_S)
    try:
        host.start_current(current, 0.2, 600.0, -4 * expected - 0.05, 4 * expected + 0.05)
        for _ in range(3):
            time.sleep(0.2)
            host.read_samples(0.0)
        bound = host.watchdog_bound_s
        assert bound is not None and bound <= WATCHDOG_TEST_S
    finally:
        host._disconnect()  # the host is gone: no more reads, no output-off
    t_gone = time.monotonic()
    watcher = open_instrument(entry, RealClock())
    try:
        while watcher.output_is_on() and time.monotonic() - t_gone < bound + 10.0:
            time.sleep(0.25)
        on_for = time.monotonic() - t_gone
        assert_output_off(watcher)
        assert on_for <= bound + 1.0, f"the output stayed on {on_for:.1f} s (bound {bound} s)"
    finally:
        watcher.output_off()
        watcher.close()
