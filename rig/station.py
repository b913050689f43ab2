"""The station: which instrument drives which channel, opened and ready.

With no station file the rig builds the simulated station: for each cell of the protocol a
simulated Na cell (its electrolyte picks the preset) inside a simulated EmStat4 serving
MethodSCRIPT on a pseudo-terminal, driven by the production driver. There is no shortcut path:
simulated channels go through the same bytes as hardware.
"""

from __future__ import annotations

import tomllib
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.base import InstrumentError, Potentiostat
from drivers.emstat import EmStat4
from protocols.plan import Plan
from rig.clock import RealClock, VirtualClock
from rig.engine.link import Link


class StationError(Exception):
    """A station file or an instrument that cannot be used; the message says which and why."""


@dataclass
class ChannelHardware:
    driver: Potentiostat
    link: Link
    instrument: str


@dataclass
class Station:
    name: str
    simulated: bool
    channels: dict[int, ChannelHardware] = field(default_factory=dict)
    simulators: list[Any] = field(default_factory=list)
    seed: int | None = None  # of the simulated cells, so a resumed run rebuilds the same ones

    def channel(self, n: int) -> ChannelHardware:
        if n not in self.channels:
            raise StationError(f"station {self.name!r} has no channel {n} "
                               f"(it has {sorted(self.channels)})")
        return self.channels[n]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "simulated": self.simulated, "seed": self.seed,
                "channels": {str(k): v.instrument for k, v in self.channels.items()}}

    def clock_name(self, clock: RealClock | VirtualClock) -> str:
        if clock.is_virtual:
            return "virtual"
        return "real" if clock.speed == 1 else f"x{clock.speed:g}"

    def close(self) -> None:
        """Outputs off (best effort, each channel on its own thread), then transports."""
        for hw in self.channels.values():
            try:
                hw.link.call_blocking(hw.driver.close)
            except (InstrumentError, OSError, TimeoutError):
                pass
            hw.link.close()
        for sim in self.simulators:
            sim.close()


def cell_seed(station_seed: int, cell_id: str) -> int:
    """Each simulated cell's seed: stable across runs, different between cells."""
    return zlib.crc32(f"{station_seed}:{cell_id}".encode())


def simulated_station(plan: Plan, clock: RealClock | VirtualClock, seed: int = 0) -> Station:
    """One simulated EmStat4 + Na cell per cell of the plan."""
    from rig.sim.cell import NaCell, electrolyte_for
    from rig.sim.emstat import SimulatedEmStat4

    station = Station(name="simulated", simulated=True, seed=seed)
    try:
        for cp in plan.channels:
            spec = cp.cell
            try:
                electrolyte = electrolyte_for(spec.electrolyte)
            except ValueError as exc:
                raise StationError(f"channel {spec.channel} ({spec.cell_id}): {exc}") from None
            cell = NaCell(spec.cell_type, spec.area_cm2, electrolyte,
                          seed=cell_seed(seed, spec.cell_id))
            sim = SimulatedEmStat4(cell, clock, serial_number=f"ES4SIM{spec.channel:04d}")
            sim.start()
            station.simulators.append(sim)
            driver = EmStat4(sim.port)
            station.channels[spec.channel] = ChannelHardware(
                driver, Link(f"ch{spec.channel}"),
                f"simulated EmStat4 {sim.serial_number} on {sim.port} ({electrolyte.name})")
    except BaseException:
        station.close()
        raise
    return station


def load_station(path: str | Path) -> Station:
    """A station file: instruments with their transports, and which drives which channel.

    ```toml
    name = "glovebox-1"
    [[instruments]]
    name = "es4-a"
    driver = "emstat4"
    port = "/dev/ttyUSB0"
    [[channels]]
    channel = 0
    instrument = "es4-a"
    ```
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise StationError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise StationError(f"{path}: not valid TOML: {exc}") from None
    instruments = {}
    for k, inst in enumerate(data.get("instruments", [])):
        where = f"{path}: instruments[{k}]"
        if inst.get("driver") != "emstat4":
            raise StationError(f"{where}.driver: {inst.get('driver')!r} is not one of: emstat4")
        if not isinstance(inst.get("port"), str) or not isinstance(inst.get("name"), str):
            raise StationError(f"{where}: needs a name and a port (e.g. \"/dev/ttyUSB0\")")
        instruments[inst["name"]] = inst
    station = Station(name=str(data.get("name", path.stem)), simulated=False)
    try:
        for k, ch in enumerate(data.get("channels", [])):
            where = f"{path}: channels[{k}]"
            inst = instruments.get(ch.get("instrument"))
            if inst is None or not isinstance(ch.get("channel"), int):
                raise StationError(f"{where}: needs an integer channel and an instrument named in "
                                   f"[[instruments]] (known: {', '.join(instruments) or 'none'})")
            try:
                driver = EmStat4(inst["port"], baudrate=int(inst.get("baudrate", 921600)))
            except InstrumentError as exc:
                raise StationError(f"{where}: cannot open {inst['port']}: {exc}") from None
            station.channels[ch["channel"]] = ChannelHardware(
                driver, Link(f"ch{ch['channel']}"), f"EmStat4 {inst['name']} on {inst['port']}")
    except BaseException:
        station.close()
        raise
    return station
