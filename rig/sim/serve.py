"""Simulated instruments for a station file, in-process or served to another process.

``SimulatedInstruments(data, plan, clock, seed)`` takes a station file's data (the parsed TOML
of a real station, or ``builtin_station_data(plan)``) and starts one simulator per entry, each
serving its device's real protocol on a real transport:

============  ======================================  ========================================
entry         simulator                               the file then points at
============  ======================================  ========================================
emstat4       SimulatedEmStat4 + the channel's cell   ``port`` = its pseudo-terminal
keithley2450  SimulatedKeithley2450 + the cell        ``resource`` = TCPIP0::127.0.0.1::P::SOCKET
atmosphere    SimulatedModbusSensor on one shared     ``host = "127.0.0.1"``, ``port`` (an RTU
              GloveboxModel                           entry is served as Modbus TCP)
pressure      SimulatedKeller + a GasHolder over the  ``port`` = its pseudo-terminal
              channel's cell
============  ======================================  ========================================

The cell of channel N is built from the plan's cell on channel N (its electrolyte picks the
preset; its seed is ``cell_seed(seed, cell_id)``), or a glyme Na||Na cell when the plan has none
there. ``.data`` / ``.text`` are the station file rewritten to point at the simulators;
``.config`` is it validated. ``close()`` stops everything.

``serve(...)`` is `rig sim serve`: the same on a RealClock (``--clock xN`` to accelerate),
printing the station file and serving until SIGINT/SIGTERM.
"""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import sys
import threading
import time
import zlib
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from protocols.plan import CellSpec, Plan
from rig.clock import RealClock, VirtualClock
from rig.station import (
    AtmosphereEntry,
    EmStat4Entry,
    Keithley2450Entry,
    PressureEntry,
    StationError,
    StationFile,
    validate_station,
)

Clock = RealClock | VirtualClock
HOLDER_LIMIT = "2 bar"  # absolute: a built-in holder's limit
DEFAULT_HEADSPACE_ML = 5.0  # a holder whose cell the plan does not describe
# Drivers wait this long (wall time) for a simulator's reply when the clock is virtual, unless
# the station file sets its own ``timeout``. A simulator on a pty or loopback socket answers in
# well under a millisecond, and on a virtual clock its data is on the wire before the reader
# wakes, so the hardware defaults (0.5-2 s) only make each lost reply hold the whole run still
# that long (the clock waits for every request in flight). A reply that is late all the same
# (a loaded machine) is a timeout the driver retries and the rig logs, like any other. Sensors
# wait less: a failed poll only costs a reading, and a gauge polled every 30 s sees most faults.
VIRTUAL_CLOCK_TIMEOUT = {"instruments": "0.25 s", "sensors": "0.05 s"}


def builtin_station_data(plan: Plan, *, keithley_channels: Collection[int] = ()) -> dict[str, Any]:
    """The station file (as TOML data) of the built-in simulated station for ``plan``.

    Per cell: ``es4-chN`` (emstat4) or, for channels in ``keithley_channels``, ``k2450-chN``
    (keithley2450); ``keller-chN`` (pressure, limit 2 bar) when the cell has a headspace; and
    for the station ``box-h2o`` (vaisala_h2o) and ``box-o2`` (narig_o2). Addresses are
    placeholders until ``SimulatedInstruments`` points them at its simulators.
    """
    keithley = set(keithley_channels)
    unknown = keithley - {cp.cell.channel for cp in plan.channels}
    if unknown:
        raise StationError(f"keithley_channels: {sorted(unknown)} not among the plan's channels "
                           f"{sorted(cp.cell.channel for cp in plan.channels)}")
    instruments, channels, gauges = [], [], []
    for cp in plan.channels:
        n = cp.cell.channel
        if n in keithley:
            name = f"k2450-ch{n}"
            instruments.append({"name": name, "driver": "keithley2450",
                                "resource": f"TCPIP0::({name})::5025::SOCKET"})
        else:
            name = f"es4-ch{n}"
            instruments.append({"name": name, "driver": "emstat4", "port": f"({name})"})
        channels.append({"channel": n, "instrument": name})
        if cp.cell.headspace_mL is not None:
            gauges.append({"name": f"keller-ch{n}", "kind": "pressure", "port": f"(keller-ch{n})",
                           "address": 1, "channel": n,
                           "headspace": f"{cp.cell.headspace_mL:.6g} mL",
                           "limit": HOLDER_LIMIT, "rate_warning": "50 mbar/h",
                           "poll_interval": "30 s"})
    sensors = [{"name": "box-h2o", "kind": "atmosphere", "host": "127.0.0.1", "port": 502,
                "map": "vaisala_h2o", "poll_interval": "30 s"},
               {"name": "box-o2", "kind": "atmosphere", "host": "127.0.0.1", "port": 503,
                "map": "narig_o2", "poll_interval": "30 s"}, *gauges]
    return {"name": "simulated",
            "description": "the built-in simulated station (rig.sim.serve.builtin_station_data)",
            "instruments": instruments, "channels": channels, "sensors": sensors,
            "interlocks": {"o2_max": "1 ppm", "h2o_max": "1 ppm", "hysteresis": "0.2 ppm",
                           "hold_off": "30 s", "clear_for": "10 min",
                           "sensor_timeout": "2 min", "resume_when_clear": True,
                           "host_watchdog": "60 s"}}


