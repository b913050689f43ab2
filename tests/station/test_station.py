"""The station: station files (every error names the file, the field and what is allowed), the
built-in simulated station (instruments and sensors through their production drivers),
`rig station check` and `rig sim serve` as a user runs them."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.base import InstrumentProtocolError
from protocols.plan import CellSpec, ChannelPlan, Plan, Safety
from rig.clock import RealClock, VirtualClock
from rig.sim.glovebox import Breach, ModbusFaultProfile
from rig.sim.serve import SimulatedInstruments, builtin_station_data, dumps_toml
from rig.sim.station import SimulatedStation, dummy_plan, simulated_station
from rig.station import (
    HolderSpec,
    Interlocks,
    StationError,
    check_station,
    load_station,
    parse_station,
)

ROOT = Path(__file__).resolve().parents[2]

GOOD = """\
name = "glovebox-1"

[[instruments]]
name = "es4-a"
driver = "emstat4"
port = "/dev/ttyUSB0"

[[instruments]]
name = "smu-1"
driver = "keithley2450"
resource = "TCPIP0::192.168.1.50::5025::SOCKET"
command_set = "2450"

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
port = 502
map = "vaisala_h2o"
poll_interval = "10 s"

[[sensors]]
name = "box-o2"
kind = "atmosphere"
serial_port = "/dev/ttyUSB1"
map = { device_id = 1, registers = [
  { quantity = "o2_ppm", address = 0x0000, type = "float32", word_order = "big" },
] }

[[sensors]]
name = "holder-0"
kind = "pressure"
port = "/dev/ttyUSB2"
channel = 0
headspace = "5 mL"
limit = "1.5 bar"
rate_warning = "50 mbar/h"

