"""The station: which instrument drives which channel, which sensors watch the cells, and the
interlock thresholds; read from a station file (TOML) and opened, ready for the engine.

One module per job:

- ``schema``: the file (pydantic models, checks across tables); ``parse_station(text, source)``
  and ``read_station_file(path)`` report every problem as ``<file>: <field.path>: <message>``.
- ``opening``: ``open_station(config, clock)`` / ``load_station(path, clock)``: drivers on their
  transports, one Link per connection, as the ``Station`` the engine runs on.
- ``check``: ``check_station(config)`` opens, identifies and reads every instrument and sensor
  once, for ``rig station check``.
- ``lock``: one run per instrument across processes (``load_station(..., run_id=...)``); a
  channel a live run holds is refused naming that run; a dead holder never blocks.

The built-in simulated station is built by ``rig.sim.station`` (which depends on this package,
never the reverse). The file format is docs/station.md.
"""

from rig.station.check import CheckResult, check_station, format_check
from rig.station.lock import InstrumentInUse, InstrumentLocks, lock_station
from rig.station.opening import (
    ChannelHardware,
    HolderSpec,
    Interlocks,
    SensorHardware,
    Station,
    describe_instrument,
    holder_of,
    interlocks_of,
    load_station,
    open_instrument,
    open_sensor,
    open_station,
    station_ranges,
)
from rig.station.schema import (
    DRIVERS,
    PPM_UNITS,
    PRESSURE,
    PRESSURE_RATE,
    SENSOR_KINDS,
    STATION,
    AtmosphereEntry,
    ChannelEntry,
    EmStat4Entry,
    InterlocksEntry,
    Keithley2450Entry,
    PressureEntry,
    StationError,
    StationFile,
    address_of,
    connection_key,
    entries_of,
    parse_ppm,
    parse_station,
    read_station_file,
    sensor_wanted,
    validate_station,
)

__all__ = [
    "DRIVERS", "PPM_UNITS", "PRESSURE", "PRESSURE_RATE", "SENSOR_KINDS", "STATION",
    "AtmosphereEntry", "ChannelEntry", "ChannelHardware", "CheckResult", "EmStat4Entry",
    "HolderSpec", "InstrumentInUse", "InstrumentLocks", "Interlocks", "InterlocksEntry",
    "Keithley2450Entry", "PressureEntry", "SensorHardware", "Station", "StationError",
    "StationFile", "address_of", "check_station", "connection_key", "describe_instrument",
    "entries_of", "format_check", "holder_of", "interlocks_of", "load_station", "lock_station",
    "open_instrument", "open_sensor", "open_station", "parse_ppm", "parse_station",
    "read_station_file", "sensor_wanted", "station_ranges", "validate_station",
]
