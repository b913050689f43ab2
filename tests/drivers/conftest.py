"""Fixtures the driver tests share (the EmStat4 replay is defined in tests/support)."""

from collections.abc import Iterator

import pytest
import pyvisa

from tests.support.emstat_replay import replay  # noqa: F401  (a fixture: pytest finds it here)


@pytest.fixture
def rm() -> Iterator[pyvisa.ResourceManager]:
    """pyvisa-py's resource manager, for the Keithley drivers and simulators over TCP."""
    manager = pyvisa.ResourceManager("@py")
    yield manager
    manager.close()
