"""A KELLER reply that comes after the driver gave up on it is never taken for the reply to the
next request (F73 replies do not say which channel they are for).

Found by the 16-channel fault soak on a loaded machine: a temperature reply (25 °C) that came
late was read as the next poll's pressure, "25 bar", and the rig ended a healthy cell for
overpressure. The device here is scripted byte by byte on a pseudo-terminal, so the late reply
arrives exactly where it hurts: after the next request, before that request's own reply (a
device answers in order)."""

from __future__ import annotations

import os
import select
import threading

import pytest

from drivers.base import InstrumentTimeout
from drivers.keller import (
    P1,
    TOB1,
    DeviceInfo,
    KellerGauge,
    encode_f48_reply,
    encode_f73_reply,
)
from rig.sim.pty import open_pty

ADDRESS = 1
PRESSURE_BAR, TEMPERATURE_C = 1.2, 25.0


class LateDevice:
    """Answers F48 and F73 in order, except that it holds back its reply to the first TOB1
    request and sends it just before its reply to the next request."""

    def __init__(self) -> None:
        self.pty = open_pty(blocking=True)
        self.held: bytes | None = None
        self.holding = True
        self.requests: list[int] = []  # the function of every request, in order
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        buf = b""
        while not self._stop.is_set():
            ready, _, _ = select.select([self.pty.master], [], [], 0.05)
            if not ready:
                continue
            buf += os.read(self.pty.master, 64)
            while len(buf) >= 4:
                length = 4 if buf[1] == 48 else 5
                if len(buf) < length:
                    break
                request, buf = buf[:length], buf[length:]
                self._answer(request)

    def _answer(self, request: bytes) -> None:
        function = request[1]
        self.requests.append(function)
        if function == 48:
            reply = encode_f48_reply(ADDRESS, DeviceInfo(5, 20, 10, 11, 0, 1))
        elif request[2] == P1:
            reply = encode_f73_reply(ADDRESS, PRESSURE_BAR, 0)
        else:
            reply = encode_f73_reply(ADDRESS, TEMPERATURE_C, 0)
            if self.holding:  # "late": it goes out after the next request arrives
                self.held, self.holding = reply, False
                return
        if self.held is not None:
            reply, self.held = self.held + reply, None
        os.write(self.pty.master, reply)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        os.close(self.pty.master)
        os.close(self.pty.slave)


@pytest.fixture
def device():
    dev = LateDevice()
    yield dev
    dev.close()


def test_a_temperature_reply_that_comes_late_is_never_read_as_the_next_pressure(device):
    gauge = KellerGauge(device.pty.port, address=ADDRESS, timeout_s=1.0, retries=0,
                        backoff_s=0.0)
    try:
        with pytest.raises(InstrumentTimeout):
            gauge.read_channel(TOB1)  # its reply is held back: the poll fails
        pressure_Pa = gauge.read_pressure_Pa()  # the late 25 °C arrives first on the wire
        temperature_K = gauge.read_temperature_K()
    finally:
        gauge.close()
    assert pressure_Pa == pytest.approx(PRESSURE_BAR * 1e5)
    assert temperature_K == pytest.approx(TEMPERATURE_C + 273.15)
    assert gauge.resyncs == 1 and device.requests[1] == 48  # one F48 put the line in order

