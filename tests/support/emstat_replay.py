"""The production EmStat4 driver on a ReplayDevice: the ``replay`` fixture of the EmStat4
transcript tests (tests/drivers/test_emstat_driver.py, tests/drivers/test_emstat_vendor.py),
shared through tests/drivers/conftest.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from drivers.emstat import EmStat4
from tests.support.pty_replay import ReplayDevice

Make = Callable[..., tuple[EmStat4, ReplayDevice]]


@pytest.fixture
def replay() -> Iterator[Make]:
    """make(transcript, **driver options) -> (driver, device); the transcript is checked after."""
    made: list[tuple[EmStat4, ReplayDevice]] = []

    def make(transcript: list, **options: float) -> tuple[EmStat4, ReplayDevice]:
        device = ReplayDevice(transcript)
        options.setdefault("timeout_s", 0.5)
        options.setdefault("retries", 0)
        driver = EmStat4(device.port, **options)
        made.append((driver, device))
        return driver, device

    yield make
    for driver, device in made:
        try:
            device.check()
        finally:
            device.close()
            driver.close()  # output off fails on the closed pty: close() must not raise
