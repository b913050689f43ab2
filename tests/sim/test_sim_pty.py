"""The pty every simulated serial device is served on: bytes pass as on a wire, and the port
survives the host closing and reopening it."""

from __future__ import annotations

import os
import select

import serial

from rig.sim.pty import open_pty


def read_master(fd: int, n: int) -> bytes:
    out = b""
    while len(out) < n:
        ready, _, _ = select.select([fd], [], [], 10)
        assert ready, f"only {out!r} arrived"
        out += os.read(fd, 4096)
    return out


def test_bytes_pass_raw_both_ways_and_the_port_survives_a_reopen() -> None:
    pty = open_pty()
    try:
        assert pty.port.startswith("/dev/") and not os.get_blocking(pty.master)
        for _ in range(2):  # the host closes and reopens its port, as drivers do
            with serial.Serial(pty.port, 9600, timeout=10) as host:
                host.write(b"\r\n\x03\x7f")  # no CR/LF translation, no ^C, no line editing
                assert read_master(pty.master, 4) == b"\r\n\x03\x7f"
                os.write(pty.master, b"a\rb\n")
                assert host.read(4) == b"a\rb\n"  # and nothing echoed back
                assert host.in_waiting == 0
    finally:
        os.close(pty.master)
        os.close(pty.slave)


def test_a_blocking_master_is_available_for_devices_that_write_in_one_thread() -> None:
    pty = open_pty(blocking=True)
    try:
        assert os.get_blocking(pty.master)
    finally:
        os.close(pty.master)
        os.close(pty.slave)
