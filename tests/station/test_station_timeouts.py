"""A station file's ``timeout`` reaches every driver, bad values are refused with one line, and
the simulated station on a virtual clock does not make its drivers wait the hardware seconds
for a reply its simulators have lost (a fault soak would take hours: the virtual clock stands
still while a reply is awaited)."""

from __future__ import annotations

import pytest

from protocols.plan import CellSpec, ChannelPlan, Plan, Safety
from rig.clock import RealClock, VirtualClock
from rig.sim.station import simulated_station
from rig.station import StationError, parse_station

EMSTAT_STATION = """
[[instruments]]
name = "es4-a"
driver = "emstat4"
port = "/dev/ttyUSB0"
timeout = "{timeout}"

[[channels]]
channel = 0
instrument = "es4-a"
"""


def two_cells() -> Plan:
    cells = (CellSpec(0, "T0", "symmetric", 1.13, "1 M NaPF6 in diglyme", headspace_mL=5.0),
             CellSpec(1, "T1", "symmetric", 1.13, "1 M NaPF6 in diglyme"))
    return Plan("sequence", "timeouts", Safety(-1.0, 1.0, 0.01),
                tuple(ChannelPlan(c, ()) for c in cells))


def driver_timeouts(clock, every: str | None = None) -> dict[str, float]:
    """Each driver's reply timeout on the simulated station for two cells (one on a Keithley),
    with ``every`` instrument and sensor given that ``timeout`` in the station file."""
    station = simulated_station(two_cells(), clock, 1, keithley_channels={1}, timeouts=(
        None if every is None else {"instruments": every, "sensors": every}))
    try:
        names = {c.channel: c.instrument for c in station.config.channels}
        out = {names[n]: hw.driver.timeout_s for n, hw in station.channels.items()}
        out.update({s.name: s.driver.timeout_s for s in station.sensors})
    finally:
        station.close()
    return out


def test_every_instrument_and_sensor_driver_waits_the_timeout_its_station_file_sets():
    assert driver_timeouts(VirtualClock(), every="300 ms") == {
        "es4-ch0": 0.3, "k2450-ch1": 0.3, "box-h2o": 0.3, "box-o2": 0.3, "keller-ch0": 0.3}


def test_a_simulated_station_on_a_virtual_clock_waits_a_fraction_of_a_second_for_a_lost_reply():
    assert driver_timeouts(VirtualClock()) == {
        "es4-ch0": 0.25, "k2450-ch1": 0.25, "box-h2o": 0.05, "box-o2": 0.05, "keller-ch0": 0.05}


def test_a_simulated_station_on_a_real_clock_keeps_the_drivers_hardware_timeouts():
    # on a real clock a package is produced by the simulator's own pump thread, on time but not
    # ahead of time: the drivers keep the waits they would have with the instruments
    assert driver_timeouts(RealClock(speed=60)) == {
        "es4-ch0": 2.0, "k2450-ch1": 2.0, "box-h2o": 1.0, "box-o2": 1.0, "keller-ch0": 0.5}


@pytest.mark.parametrize("timeout, says", [("5 min", "60"), ("0 s", "timeout"),
                                           ("2", "unit"), ("-1 s", "timeout")])
def test_a_timeout_out_of_bounds_or_without_a_unit_is_refused_naming_the_field(timeout, says):
    with pytest.raises(StationError) as err:
        parse_station(EMSTAT_STATION.format(timeout=timeout), "glovebox.toml")
    message = str(err.value)
    assert message.startswith("glovebox.toml: instruments[0].timeout")
    assert says in message and "\n" not in message and "Traceback" not in message


def test_a_station_file_without_timeouts_still_validates():
    config = parse_station(EMSTAT_STATION.replace('timeout = "{timeout}"\n', ""), "g.toml")
    assert config.instruments[0].timeout is None