def cell_seed(station_seed: int, cell_id: str) -> int:
    """Each simulated cell's seed: stable across runs, different between cells."""
    return zlib.crc32(f"{station_seed}:{cell_id}".encode())


class _SealedVolume:
    """The gas source of a holder with no cell: nothing is ever made."""

    gas_mol = 0.0
    temperature_K = 298.15


class SimulatedInstruments:
    """One simulator per entry of a station file (module docstring); ``close()`` stops them."""

    def __init__(self, data: dict[str, Any], plan: Plan | None, clock: Clock, seed: int = 0, *,
                 glovebox_events: Sequence[Any] = (), faults: dict[str, Any] | None = None,
                 source: str = "<station>") -> None:
        config = validate_station(data, source)
        faults = dict(faults or {})
        names = {e.name for e in [*config.instruments, *config.sensors]}
        unknown = set(faults) - names
        if unknown:
            raise StationError(f"faults: no instrument or sensor named {', '.join(sorted(unknown))}"
                               f" (known: {', '.join(sorted(names))})")
        self.clock, self.seed, self.plan = clock, seed, plan
        self._faults = faults
        self._specs = {cp.cell.channel: cp.cell for cp in plan.channels} if plan else {}
        self._channel_of = {c.instrument: c.channel for c in config.channels}
        self._dummies: dict[int, float] = {}  # channel -> ohm, for channels wired to a resistor
        for c in config.channels:
            if c.dummy_resistor is not None:
                self._dummies[c.channel] = c.dummy_resistor
        self.cells: dict[int, Any] = {}
        self.holders: dict[int, Any] = {}
        self.by_name: dict[str, Any] = {}
        self.simulators: list[Any] = []  # potentiostats in channel order first, then sensors
        self.glovebox: Any = None
        self.data = copy.deepcopy(data)
        try:
            self._start(config, glovebox_events)
            self.config = validate_station(self.data, source)
        except BaseException:
            self.close()
            raise

    @property
    def text(self) -> str:
        return dumps_toml(self.data)

    def close(self) -> None:
        for sim in reversed(self.simulators):
            sim.close()

    # --- building
    def _start(self, config: StationFile, glovebox_events: Sequence[Any]) -> None:
        order = {c.instrument: c.channel for c in config.channels}
        instruments = sorted(enumerate(config.instruments),
                             key=lambda ke: (ke[1].name not in order, order.get(ke[1].name, 0)))
        for k, entry in instruments:
            self._add(entry.name, self._instrument(entry, self.data["instruments"][k]))
            self._timeout(self.data["instruments"][k], "instruments")
        for k, sensor in enumerate(config.sensors):
            table = self.data.setdefault("sensors", [])[k]
            self._timeout(table, "sensors")
            sim = (self._atmosphere(sensor, table, glovebox_events)
                   if isinstance(sensor, AtmosphereEntry) else self._pressure(sensor, table))
            self._add(sensor.name, sim)

    def _timeout(self, table: dict[str, Any], kind: str) -> None:
        if self.clock.is_virtual:
            table.setdefault("timeout", VIRTUAL_CLOCK_TIMEOUT[kind])

    def _add(self, name: str, sim: Any) -> None:
        self.simulators.append(sim)
        self.by_name[name] = sim

    def _fault(self, name: str, expected: type) -> Any:
        fault = self._faults.get(name)
        if fault is not None and not isinstance(fault, expected):
            raise TypeError(f"faults[{name!r}]: expected a {expected.__module__}."
                            f"{expected.__qualname__}, got {type(fault).__name__}")
        return fault

    def cell(self, channel: int) -> Any:
        """The simulated cell of a channel (built on first use, shared by its instruments)."""
        if channel not in self.cells and channel in self._dummies:
            from rig.sim.dummy import DummyResistor

            self.cells[channel] = DummyResistor(self._dummies[channel])
        if channel not in self.cells:
            from rig.sim.cell import NaCell, electrolyte_for

            spec = self._specs.get(channel) or CellSpec(
                channel, f"sim-{channel}", "symmetric", 1.13, "1 M NaPF6 in diglyme")
            try:  # a preset the text names, a cell type the model knows ('full' is not yet)
                self.cells[channel] = NaCell(spec.cell_type, spec.area_cm2,
                                             electrolyte_for(spec.electrolyte),
                                             seed=cell_seed(self.seed, spec.cell_id))
            except ValueError as exc:
                raise StationError(f"channel {spec.channel} ({spec.cell_id}): the simulated "
                                   f"station cannot model this cell: {exc}") from None
        return self.cells[channel]

    def _instrument(self, entry: EmStat4Entry | Keithley2450Entry, table: dict[str, Any]) -> Any:
        channel = self._channel_of.get(entry.name)
        # an instrument no channel uses still measures a cell of its own
        cell = self.cell(channel if channel is not None else 1000 + len(self.simulators))
        where = getattr(cell, "description", None) or f"{cell.electrolyte.name} cell" + (
            f" {self._specs[channel].cell_id}" if channel in self._specs else "")
        if isinstance(entry, EmStat4Entry):
            from rig.sim.emstat import FaultProfile, SimulatedEmStat4

            serial = f"ES4SIM{channel if channel is not None else 9999:04d}"
            sim = SimulatedEmStat4(cell, self.clock, serial_number=serial,
                                   fault=self._fault(entry.name, FaultProfile)).start()
            table["port"] = sim.port
            table["description"] = f"simulated, {serial}, {where}"
            return sim
        from rig.sim.keithley import FaultProfile as KeithleyFaults
        from rig.sim.keithley import SimulatedKeithley2450

        serial = f"SIM{channel if channel is not None else 9999:05d}"
        keithley = SimulatedKeithley2450(cell, self.clock, command_set=entry.command_set,
                                         serial_number=serial,
                                         fault=self._fault(entry.name, KeithleyFaults)).start()
        table["resource"] = keithley.resource
        table["description"] = f"simulated, {serial}, {where}"
        return keithley

    def _atmosphere(self, entry: AtmosphereEntry, table: dict[str, Any],
                    events: Sequence[Any]) -> Any:
        from rig.sim.glovebox import (
            Breach,
            GloveboxModel,
            ModbusFaultProfile,
            SimulatedModbusSensor,
        )

        if self.glovebox is None:
            self.glovebox = GloveboxModel(self.seed, self.clock)
            for e in events:
                if isinstance(e, Breach):
                    self.glovebox.breach(e.at_s, e.peak_ppm, e.decay_s, e.species)
                else:
                    self.glovebox.dropout(e.at_s, e.duration_s, e.species)
        sim = SimulatedModbusSensor(self.glovebox, entry.map, self.clock,
                                    fault=self._fault(entry.name, ModbusFaultProfile)).start()
        for key in ("serial_port", "baudrate"):  # an RTU transmitter is served over TCP
            table.pop(key, None)
        table["host"], table["port"] = "127.0.0.1", sim.port
        return sim

    def _pressure(self, entry: PressureEntry, table: dict[str, Any]) -> Any:
        from rig.sim.keller import FaultProfile, GasHolder, SimulatedKeller

        source = self.cell(entry.channel) if entry.channel is not None else _SealedVolume()
        holder = GasHolder(source, entry.headspace or DEFAULT_HEADSPACE_ML)
        if entry.channel is not None:
            self.holders[entry.channel] = holder
        address = entry.address if entry.address <= 249 else 1
        sim = SimulatedKeller(holder, self.clock, address=address,
                              fault=self._fault(entry.name, FaultProfile)).start()
        table["port"] = sim.port
        return sim


