"""The hardware-in-the-loop suite: ``python -m pytest hil --station FILE``.

Without ``--station`` every test is skipped with the reason. The root ``pytest`` run
(testpaths = tests) never collects this folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--station", default=None, metavar="FILE",
                     help="the station file whose instruments the hil suite talks to")


@pytest.fixture(scope="session")
def station_file(request: pytest.FixtureRequest) -> Path:
    value = request.config.getoption("--station")
    if not value:
        pytest.skip("no --station FILE given: the hardware-in-the-loop suite talks to the "
                    "instruments a station file names (see hil/README.md)")
    path = Path(value)
    if not path.is_file():
        pytest.fail(f"--station {value}: no such file")
    return path
