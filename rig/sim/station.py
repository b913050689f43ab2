"""The built-in simulated station: simulators started in this process for a protocol's cells and
opened through the production drivers, exactly like hardware (no shortcut path).

    station = simulated_station(plan, clock, seed=1)   # a SimulatedStation
    station.simulators[0]                             # the channel-0 potentiostat simulator
    station.close()                                    # drivers, then the simulators

rig.sim depends on rig.station, never the reverse: a ``SimulatedStation`` is a ``Station`` that
owns its simulators (closed after the drivers, through ``Station.closers``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from protocols.plan import CellSpec, ChannelPlan, Plan, Safety
from rig.clock import RealClock, VirtualClock
from rig.sim.serve import SimulatedInstruments, builtin_station_data
from rig.station import Station, interlocks_of, open_station

Clock = RealClock | VirtualClock


@dataclass
class SimulatedStation(Station):
    """A Station whose instruments are simulators this process runs."""

    simulation: SimulatedInstruments | None = None
    seed: int = 0  # of the simulated cells, so a resumed run rebuilds the same ones

    def __post_init__(self) -> None:
        if self.simulation is not None:
            self.closers.append(self.simulation.close)

    @property
    def simulators(self) -> list[Any]:
        """Potentiostat simulators first, in channel order, then the sensors'."""
        return self.simulation.simulators if self.simulation is not None else []

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "seed": self.seed}


def open_simulated(sims: SimulatedInstruments, clock: Clock) -> SimulatedStation:
    """Open the station that ``sims`` serve; the station owns them from here on (closing it, or
    a failure to open it, closes them)."""
    station = SimulatedStation(name="simulated", simulated=True, config=sims.config,
                               interlocks=interlocks_of(sims.config.interlocks),
                               simulation=sims, seed=sims.seed)
    # in-process simulators stop with this process: no host can die under them, so no watchdog
    # (its chunked scripts would cost time for nothing); `rig sim serve` arms the file's bound
    open_station(sims.config, clock, into=station, host_watchdog=False)
    return station


def simulated_station(plan: Plan, clock: Clock, seed: int = 0, *,
                      keithley_channels: Collection[int] = (), glovebox_events: Sequence[Any] = (),
                      faults: dict[str, Any] | None = None,
                      timeouts: dict[str, str] | None = None) -> SimulatedStation:
    """The built-in simulated station for ``plan`` (see ``rig.sim.serve.builtin_station_data``):

    per cell an EmStat4 (a Keithley 2450 for channels in ``keithley_channels``), a glovebox
    H2O transmitter (Vaisala map) and O2 transmitter (narig map) on one GloveboxModel (with
    ``glovebox_events``: rig.sim.glovebox Breach/Dropout), and a KELLER gauge per cell with a
    headspace. ``faults`` maps an instrument or sensor name (``es4-ch0``, ``k2450-ch1``,
    ``box-h2o``, ``box-o2``, ``keller-ch0``) to its simulator's fault profile. ``timeouts``
    (``{"instruments": "2 s", "sensors": "2 s"}``, station-file quantities) sets the drivers'
    reply timeouts as a station file's ``timeout`` would, in place of the virtual clock's.
    """
    data = builtin_station_data(plan, keithley_channels=keithley_channels)
    for kind, timeout in (timeouts or {}).items():
        for table in data[kind]:
            table["timeout"] = timeout
    sims = SimulatedInstruments(data, plan, clock, seed, glovebox_events=glovebox_events,
                                faults=faults)
    return open_simulated(sims, clock)


DUMMY_KEITHLEY_CHANNELS = (1,)  # the default simulated station's Keithley channel


def dummy_plan(headspace_mL: float | None = 5.0) -> Plan:
    """Two glyme Na||Na cells and no steps: what `station check` and `sim serve` simulate when
    no protocol is given. Channel 0 (in a gas holder) is an EmStat4 channel; channel 1 goes on
    the simulated Keithley 2450 (DUMMY_KEITHLEY_CHANNELS)."""
    cells = (CellSpec(0, "check-0", "symmetric", 1.13, "1 M NaPF6 in diglyme",
                      headspace_mL=headspace_mL),
             CellSpec(1, "check-1", "symmetric", 1.13, "1 M NaPF6 in diglyme"))
    return Plan("station_check", "station check", Safety(-1.0, 1.0, 0.01),
                tuple(ChannelPlan(c, ()) for c in cells))
