"""A pseudo-terminal for a simulated serial device: the host opens ``port`` with pyserial exactly
as it opens hardware; the device reads and writes ``master``.

The slave is put in raw mode (no echo, no line editing, no CR/LF translation: bytes pass as on
a wire) and the device keeps it open as well, so the pty survives the host closing and
reopening its port. The master is non-blocking unless asked otherwise; a device that writes
to a non-blocking master waits on ``select`` when the pty buffer is full.
"""

from __future__ import annotations

import os
import tty
from typing import NamedTuple


class Pty(NamedTuple):
    master: int  # the device's end
    slave: int   # kept open by the device
    port: str    # the slave's name (/dev/pts/N), for the host


def open_pty(*, blocking: bool = False) -> Pty:
    """A new pseudo-terminal, the slave raw, the master non-blocking unless ``blocking``."""
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, blocking)
    return Pty(master, slave, os.ttyname(slave))
