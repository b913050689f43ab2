"""Suite-wide set-up: what every test, and every `rig` a test starts, shares."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from rig.station.lock import LOCK_DIR_ENV


@pytest.fixture(autouse=True, scope="session")
def station_locks_of_our_own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Station locks in a directory of the suite's (the `rig` processes tests start inherit
    it), not the machine's /run/lock/narig, which other users and CI jobs share."""
    before = os.environ.get(LOCK_DIR_ENV)
    os.environ[LOCK_DIR_ENV] = str(tmp_path_factory.mktemp("station-locks"))
    yield
    if before is None:
        os.environ.pop(LOCK_DIR_ENV, None)
    else:
        os.environ[LOCK_DIR_ENV] = before
