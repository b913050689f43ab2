"""One station, many runs: a second `rig run` on the same station file works on the channels
nobody runs, is refused (one line naming the run) on a channel a live run holds, and a dead
holder never blocks. Two real `rig run` processes on a station served by `rig sim serve`."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.rig_process import rig_cmd, wait_for
from rig.station import InstrumentInUse, lock_station, parse_station
from rig.station.lock import LOCK_DIR_ENV, claims_of, lock_dir

ROOT = Path(__file__).resolve().parents[2]

STATION = """\
name = "bench"

[[instruments]]
name = "es4-a"
driver = "emstat4"
port = "{dev}/ttyA"

[[instruments]]
name = "smu-1"
driver = "keithley2450"
resource = "TCPIP0::192.168.1.50::5025::SOCKET"

[[channels]]
channel = 0
instrument = "es4-a"

[[channels]]
channel = 1
instrument = "smu-1"

[[sensors]]
name = "box-h2o"
kind = "atmosphere"
host = "192.168.1.40"
map = "vaisala_h2o"

[[sensors]]
name = "box-o2"
kind = "atmosphere"
serial_port = "{dev}/ttyO2"
map = "narig_o2"

[[sensors]]
name = "holder-0"
kind = "pressure"
port = "{dev}/ttyK"
channel = 0
headspace = "5 mL"
"""


@pytest.fixture
def locks_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "locks"
    monkeypatch.setenv(LOCK_DIR_ENV, str(directory))
    return directory


def bench(tmp_path: Path, text: str = STATION):
    return parse_station(text.format(dev=tmp_path), "bench.toml")


# ---------------------------------------------------------------- the lock, in one process

def test_a_run_holds_its_channels_instruments_and_serial_sensors_not_modbus_tcp(
        tmp_path: Path, locks_in: Path) -> None:
    config = bench(tmp_path)
    assert [c.what for c in claims_of(config, [0])] == [
        f"channel 0 (es4-a at {tmp_path}/ttyA)",
        f"sensor box-o2 at {tmp_path}/ttyO2 (Modbus RTU, device 1)",
        f"sensor holder-0 at {tmp_path}/ttyK (address 250)"]
    # channel 1's run: its Keithley and the station-wide RTU sensor, not channel 0's holder
    assert [c.what for c in claims_of(config, [1])] == [
        "channel 1 (smu-1 at TCPIP0::192.168.1.50::5025::SOCKET)",
        f"sensor box-o2 at {tmp_path}/ttyO2 (Modbus RTU, device 1)"]
    assert lock_dir() == locks_in


def test_a_second_run_on_other_channels_works_and_on_a_held_one_is_refused_naming_the_run(
        tmp_path: Path, locks_in: Path) -> None:
    tcp_only = STATION.replace('serial_port = "{dev}/ttyO2"', 'host = "192.168.1.41"')
    config = bench(tmp_path, tcp_only)
    first = lock_station(config, [0], "20261201-215012-ab12", source="bench.toml")
    try:
        second = lock_station(config, [1], "20261201-220000-cd34", source="bench.toml")
        second.release()
        with pytest.raises(InstrumentInUse) as info:
            lock_station(config, [0, 1], "20261201-221500-ef56", source="bench.toml")
        message = str(info.value)
        assert "\n" not in message
        assert message.startswith(f"bench.toml: channel 0 (es4-a at {tmp_path}/ttyA) is in use "
                                  f"by run 20261201-215012-ab12 (pid {os.getpid()} on ")
        # all or nothing: the refused run left channel 1 free
        lock_station(config, [1], "20261201-222000-0123").release()
    finally:
        first.release()
    lock_station(config, [0], "20261201-223000-4567").release()  # released: free again


def test_a_sensor_on_a_serial_port_is_one_runs_and_the_refusal_names_it(
        tmp_path: Path, locks_in: Path) -> None:
    config = bench(tmp_path)
    first = lock_station(config, [0], "20261201-215012-ab12")
    try:
        with pytest.raises(InstrumentInUse, match=r"^sensor box-o2 at .* is in use by run "
                                                  r"20261201-215012-ab12 "):
            lock_station(config, [1], "20261201-220000-cd34")
    finally:
        first.release()


def test_the_same_device_under_another_name_is_the_same_lock(
        tmp_path: Path, locks_in: Path) -> None:
    (tmp_path / "ttyA").touch()
    (tmp_path / "by-id").symlink_to(tmp_path / "ttyA")
    first = lock_station(bench(tmp_path), [0], "20261201-215012-ab12")
    try:
        alias = STATION.replace('port = "{dev}/ttyA"', 'port = "{dev}/by-id"')
        with pytest.raises(InstrumentInUse, match="es4-a at .*/by-id\\) is in use by run "
                                                  "20261201-215012-ab12"):
            lock_station(bench(tmp_path, alias), [0], "20261201-220000-cd34")
    finally:
        first.release()


def test_while_a_run_holds_locks_a_tmp_cleaner_leaves_the_lock_directory_alone(
        tmp_path: Path, locks_in: Path) -> None:
    import fcntl

    first = lock_station(bench(tmp_path), [0], "20261201-215012-ab12")
    fd = os.open(locks_in, os.O_RDONLY | os.O_DIRECTORY)
    try:  # systemd-tmpfiles takes LOCK_EX | LOCK_NB on a directory before aging it, and skips
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        first.release()
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody holds it: cleanable
    finally:
        os.close(fd)
        first.release()


# ---------------------------------------------------------------- two `rig run` processes

def run_ids(db: Path) -> list[str]:
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return [r[0] for r in conn.execute("SELECT id FROM runs ORDER BY key")]
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def one_cell(channel: int, cycles: int, q: str, headspace: str = "") -> str:
    return f"""
