"""Fixtures the driver tests share (defined in tests/support)."""

from tests.support.emstat_replay import replay  # noqa: F401  (a fixture: pytest finds it here)
