"""Both potentiostat drivers implement the whole interface the engine relies on
(drivers.base.Potentiostat), and an EIS sweep's duration is the instrument's to say."""

from __future__ import annotations

import pytest

from drivers.base import Potentiostat
from protocols import parse_protocol
from rig.clock import VirtualClock
from rig.sim.emstat import eis_frequencies, eis_schedule
from rig.sim.station import simulated_station
from tests.support.protocol_text import GLYME, two_cells


@pytest.fixture
def station():
    plan = parse_protocol(two_cells("interface", cells=(("G1", GLYME), ("G2", GLYME))), "t.toml")
    station = simulated_station(plan, VirtualClock(), seed=1, keithley_channels=[1])
    yield station
    station.close()


def test_both_drivers_declare_how_they_are_read(station):
    emstat, keithley = station.channel(0).driver, station.channel(1).driver
    assert isinstance(emstat, Potentiostat) and isinstance(keithley, Potentiostat)
    assert emstat.streaming is True        # blocks until the samples asked for are due
    assert keithley.streaming is False     # one reading per call
    assert emstat.rejected == [] and keithley.rejected == []


def test_the_emstat_says_how_long_its_sweep_takes_as_the_instrument_runs_it(station):
    emstat = station.channel(0).driver
    for f_start, f_end, n in ((1e5, 0.1, 31), (1e3, 1.0, 4), (10.0, 10.0, 1)):
        expected = eis_schedule(eis_frequencies(f_start, f_end, n))[-1]  # the simulator's side
        assert emstat.eis_sweep_duration_s(f_start, f_end, n) == pytest.approx(expected,
                                                                               rel=1e-6)