kind = "plating_stripping"
name = "cell on channel {channel}"
current_density = "1 mA/cm^2"
areal_capacity = "{q}"
cycles = {cycles}
record_interval = "10 s"

[[cells]]
channel = {channel}
cell_id = "N{channel}"
type = "symmetric"
area = "1.13 cm^2"
electrolyte = "1 M NaPF6 in diglyme"
{headspace}
"""


SERVED_CELLS = one_cell(0, 1, "0.01 mAh/cm^2", 'headspace = "5 mL"') + """
[[cells]]
channel = 1
cell_id = "N1"
type = "symmetric"
area = "1.13 cm^2"
electrolyte = "1 M NaPF6 in diglyme"
"""


@pytest.fixture
def served(tmp_path: Path, locks_in: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A station file served by `rig sim serve` (x600): EmStat4s on channels 0 and 1, a KELLER
    gauge on channel 0's holder, the glovebox over Modbus TCP."""
    cells = tmp_path / "cells.toml"
    cells.write_text(SERVED_CELLS)
    station = tmp_path / "station.toml"
    env = {**os.environ, LOCK_DIR_ENV: str(locks_in)}
    server = subprocess.Popen(rig_cmd("sim", "serve", "--protocol", str(cells), "--out",
                                      str(station), "--clock", "x600"),
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env=env)
    try:
        wait_for(lambda: station.exists() or server.poll() is not None, timeout=60)
        assert station.exists(), server.communicate()[1]
        yield station, env
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_two_runs_share_a_station_a_held_channel_is_refused_and_freed_by_the_holders_death(
        tmp_path: Path, served: tuple[Path, dict[str, str]]) -> None:
    station, env = served
    db = tmp_path / "store.db"  # one store, as in a lab
    long_run, short_run = tmp_path / "long.toml", tmp_path / "short.toml"
    long_run.write_text(one_cell(0, 1000, "1 mAh/cm^2"))  # hours even at x600
    short_run.write_text(one_cell(1, 1, "0.01 mAh/cm^2"))

    def rig_run(protocol: Path) -> list[str]:
        return rig_cmd("run", str(protocol), "--station", str(station), "--db", str(db),
                       "--clock", "x600")

    holder = subprocess.Popen(rig_run(long_run), cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        first = wait_for(lambda: run_ids(db) or holder.poll() is not None)
        assert holder.poll() is None, holder.communicate()[1]
        (first_id,) = first
        # channel 1 is nobody's: a second run works beside the first
        beside = subprocess.run(rig_run(short_run), cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=120)
        assert beside.returncode == 0, beside.stdout + beside.stderr
        assert holder.poll() is None  # and the first carries on
        # channel 0 is the first run's: refused, one line naming it, nothing opened
        clash = tmp_path / "clash.toml"
        clash.write_text(one_cell(0, 1, "0.01 mAh/cm^2"))
        refused = subprocess.run(rig_run(clash), cwd=ROOT, env=env, capture_output=True,
                                 text=True, timeout=120)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        (line,) = refused.stderr.strip().splitlines()
        assert line.startswith(f"rig: {station}: channel 0 (es4-ch0 at /dev/")
        assert f"is in use by run {first_id} (pid {holder.pid} on " in line
        assert len(run_ids(db)) == 2  # the refused run recorded nothing
        # `rig station check` leaves the live run's devices alone and says whose they are
        check = subprocess.run(rig_cmd("station", "check", str(station)), cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=120)
        assert check.returncode == 0, check.stdout + check.stderr
        rows = {line.split()[0]: line for line in check.stdout.splitlines() if line.strip()}
        for name in ("es4-ch0", "keller-ch0"):
            assert rows[name].endswith("IN USE") and f"in use by run {first_id}" in rows[name]
        assert rows["es4-ch1"].endswith("OK") and rows["box-o2"].endswith("OK")
        assert "3 of 5 OK, 2 in use by a run (not opened)" in check.stdout
        assert holder.poll() is None
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        # its lock died with it: channel 0 can be used again
        again = subprocess.run(rig_run(clash), cwd=ROOT, env=env, capture_output=True,
                               text=True, timeout=120)
        assert again.returncode == 0, again.stdout + again.stderr
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=30)


def test_the_built_in_simulated_station_takes_no_locks(tmp_path: Path, locks_in: Path) -> None:
    protocol = tmp_path / "p.toml"
    protocol.write_text(one_cell(0, 1, "0.01 mAh/cm^2"))
    done = subprocess.run(rig_cmd("run", str(protocol), "--db", str(tmp_path / "s.db")),
                          cwd=ROOT, env={**os.environ, LOCK_DIR_ENV: str(locks_in)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not locks_in.exists()  # each run's own simulators: nothing shared, nothing locked
