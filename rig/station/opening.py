"""Opening a station: the drivers of a station file's instruments and sensors on their transports,
one ``Link`` (worker thread) per connection, as the ``Station`` the engine runs on.

    station = load_station("glovebox-1.toml", clock)
    hw = station.channel(0)           # .driver (a Potentiostat), .link, .instrument
    for s in station.sensors: ...      # SensorHardware: atmosphere or pressure, with its Link
    station.interlocks.o2_max_ppm      # 1.0
    station.close()                    # outputs off, transports closed
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from drivers.base import InstrumentError, Potentiostat, Ranges
from rig.clock import RealClock, VirtualClock
from rig.engine.interlocks import AtmosphereLimits as Interlocks
from rig.engine.link import Link
from rig.station.lock import lock_station
from rig.station.schema import (
    DEFAULT_HOST_WATCHDOG_S,
    AtmosphereEntry,
    EmStat4Entry,
    InterlocksEntry,
    Keithley2450Entry,
    PressureEntry,
    StationError,
    StationFile,
    address_of,
    read_station_file,
    sensor_wanted,
)

Clock = RealClock | VirtualClock


# ---- the opened station ------------------------------------------------------------------------
@dataclass(frozen=True)
class HolderSpec:
    """The sealed gas holder a pressure gauge measures: its headspace and limits (SI)."""

    headspace_mL: float
    limit_Pa: float = 2e5  # absolute; above it the engine aborts that cell
    rate_warning_Pa_per_s: float | None = None  # a faster rise is logged as a warning


@dataclass
class ChannelHardware:
    driver: Potentiostat
    link: Link
    instrument: str  # a description for people and the store: driver, name, address


@dataclass
class SensorHardware:
    """A station sensor: ``driver.read()`` gives ``{'o2_ppm'|'h2o_ppm'|'temperature_K': ..}``
    (atmosphere) or ``(pressure Pa, temperature K)`` (pressure); call it through ``link``."""

    name: str
    kind: Literal["atmosphere", "pressure"]
    driver: Any  # drivers.base.AtmosphereSensor or PressureGauge
    link: Link
    poll_interval_s: float
    channel: int | None = None  # the cell whose gas holder a pressure gauge measures
    holder: HolderSpec | None = None
    address: str = ""


@dataclass
class Station:
    name: str
    simulated: bool
    channels: dict[int, ChannelHardware] = field(default_factory=dict)
    sensors: list[SensorHardware] = field(default_factory=list)
    interlocks: Interlocks = field(default_factory=Interlocks)
    config: StationFile | None = None
    source: str | None = None  # the station file it came from (so `rig resume` can reopen it)
    # what else the station owns, closed after its drivers, last added first: the simulators
    # of a simulated station (rig.sim.station), the instrument locks of a run (lock.py)
    closers: list[Callable[[], None]] = field(default_factory=list)
    _closed: bool = field(default=False, init=False, repr=False)

    def channel(self, n: int) -> ChannelHardware:
        if n not in self.channels:
            raise StationError(f"station {self.name!r} has no channel {n} "
                               f"(it has {sorted(self.channels)})")
        return self.channels[n]

    def sensor(self, name: str) -> SensorHardware:
        for s in self.sensors:
            if s.name == name:
                return s
        raise StationError(f"station {self.name!r} has no sensor {name!r} "
                           f"(it has {', '.join(s.name for s in self.sensors) or 'none'})")

    def holder_sensor(self, channel: int) -> SensorHardware | None:
        """The pressure gauge of a channel's gas holder, if it has one."""
        return next((s for s in self.sensors if s.channel == channel), None)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "simulated": self.simulated, "source": self.source,
                "channels": {str(k): v.instrument for k, v in self.channels.items()},
                "sensors": [{"name": s.name, "kind": s.kind, "address": s.address,
                             "channel": s.channel, "poll_interval_s": s.poll_interval_s,
                             "holder": dataclasses.asdict(s.holder) if s.holder else None}
                            for s in self.sensors],
                "interlocks": dataclasses.asdict(self.interlocks)}

    def clock_name(self, clock: Clock) -> str:
        if isinstance(clock, VirtualClock):
            return "virtual"
        return "real" if clock.speed == 1 else f"x{clock.speed:g}"

    def close(self) -> None:
        """Outputs off (best effort, each on its own connection's thread), then transports,
        then what the station owns (``closers``, last first). Idempotent."""
        if self._closed:
            return
        self._closed = True
        connections: list[ChannelHardware | SensorHardware] = [*self.channels.values(),
                                                                *self.sensors]
        for hw in connections:
            try:
                hw.link.call_blocking(hw.driver.close)
            except (InstrumentError, OSError, TimeoutError, RuntimeError):
                pass
            hw.link.close()
        for close in reversed(self.closers):
            close()