# ---- writing a station file ----------------------------------------------------------------------
def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")) if not math.isfinite(
            v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else json.dumps(k)


def dumps_toml(data: dict[str, Any]) -> str:
    """A station file's data as TOML: scalars, then tables, then arrays of tables."""
    def is_tables(v: Any) -> bool:
        return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)

    lines = [f"{_key(k)} = {_value(v)}" for k, v in data.items()
             if not isinstance(v, dict) and not is_tables(v)]
    for k, v in data.items():
        if is_tables(v):
            for table in v:
                lines += ["", f"[[{_key(k)}]]", *(f"{_key(a)} = {_value(b)}"
                                                  for a, b in table.items())]
    for k, v in data.items():
        if isinstance(v, dict):
            lines += ["", f"[{_key(k)}]", *(f"{_key(a)} = {_value(b)}" for a, b in v.items())]
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Write then rename, so a reader polling for the file never sees half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ---- rig sim serve ---------------------------------------------------------------------------
OUTPUT_POLL_S = 0.05  # how often `rig sim serve` looks at each simulator's output


class OutputWatch:
    """Prints a line when a simulated instrument's output switches on or off: what the
    instrument truly does (each simulator's ``output_on``), seen within OUTPUT_POLL_S.

    ``rig sim serve: es4-ch0 output on at t=1767225600.125`` (t on the served clock, Unix s)
    """

    def __init__(self, by_name: dict[str, Any], clock: Clock, out: Any = None) -> None:
        self.clock = clock
        self.out = out
        self.sims = {name: sim for name, sim in by_name.items() if hasattr(sim, "output_on")}
        self.state = {name: False for name in self.sims}

    def poll(self) -> None:
        for name, sim in self.sims.items():
            on = bool(sim.output_on)
            if on != self.state[name]:
                self.state[name] = on
                print(f"rig sim serve: {name} output {'on' if on else 'off'} at "
                      f"t={self.clock.now():.3f}", file=self.out or sys.stderr, flush=True)


def serve(data: dict[str, Any], plan: Plan | None, clock: RealClock, *, seed: int = 0,
          out: Path | None = None, source: str = "<station>",
          stop: threading.Event | None = None) -> int:
    """Serve the simulators until SIGINT/SIGTERM (or ``stop``); print the station file."""
    stop = stop or threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        sims = SimulatedInstruments(data, plan, clock, seed, source=source)
        try:
            speed = "" if clock.speed == 1 else f", clock x{clock.speed:g}"
            text = (f"# served by `rig sim serve` (pid {os.getpid()}{speed}), started "
                    f"{time.strftime('%Y-%m-%d %H:%M:%S')}; valid while it runs\n" + sims.text)
            if out is not None:
                write_atomically(out, text)
            sys.stdout.write(text)
            sys.stdout.flush()
            print(f"rig sim serve: {len(sims.simulators)} simulated instrument(s) serving"
                  + (f"; station file {out}" if out else "") + "; Ctrl-C to stop",
                  file=sys.stderr, flush=True)
            watch = OutputWatch(sims.by_name, clock)
            while not stop.wait(OUTPUT_POLL_S):
                watch.poll()
        finally:
            sims.close()
        print("rig sim serve: stopped", file=sys.stderr, flush=True)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
