"""A serial device that replays a transcript, on a real pseudo-terminal.

The driver under test opens ``device.port`` with pyserial exactly as it would open hardware; no
patching. For each transcript entry the device reads from the host until it has the expected
bytes (any deviation is recorded with a diff and the device stops answering), then acts::

    with ReplayDevice([(b"t\\n", b"tes4_lr#b\\nR1.0*\\n"),     # answer these bytes
                       (b"i\\n", SILENCE),                    # say nothing: the host times out
                       (b"i\\n", GARBAGE),                    # answer noise
                       (b"i\\n", [b"iES4", Pause(0.1), b"-1\\n"]),  # answer in pieces, later
                       (b"t\\n", HANG_UP)]) as device:         # the port vanishes
        ...drive the port...
        device.check()   # raises AssertionError if the host deviated or stopped short

``check()`` also fails if the host sent bytes after the last entry.
"""

from __future__ import annotations

import difflib
import os
import select
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from rig.sim.pty import open_pty


@dataclass(frozen=True)
class Pause:
    """Inside a reply: wait this long before writing the rest (data that arrives later)."""

    seconds: float


SILENCE = "silence"   # read the request, answer nothing
GARBAGE = "garbage"   # answer a line of noise
HANG_UP = "hang_up"   # close the pty master: the host's port is gone

Reply = bytes | str | None | Sequence[bytes | Pause]
GARBAGE_BYTES = b"\x8f#?@\xfe garbled ~~\n"


class ReplayDevice:
    def __init__(self, transcript: Sequence[tuple[bytes, Reply]], *,
                 wait_s: float = 5.0) -> None:
        self.transcript = list(transcript)
        self.wait_s = wait_s          # how long to wait for the host's next bytes
        self.problems: list[str] = []
        self.position = 0             # entries fully served
        self._master, self._slave, self.port = open_pty(blocking=True)
        self._received = b""
        self._stop = threading.Event()
        self._done = threading.Event()   # every entry served
        self._over = threading.Event()   # the serving thread has returned
        self._thread = threading.Thread(target=self._serve, name="replay", daemon=True)
        self._thread.start()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ---- the test's side ---------------------------------------------------------------------
    def check(self) -> None:
        """Raise AssertionError unless the host sent exactly the transcript, nothing more."""
        self._over.wait(self.wait_s)
        if not self._done.is_set():
            if not self.problems:
                self.problems.append(self._stalled())
        else:
            extra = self._read_available(0.02)
            if extra:
                self.problems.append(f"host sent bytes after the transcript ended: {extra!r}")
        if self.problems:
            raise AssertionError("\n".join(self.problems))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass

    # ---- the device's side -------------------------------------------------------------------
    def _serve(self) -> None:
        try:
            for index, (expected, reply) in enumerate(self.transcript):
                if not self._receive(index, expected):
                    return
                if not self._act(reply):
                    return
                self.position = index + 1
            self._done.set()
        except OSError as exc:   # the test closed the pty under us
            self.problems.append(f"replay device: {exc}")
        finally:
            self._over.set()

    def _receive(self, index: int, expected: bytes) -> bool:
        """Read until the host has sent ``expected``; record a diff and stop if it deviates."""
        deadline = time.monotonic() + self.wait_s
        while len(self._received) < len(expected):
            if not expected.startswith(self._received):
                break
            if self._stop.is_set() or time.monotonic() > deadline:
                return False  # check() reports the stall
            self._received += self._read_available(0.02)
        got, self._received = self._received[:len(expected)], self._received[len(expected):]
        if got == expected:
            return True
        got += self._received + self._read_available(0.1)   # the rest, for a readable diff
        self.problems.append(f"entry {index}: the host deviated from the transcript\n"
                             + _diff(expected, got))
        return False

    def _act(self, reply: Reply) -> bool:
        if reply is None or reply == SILENCE:
            return True
        if reply == GARBAGE:
            os.write(self._master, GARBAGE_BYTES)
        elif reply == HANG_UP:
            os.close(self._master)
            self._master = -1
            self._done.set()
            return False
        elif isinstance(reply, bytes):
            self._write(reply)
        else:
            for part in reply:
                if isinstance(part, Pause):
                    time.sleep(part.seconds)
                else:
                    self._write(part)
        return True

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._master, view):]

    def _read_available(self, wait_s: float) -> bytes:
        if self._master < 0:
            return b""
        ready, _, _ = select.select([self._master], [], [], wait_s)
        return os.read(self._master, 65536) if ready else b""

    def _stalled(self) -> str:
        expected = self.transcript[self.position][0]
        return (f"transcript not consumed: stopped at entry {self.position} of "
                f"{len(self.transcript)}, waiting for {expected!r}; the host sent only "
                f"{self._received!r}")


def _diff(expected: bytes, got: bytes) -> str:
    lines = difflib.unified_diff(
        expected.decode("latin-1").splitlines(keepends=True),
        got.decode("latin-1").splitlines(keepends=True),
        "expected from host", "host sent", lineterm="")
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)