# ---- opening drivers -----------------------------------------------------------------------------
def open_instrument(entry: EmStat4Entry | Keithley2450Entry, clock: Clock, *,
                    host_watchdog_s: float | None = DEFAULT_HOST_WATCHDOG_S) -> Potentiostat:
    """The driver of one [[instruments]] entry, connected (raises InstrumentError);
    ``host_watchdog_s``: without word from the rig its output goes off within this long
    (None: no watchdog, for instruments that cannot outlive this process)."""
    timeout = _timeout_of(entry)
    if isinstance(entry, EmStat4Entry):
        from drivers.emstat import EmStat4

        return EmStat4(entry.port, baudrate=entry.baudrate, host_watchdog_s=host_watchdog_s,
                       now=clock.now, **timeout)
    from drivers.keithley2450 import HOST_SLACK_S, Keithley2450

    # a served simulator on an xN clock counts N of its seconds for each of the host's: a host
    # stalled 1 s of wall time reads N s late in the watchdog's time, and must not trip it
    speed = clock.speed if isinstance(clock, RealClock) else 1.0
    return Keithley2450(entry.resource, command_set=entry.command_set, now=clock.now,
                        host_watchdog_s=host_watchdog_s, host_slack_s=HOST_SLACK_S * speed,
                        **timeout)


def _timeout_of(entry: Any) -> dict[str, Any]:
    """The entry's ``timeout`` as the drivers' keyword, or nothing (the driver's default)."""
    return {} if entry.timeout is None else {"timeout_s": entry.timeout}


def open_sensor(entry: AtmosphereEntry | PressureEntry) -> Any:
    """The driver of one [[sensors]] entry (an AtmosphereSensor or a PressureGauge)."""
    timeout = _timeout_of(entry)
    if isinstance(entry, AtmosphereEntry):
        from drivers.modbus_atmosphere import ModbusAtmosphereSensor

        if entry.host is not None:
            return ModbusAtmosphereSensor(entry.map, host=entry.host, port=entry.port, **timeout)
        return ModbusAtmosphereSensor(entry.map, serial_port=entry.serial_port,
                                      baudrate=entry.baudrate, **timeout)
    from drivers.keller import KellerGauge

    return KellerGauge(entry.port, address=entry.address, baudrate=entry.baudrate, **timeout)


def describe_instrument(entry: EmStat4Entry | Keithley2450Entry) -> str:
    """``EmStat4 es4-a on /dev/ttyUSB0`` (+ the entry's description)."""
    if isinstance(entry, EmStat4Entry):
        text = f"EmStat4 {entry.name} on {entry.port}"
    else:
        text = f"Keithley {entry.command_set} {entry.name} at {entry.resource}"
    return f"{text} ({entry.description})" if entry.description else text


def station_ranges(path: str | Path) -> dict[int, tuple[str, Ranges]]:
    """Channel -> (instrument, its ranges), read from a station file without opening anything
    (what `rig validate --station` checks a plan against)."""
    from drivers.emstat import EMSTAT4_LR_RANGES, within_watchdog
    from drivers.keithley2450 import Keithley2450

    config = read_station_file(path)
    emstat = within_watchdog(EMSTAT4_LR_RANGES, config.interlocks.host_watchdog)
    out = {}
    for ch in config.channels:
        entry = config.instrument(ch.instrument)
        ranges = emstat if isinstance(entry, EmStat4Entry) else Keithley2450.ranges
        out[ch.channel] = (describe_instrument(entry), ranges)
    return out


def holder_of(entry: PressureEntry) -> HolderSpec | None:
    if entry.channel is None or entry.headspace is None:
        return None
    return HolderSpec(entry.headspace, entry.limit if entry.limit is not None else 2e5,
                      entry.rate_warning)