[interlocks]
o2_max = "0.5 ppm"
h2o_max = "800 ppb"
hysteresis = "0.1 ppm"
hold_off = "0 s"
clear_for = "10 min"
sensor_timeout = "60 s"
resume_when_clear = false
"""


def edited(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new, 1)


def problems(text: str) -> list[str]:
    with pytest.raises(StationError) as info:
        parse_station(text, "lab.toml")
    return info.value.problems


def plan_of(*cells: CellSpec) -> Plan:
    return Plan("test", "test", Safety(-1.0, 1.0, 0.01), tuple(ChannelPlan(c, ()) for c in cells))


GLYME = "1 M NaPF6 in diglyme"
CARBONATE = "1 M NaClO4 in EC:DEC"


def rig(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rig.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A port nothing listens on: bound (so no other test's server can take it) but not
    listening, so a connection to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


# ---------------------------------------------------------------- the file

def test_a_station_file_parses_into_si_values() -> None:
    config = parse_station(GOOD, "lab.toml")
    assert config.name == "glovebox-1"
    assert [i.driver for i in config.instruments] == ["emstat4", "keithley2450"]
    assert config.instruments[0].baudrate == 921600  # the EmStat4's default
    h2o, o2, holder = config.sensors
    assert h2o.map.device_id == 240 and h2o.poll_interval == 10.0
    assert o2.serial_port == "/dev/ttyUSB1" and o2.map.registers[0].quantity == "o2_ppm"
    assert holder.address == 250  # the KELLER transparent address by default
    assert holder.headspace == 5.0 and holder.limit == pytest.approx(1.5e5)
    assert holder.rate_warning == pytest.approx(5000 / 3600)
    il = config.interlocks
    assert (il.o2_max, il.h2o_max, il.hysteresis) == pytest.approx((0.5, 0.8, 0.1))
    assert (il.hold_off, il.clear_for, il.sensor_timeout) == (0.0, 600.0, 60.0)
    assert il.resume_when_clear is False


def test_the_documented_example_is_a_valid_station_file() -> None:
    doc = (ROOT / "docs" / "station.md").read_text()
    example = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    config = parse_station(example, "docs/station.md")
    assert config.name == "glovebox-1" and len(config.sensors) == 3


def test_defaults_name_from_the_file_and_interlocks_from_domain() -> None:
    minimal = ('[[instruments]]\nname = "a"\ndriver = "emstat4"\nport = "/dev/ttyACM0"\n'
               '[[channels]]\nchannel = 0\ninstrument = "a"\n')
    config = parse_station(minimal, "bench/left-box.toml")
    assert config.name == "left-box" and config.sensors == []
    il = config.interlocks
    assert (il.o2_max, il.h2o_max, il.hysteresis, il.hold_off, il.clear_for,
            il.sensor_timeout, il.resume_when_clear) == (1.0, 1.0, 0.2, 30.0, 600.0, 60.0, True)


@pytest.mark.parametrize("old, new, message", [
    ('driver = "emstat4"', 'driver = "emstat3"',
     'instruments[0].driver: "emstat3" is not one of emstat4, keithley2450'),
    ('driver = "emstat4"\n', '',
     "instruments[0].driver: missing; say which, one of emstat4, keithley2450"),
    ('port = "/dev/ttyUSB0"\n', '', 'instruments[0].port: missing; add e.g. port = "/dev/ttyUSB0"'),
    ('port = "/dev/ttyUSB0"', 'port = "/dev/ttyUSB0"\nspeed = 9600',
     'instruments[0].speed: unknown field (allowed: name, driver, port, baudrate, timeout, description)'),
    ('port = "/dev/ttyUSB0"', 'port = "/dev/ttyUSB0"\nbaudrate = "fast"',
     'instruments[0].baudrate: must be a whole number without quotes, e.g. baudrate = 921600'),
    ('command_set = "2450"', 'command_set = "2410"',
     'instruments[1].command_set: "2410" is not one of 2450, 2400'),
    ('resource = "TCPIP0::192.168.1.50::5025::SOCKET"', 'resource = "192.168.1.50"',
     ('instruments[1].resource: "192.168.1.50" is not a VISA resource name '
     '(e.g. "TCPIP0::192.168.1.50::5025::SOCKET")')),
    ('instrument = "smu-1"', 'instrument = "smu-2"',
     'channels[1].instrument: "smu-2" is not in [[instruments]] (known: es4-a, smu-1)'),
    ('instrument = "smu-1"', 'instrument = "es4-a"',
     ('channels[1].instrument: "es4-a" already drives channels[0]; each instrument has one '
     'channel')),
    ('channel = 1\n', 'channel = 0\n', "channels[1].channel: channel 0 is already in channels[0]"),
    ('channel = 1\n', 'channel = -1\n', "channels[1].channel: must be at least 0 (got -1)"),
    ('channel = 1\n', 'channel = "1"\n',
     'channels[1].channel: must be a whole number without quotes, e.g. channel = 0 (got "1")'),
    ('map = "vaisala_h2o"', 'map = "vaisala"',
     ('sensors[0].map: "vaisala" is not a preset (did you mean "vaisala_h2o"? presets: '
     'vaisala_h2o, narig_o2; or write the map as a table')),
    ('map = "vaisala_h2o"', 'map = 3',
     "sensors[0].map: must be a preset name (vaisala_h2o, narig_o2) or a register table (got 3)"),
    ('type = "float32"', 'type = "floot"',
     "sensors[1].map.registers[0].type: 'floot' is not one of: float32, int16, uint16"),
    ('map = { device_id = 1,', 'map = { device_id = 300,',
     "sensors[1].map.device_id: 300 is not an integer in 0..255"),
    ('host = "192.168.1.40"\n', '',
     ('sensors[0].host: give exactly one of host (Modbus TCP, e.g. host = "192.168.1.40") or '
     'serial_port (Modbus RTU)')),
    ('poll_interval = "10 s"', 'poll_interval = 10',
     'sensors[0].poll_interval: 10 has no unit (expected e.g. "10 s")'),
    ('poll_interval = "10 s"', 'poll_interval = "10 V"',
     'sensors[0].poll_interval: "10 V" is not a time (expected e.g. "10 s")'),
    ('kind = "pressure"', 'kind = "flow"',
     'sensors[2].kind: "flow" is not one of atmosphere, pressure'),
    ('limit = "1.5 bar"', 'limit = "1.5 V"',
     'sensors[2].limit: "1.5 V" is not a pressure (expected e.g. "1.5 bar")'),
    ('limit = "1.5 bar"', 'limit = "-1 bar"',
     'sensors[2].limit: must be greater than zero (got "-1 bar")'),
    ('rate_warning = "50 mbar/h"', 'rate_warning = "50 mbar"',
     'sensors[2].rate_warning: "50 mbar" is not a pressure rate (expected e.g. "50 mbar/h")'),
    ('headspace = "5 mL"\n', '',
     ('sensors[2].headspace: missing; a gas holder needs its headspace volume, e.g. '
     'headspace = "5 mL"')),
    ('channel = 0\nheadspace', 'channel = 5\nheadspace',
     "sensors[2].channel: 5 is not a channel of this station (channels: 0, 1)"),
    ('channel = 0\nheadspace', 'headspace',
     ("sensors[2].headspace: only a gas holder has one: add the channel of its cell "
     "(channel = 0) or remove it")),
    ('port = "/dev/ttyUSB2"', 'port = "/dev/ttyUSB0"',
     ("sensors[2].port: /dev/ttyUSB0 (address 250) is already used by instruments[0]; one "
     "connection per device")),
    ('name = "box-o2"', 'name = "box-h2o"',
     'sensors[1].name: "box-h2o" is already the name of sensors[0]; names must be unique'),
    ('channel = 0\nheadspace', 'address = 251\nchannel = 0\nheadspace',
     "sensors[2].address: must be at most 250 (got 251)"),
    ('o2_max = "0.5 ppm"', 'o2_max = "1"', ('interlocks.o2_max: "1" has no unit (expected e.g. '
     '"1 ppm")')),
    ('o2_max = "0.5 ppm"', 'o2_max = "1 %"',
     'interlocks.o2_max: "1 %": the unit must be one of ppm, ppmv, ppb, ppbv'),
    ('o2_max = "0.5 ppm"', 'o2_max = "0 ppm"',
     'interlocks.o2_max: must be greater than zero (got "0 ppm")'),
    ('hysteresis = "0.1 ppm"', 'hysteresis = "0.5 ppm"',
     ("interlocks.hysteresis: 0.5 ppm must be below the lowest threshold (0.5 ppm), or the alarm "
     "could never clear")),
    ('hold_off = "0 s"', 'hold_off = "-3 s"', ('interlocks.hold_off: must not be negative '
     '(got "-3 s")')),
    ('sensor_timeout = "60 s"', 'sensor_timeout = "5 s"',
     "interlocks.sensor_timeout: 5 s is not longer than sensors[0] (box-h2o) poll_interval 10 s"),
    ('resume_when_clear = false', 'resume_when_clear = "no"',
     ('interlocks.resume_when_clear: must be true or false, e.g. resume_when_clear = true '
     '(got "no")')),
    ('[interlocks]', '[interlock]', ('interlock: unknown field (did you mean "interlocks"? '
     'allowed: name, description, instruments, channels, sensors, interlocks)')),
    ('hold_off = "0 s"', 'hold_off = 0 s',
     ('line 51, column 14: not valid TOML: Expected newline or end of document after a statement '
     '(a value with a unit needs quotes')),
])
def test_every_mistake_names_the_file_the_field_and_what_is_allowed(
        old: str, new: str, message: str) -> None:
    found = problems(edited(old, new))
    assert any(p.startswith(f"lab.toml: {message}") for p in found), found


def test_every_problem_is_reported_at_once() -> None:
    found = problems('name = 3\n[[sensors]]\nkind = "pressure"\nname = "p"\n')
    assert found == [
        'lab.toml: name: must be text in quotes, e.g. name = "glovebox-1" (got 3)',
        "lab.toml: instruments: missing; add at least one [[instruments]] table",
        "lab.toml: channels: missing; add at least one [[channels]] table",
        'lab.toml: sensors[0].port: missing; add e.g. port = "/dev/ttyUSB2"',
    ]


def test_an_unreadable_file_is_a_station_error(tmp_path: Path) -> None:
    with pytest.raises(StationError, match=r"nowhere\.toml: cannot read the file: No such file"):
        load_station(tmp_path / "nowhere.toml")


def test_an_instrument_that_cannot_be_opened_names_its_channel_and_port(tmp_path: Path) -> None:
    path = tmp_path / "st.toml"
    path.write_text('[[instruments]]\nname = "es4-b"\ndriver = "emstat4"\n'
                    'port = "/dev/narig-no-such-port"\n[[channels]]\nchannel = 3\n'
                    'instrument = "es4-b"\n')
    with pytest.raises(StationError) as info:
        load_station(path)
    assert str(info.value).startswith(
        f"{path}: channels[0] (channel 3): cannot open emstat4 'es4-b' at "
        "/dev/narig-no-such-port: ")


# ---------------------------------------------------------------- the simulated station

@pytest.fixture
def two_cells() -> Iterator[tuple[SimulatedStation, VirtualClock]]:
    clock = VirtualClock()
    plan = plan_of(CellSpec(0, "G1", "symmetric", 1.13, GLYME, headspace_mL=5.0),
                   CellSpec(2, "C1", "na_cu", 1.13, CARBONATE))
    station = simulated_station(plan, clock, seed=3, keithley_channels=[2])
    yield station, clock
    station.close()


def test_simulated_station_without_headspace_has_no_gauge() -> None:
    station = simulated_station(plan_of(CellSpec(0, "G1", "symmetric", 1.13, GLYME)),
                                VirtualClock(), seed=1)
    try:
        assert sorted(station.channels) == [0]
        assert station.channel(0).instrument.startswith("EmStat4 es4-ch0 on /dev/")
        assert [(s.name, s.kind) for s in station.sensors] == [
            ("box-h2o", "atmosphere"), ("box-o2", "atmosphere")]
        assert station.interlocks == Interlocks(sensor_timeout_s=120.0)
        assert station.simulated and station.seed == 1
    finally:
        station.close()
        station.close()  # idempotent


def test_simulated_station_builds_an_instrument_per_cell_and_a_gauge_per_holder(
        two_cells: tuple[SimulatedStation, VirtualClock]) -> None:
    station, _ = two_cells
    assert station.channel(0).instrument.startswith("EmStat4 es4-ch0 on /dev/")
    assert station.channel(2).instrument.startswith("Keithley 2450 k2450-ch2 at TCPIP0::127.0.0.1")
    assert [(s.name, s.kind, s.channel) for s in station.sensors] == [
        ("box-h2o", "atmosphere", None), ("box-o2", "atmosphere", None),
        ("keller-ch0", "pressure", 0)]
    gauge = station.holder_sensor(0)
    assert gauge is not None and station.holder_sensor(2) is None
    assert gauge.holder == HolderSpec(5.0, 2e5, pytest.approx(5000 / 3600))
    # one Link (worker thread) per physical connection
    links = [hw.link for hw in station.channels.values()] + [s.link for s in station.sensors]
    assert len({id(link) for link in links}) == 5
    described = json.loads(json.dumps(station.describe()))
    assert described["channels"]["2"].startswith("Keithley 2450")
    assert [s["name"] for s in described["sensors"]] == ["box-h2o", "box-o2", "keller-ch0"]
    assert described["interlocks"]["o2_max_ppm"] == 1.0
    # potentiostat simulators first, in channel order (tests reach them by index)
    assert [type(s).__name__ for s in station.simulators[:2]] == [
        "SimulatedEmStat4", "SimulatedKeithley2450"]


def test_each_instrument_answers_through_its_production_driver(
        two_cells: tuple[SimulatedStation, VirtualClock]) -> None:
    station, _ = two_cells
    es4, smu = station.channel(0), station.channel(2)
    assert es4.link.call_blocking(es4.driver.identify).startswith("es4_lr")
    assert "MODEL 2450" in smu.link.call_blocking(smu.driver.identify)


def test_each_sensor_reads_plausible_values_through_its_production_driver(
        two_cells: tuple[SimulatedStation, VirtualClock]) -> None:
    station, _ = two_cells
    h2o = station.sensor("box-h2o")
    o2 = station.sensor("box-o2")
    gauge = station.sensor("keller-ch0")
    box = h2o.link.call_blocking(h2o.driver.read)
    assert set(box) == {"h2o_ppm", "temperature_K"}
    assert 0.0 <= box["h2o_ppm"] < 1.0 and 290 < box["temperature_K"] < 305
    assert 0.0 <= o2.link.call_blocking(o2.driver.read)["o2_ppm"] < 1.0
    pressure_Pa, temperature_K = gauge.link.call_blocking(gauge.driver.read)
    assert pressure_Pa == pytest.approx(101325, rel=0.01)
    assert temperature_K == pytest.approx(298.15, abs=1.0)


def test_the_keithley_stamps_samples_with_the_station_clock(
        two_cells: tuple[SimulatedStation, VirtualClock]) -> None:
    station, clock = two_cells
    smu = station.channel(2)
    smu.link.call_blocking(smu.driver.start_current, 1e-4, 1.0, 60.0, -1.0, 1.0)
    clock.advance(12.5)
    samples, _ = smu.link.call_blocking(smu.driver.read_samples, 12.5)
    assert samples[-1].t_s == pytest.approx(12.5)


def test_glovebox_events_and_faults_reach_the_simulators() -> None:
    clock = VirtualClock()
    station = simulated_station(
        dummy_plan(), clock, glovebox_events=[Breach(0.0, 5.0, 3600.0, ("h2o",))],
        faults={"box-o2": ModbusFaultProfile(exception=1.0, exception_code=2)})
    try:
        h2o, o2 = station.sensor("box-h2o"), station.sensor("box-o2")
        assert h2o.link.call_blocking(h2o.driver.read)["h2o_ppm"] > 4.0
        with pytest.raises(InstrumentProtocolError, match="Modbus exception 2"):
            o2.link.call_blocking(o2.driver.read)
    finally:
        station.close()


def test_a_cell_without_an_electrolyte_preset_is_a_station_error() -> None:
    plan = plan_of(CellSpec(0, "G1", "symmetric", 1.13, GLYME),
                   CellSpec(1, "X1", "symmetric", 1.13, "molten unobtainium"))
    with pytest.raises(StationError, match=r"^channel 1 \(X1\): "):
        simulated_station(plan, VirtualClock())


def test_faults_for_unknown_names_or_of_the_wrong_kind_are_refused() -> None:
    with pytest.raises(StationError, match="faults: no instrument or sensor named es4-ch9"):
        simulated_station(dummy_plan(), VirtualClock(), faults={"es4-ch9": None})
    with pytest.raises(TypeError, match=r"faults\['keller-ch0'\]: expected a rig.sim.keller"):
        simulated_station(dummy_plan(), VirtualClock(),
                          faults={"keller-ch0": ModbusFaultProfile()})
    with pytest.raises(StationError, match=r"keithley_channels: \[4\] not among"):
        simulated_station(dummy_plan(), VirtualClock(), keithley_channels=[4])


def test_the_served_station_file_round_trips_and_opens_like_hardware(tmp_path: Path) -> None:
    clock = VirtualClock()
    plan = plan_of(CellSpec(0, "G1", "symmetric", 1.13, GLYME, headspace_mL=4.0),
                   CellSpec(1, "G2", "symmetric", 1.13, GLYME))
    sims = SimulatedInstruments(builtin_station_data(plan, keithley_channels=[1]), plan, clock)
    try:
        assert tomllib.loads(sims.text) == sims.data
        path = tmp_path / "served.toml"
        path.write_text(sims.text)
        station = load_station(path, clock)
        try:
            assert not station.simulated and station.name == "simulated"
            gauge = station.sensor("keller-ch0")
            assert gauge.holder is not None and gauge.holder.headspace_mL == 4.0
            assert gauge.link.call_blocking(gauge.driver.read)[0] == pytest.approx(101325, rel=0.01)
        finally:
            station.close()
    finally:
        sims.close()


def test_dumps_toml_writes_inline_tables_and_special_floats() -> None:
    data = {"a": 1.5, "b": float("inf"), "c": [1, 2], "t": [{"m": {"x": "q\"uote", "r": [{}]}}],
            "s": {"k": True}}
    assert tomllib.loads(dumps_toml(data)) == data


# ---------------------------------------------------------------- rig station check

def test_check_reports_each_failure_with_port_expectation_and_error() -> None:
    with closed_port() as smu_port, closed_port() as box_port:
        check_each_failure(smu_port, box_port)


def check_each_failure(smu_port: int, box_port: int) -> None:
    text = (f'[[instruments]]\nname = "es4-x"\ndriver = "emstat4"\nport = "/dev/narig-none"\n'
            f'[[instruments]]\nname = "smu-x"\ndriver = "keithley2450"\n'
            f'resource = "TCPIP0::127.0.0.1::{smu_port}::SOCKET"\n'
            f'[[channels]]\nchannel = 0\ninstrument = "es4-x"\n'
            f'[[sensors]]\nname = "box-x"\nkind = "atmosphere"\nhost = "127.0.0.1"\n'
            f'port = {box_port}\nmap = "narig_o2"\n')
    results = check_station(parse_station(text, "x.toml"), RealClock())
    assert [(r.name, r.ok) for r in results] == [
        ("es4-x", False), ("smu-x", False), ("box-x", False)]
    es4 = results[0]
    assert es4.address == "/dev/narig-none"
    assert es4.expected == "an EmStat4 answering MethodSCRIPT at 921600 baud"
    assert "cannot open /dev/narig-none" in es4.error
    assert "cannot open TCPIP0::127.0.0.1" in results[1].error
    assert "cannot connect" in results[2].error


def test_rig_station_check_on_the_simulated_station_exits_0_and_lists_every_instrument() -> None:
    done = rig("station", "check")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for name, reading in (("es4-ch0", "OCP"), ("k2450-ch1", "MODEL 2450"), ("box-h2o", "H2O"),
                          ("box-o2", "O2"), ("keller-ch0", "bar")):
        row = next(line for line in lines if line.startswith(name))
        assert reading in row and row.endswith("OK"), row
    assert "5 of 5 OK" in done.stdout


def test_rig_station_check_exits_3_naming_what_failed(tmp_path: Path) -> None:
    path = tmp_path / "st.toml"
    path.write_text('[[instruments]]\nname = "es4-x"\ndriver = "emstat4"\n'
                    'port = "/dev/narig-none"\n[[channels]]\nchannel = 0\ninstrument = "es4-x"\n')
    done = rig("station", "check", str(path))
    assert done.returncode == 3, done.stdout + done.stderr
    assert "FAIL es4-x (emstat4 at /dev/narig-none):" in done.stdout
    assert "expected an EmStat4 answering MethodSCRIPT" in done.stdout


def test_a_bad_station_file_exits_2_with_one_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(edited('driver = "emstat4"', 'driver = "emstat3"'))
    done = rig("station", "check", str(path))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip() == (
        f'rig: {path}: instruments[0].driver: "emstat3" is not one of emstat4, keithley2450')
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------- rig sim serve

def test_sim_serve_points_a_station_file_at_its_instruments_until_terminated(
        tmp_path: Path) -> None:
    out = tmp_path / "st.toml"
    server = subprocess.Popen(
        [sys.executable, "-m", "rig.cli", "sim", "serve", "--out", str(out), "--clock", "x10"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not out.exists():
            assert server.poll() is None, server.communicate()
            assert time.monotonic() < deadline, "sim serve wrote no station file"
            time.sleep(0.05)
        check = rig("station", "check", str(out))
        assert check.returncode == 0, check.stdout + check.stderr
        assert "5 of 5 OK" in check.stdout
    finally:
        server.send_signal(signal.SIGTERM)
        stdout, stderr = server.communicate(timeout=20)
    assert server.returncode == 0, stderr
    assert tomllib.loads(stdout) == tomllib.loads(out.read_text())  # it printed the same file
    assert stderr.rstrip().endswith("rig sim serve: stopped")
    assert "Traceback" not in stderr


def test_sim_serve_refuses_a_virtual_clock() -> None:
    done = rig("sim", "serve", "--clock", "virtual")
    assert done.returncode == 2 and "--clock must be real or xN" in done.stderr
