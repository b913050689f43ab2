"""A SCPI instrument that replays a transcript, on a real TCP socket (127.0.0.1).

In the style of pymeasure's ``expected_protocol``: a list of (command, reply) pairs, written
from the instrument's manual. The driver under test connects through pyvisa exactly as it
would to hardware on port 5025; no patching. Each received line must equal the next pair's
command (any deviation is recorded and the device stops answering); then the reply, if not
None, is sent with ``\\n``::

    with ScpiReplay([("*IDN?", "KEITHLEY INSTRUMENTS,MODEL 2450,04365704,1.6.4c"),
                     (":OUTP OFF", None),           # a command: no reply
                     (":OUTP?", HANG_UP)]) as dev:  # close the connection instead of answering
        smu = Keithley2450(dev.resource)
        ...
    # leaving the block calls dev.check(): a deviation, or pairs left over, fail the test

After a ``HANG_UP`` the device accepts the next connection and carries on with the transcript
(a reconnect). ``check()`` also fails if the host sent lines after the last pair.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Self

HANG_UP = "<hang up>"


class ScpiReplay:
    def __init__(self, transcript: Sequence[tuple[str, str | None]], *,
                 wait_s: float = 10.0) -> None:
        self.transcript = list(transcript)
        self.wait_s = wait_s
        self.position = 0
        self.problems: list[str] = []
        self.connections = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.05)  # accept() polls, so close() is prompt
        self.port = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def resource(self) -> str:
        return f"TCPIP0::127.0.0.1::{self.port}::SOCKET"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
        if exc_type is None:
            self.check()

    def close(self) -> None:
        self._stop.set()
        self._server.close()
        self._thread.join(timeout=self.wait_s + 2)

    def check(self) -> None:
        if self.problems:
            raise AssertionError("\n".join(self.problems))
        if self.position < len(self.transcript):
            left = self.transcript[self.position:]
            raise AssertionError(f"{len(left)} pair(s) never sent by the host, first {left[0]!r}")

    # --- serving
    def _serve(self) -> None:
        while not self._stop.is_set() and not self.problems:
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            with conn:
                if not self._session(conn):
                    return

    def _session(self, conn: socket.socket) -> bool:
        """Serve one connection; False once the device should stop altogether."""
        conn.settimeout(0.1)
        buffer = b""
        while not self._stop.is_set():
            while b"\n" not in buffer:
                try:
                    data = conn.recv(4096)
                except TimeoutError:
                    if self._stop.is_set():
                        return False
                    continue
                except OSError:
                    return True
                if not data:
                    return True  # the host closed: a reconnect may follow
                buffer += data
            raw, buffer = buffer.split(b"\n", 1)
            line = raw.decode("ascii", errors="replace").rstrip("\r")
            if self.position >= len(self.transcript):
                self.problems.append(f"line after the transcript's end: {line!r}")
                return False
            expected, reply = self.transcript[self.position]
            if line != expected:
                self.problems.append(f"pair {self.position}: expected {expected!r}, "
                                     f"the host sent {line!r}")
                return False
            self.position += 1
            if reply is HANG_UP:
                conn.shutdown(socket.SHUT_RDWR)
                return True
            if reply is not None:
                conn.sendall(reply.encode("ascii") + b"\n")
        return False