def interlocks_of(entry: InterlocksEntry) -> Interlocks:
    return Interlocks(entry.o2_max, entry.h2o_max, entry.hysteresis, entry.hold_off,
                      entry.clear_for, entry.sensor_timeout, entry.resume_when_clear)


def open_station(config: StationFile, clock: Clock, *, source: str | None = None,
                 simulated: bool = False, channels: Collection[int] | None = None,
                 into: Station | None = None, host_watchdog: bool = True) -> Station:
    """Open the drivers of a validated station file: every channel, or only ``channels`` (those
    the file has; a missing one is the caller's to report), and every sensor except the gas
    holders of channels not opened. ``into``: an empty Station to fill (rig.sim builds its own
    kind); by default a hardware Station named after the file. On failure everything opened so
    far (and ``into``'s closers) is closed. ``host_watchdog=False``: arm no host watchdog
    (rig.sim's in-process simulators stop with this process, so there is nothing to bound, and
    chunked scripts would only cost time)."""
    station = into if into is not None else Station(
        name=config.name or "station", simulated=simulated,
        interlocks=interlocks_of(config.interlocks), config=config)
    wanted = None if channels is None else set(channels)
    prefix = f"{source}: " if source else ""
    try:
        for k, ch in enumerate(config.channels):
            if wanted is not None and ch.channel not in wanted:
                continue
            entry = config.instrument(ch.instrument)
            try:
                watchdog_s = config.interlocks.host_watchdog if host_watchdog else None
                driver = open_instrument(entry, clock, host_watchdog_s=watchdog_s)
            except (InstrumentError, OSError, ValueError) as exc:
                raise StationError(f"{prefix}channels[{k}] (channel {ch.channel}): cannot open "
                                   f"{entry.driver} {entry.name!r} at {address_of(entry)}: {exc}"
                                   ) from None
            station.channels[ch.channel] = ChannelHardware(driver, Link(entry.name),
                                                           describe_instrument(entry))
        for k, s in enumerate(config.sensors):
            if not sensor_wanted(s, wanted):
                continue
            try:
                driver = open_sensor(s)
            except (InstrumentError, OSError, ValueError) as exc:
                raise StationError(f"{prefix}sensors[{k}] ({s.name}): cannot open {s.kind} "
                                   f"sensor at {address_of(s)}: {exc}") from None
            station.sensors.append(SensorHardware(
                s.name, s.kind, driver, Link(s.name), s.poll_interval,
                s.channel if isinstance(s, PressureEntry) else None,
                holder_of(s) if isinstance(s, PressureEntry) else None, address_of(s)))
    except BaseException:
        station.close()
        raise
    return station


def load_station(path: str | Path, clock: Clock | None = None, *,
                 channels: Collection[int] | None = None, run_id: str | None = None) -> Station:
    """A station file, validated and opened (only ``channels``, if given: see open_station).
    ``clock`` stamps readings of drivers that take one (the Keithley); default a RealClock.
    With ``run_id``, what the run uses is locked for it first (rig.station.lock: refused with
    InstrumentInUse if a live run holds any of it) and released when the station closes.
    Raises StationError."""
    config = read_station_file(path)
    locks = lock_station(config, channels, run_id, source=str(path)) if run_id else None
    try:
        station = open_station(config, clock if clock is not None else RealClock(),
                               source=str(path), channels=channels)
    except BaseException:
        if locks is not None:
            locks.release()
        raise
    if locks is not None:
        station.closers.append(locks.release)  # after the outputs are off
        _switch_off_what_a_dead_holder_left(station, str(path))
    station.source = str(Path(path).resolve())
    return station


def _switch_off_what_a_dead_holder_left(station: Station, source: str) -> None:
    """A free lock means any earlier holder is dead, and its engine may have left a script
    running or an output on (a crash, SIGKILL): switch each channel off before the run starts."""
    for n, hw in station.channels.items():
        try:
            hw.link.call_blocking(hw.driver.output_off)
        except (InstrumentError, OSError, TimeoutError) as exc:
            station.close()
            raise StationError(f"{source}: channel {n} ({hw.instrument}): cannot switch its "
                               f"output off before the run: {exc}") from None
