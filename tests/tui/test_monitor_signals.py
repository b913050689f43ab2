"""`rig run --monitor` in a real pseudo-terminal (its controlling terminal, as over ssh): SIGTERM,
SIGHUP, the terminal closing and Ctrl-C pressed in the monitor end the run as they end a plain
`rig run` — the process ends, every output is off (watched on instruments served by this test
process, which outlive the engine), the run is 'interrupted' with an event naming the signal,
exit 4, and the terminal is left as it was found (echo, line editing, the main screen, the
cursor)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import struct
import subprocess
import termios
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rig.lifecycle import EXIT_INTERRUPTED
from tests.support.rig_process import (ROOT, as_from_a_terminal, count, query, rig_cmd,
                                       stop, wait_for)
from tests.support.protocol_text import GLYME, two_cells

# the waits inside give the clear messages; this is only the last resort
pytestmark = pytest.mark.timeout(600)

SPEED = 100
ALT_SCREEN_ON, ALT_SCREEN_OFF = b"\x1b[?1049h", b"\x1b[?1049l"
TERMINAL_MODES = termios.ECHO | termios.ICANON | termios.ISIG


@dataclass
class Terminal:
    """The master side of a pty: what the program drew, and the keyboard."""

    master: int
    modes_before: int
    drawn: bytearray = field(default_factory=bytearray)
    closed: threading.Event = field(default_factory=threading.Event)

    def read_until_closed(self) -> None:
        while not self.closed.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if not ready:
                continue
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: the program's side is closed
                return
            if not chunk:
                return
            self.drawn.extend(chunk)

    def modes(self) -> int:
        return termios.tcgetattr(self.master)[3] & TERMINAL_MODES


@dataclass
class Station:
    file: Path
    potentiostats: list


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, Station]]:
    """A long two-cell protocol and its instruments served by this process (real clock x100)."""
    from protocols import load_protocol
    from rig.clock import RealClock
    from rig.sim.serve import SimulatedInstruments, builtin_station_data

    protocol = tmp_path / "p.toml"
    protocol.write_text(two_cells("monitored", q="0.05 mAh/cm^2", cycles=500,
                                  cells=(("G1", GLYME), ("G2", GLYME))))
    plan = load_protocol(protocol).plan
    sims = SimulatedInstruments(builtin_station_data(plan), plan, RealClock(speed=SPEED), 0)
    try:
        file = tmp_path / "station.toml"
        file.write_text(sims.text)
        potentiostats = [s for s in sims.simulators if hasattr(s, "output_on")]
        assert len(potentiostats) == 2
        yield protocol, Station(file, potentiostats)
    finally:
        sims.close()


def as_a_terminals_command() -> None:
    as_from_a_terminal()
    # the pty becomes the run's controlling terminal: closing it hangs the run up
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def start_monitored_run(protocol: Path, station: Station, db: Path
                        ) -> tuple[subprocess.Popen, Terminal, threading.Thread]:
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    terminal = Terminal(master, termios.tcgetattr(slave)[3] & TERMINAL_MODES)
    assert terminal.modes_before == TERMINAL_MODES  # a cooked terminal, as a shell leaves it
    env = {**os.environ, "TERM": "xterm-256color"}
    env.pop("TEXTUAL_ALLOW_SIGNALS", None)
    proc = subprocess.Popen(
        rig_cmd("run", str(protocol), "--station", str(station.file), "--db", str(db),
                "--clock", f"x{SPEED}", "--monitor"),
        cwd=ROOT, env=env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
        preexec_fn=as_a_terminals_command)
    os.close(slave)
    reader = threading.Thread(target=terminal.read_until_closed, daemon=True)
    reader.start()
    return proc, terminal, reader


def wait_until_monitored_and_driving(proc: subprocess.Popen, terminal: Terminal, db: Path,
                                     station: Station) -> None:
    def ready() -> bool:
        assert proc.poll() is None, bytes(terminal.drawn).decode(errors="replace")
        return (ALT_SCREEN_ON in terminal.drawn and b"G2" in terminal.drawn
                and count(db, "SELECT count(*) FROM samples") > 20
                and all(p.output_on for p in station.potentiostats))
    wait_for(ready, timeout=120, every=0.05)


def assert_interrupted_by(db: Path, station: Station, sig: signal.Signals) -> None:
    assert [p.output_on for p in station.potentiostats] == [False, False]
    status, reason = query(db, "SELECT status, end_reason FROM runs")[0]
    assert status == "interrupted" and sig.name in reason
    (event,), = query(db, "SELECT message FROM events WHERE kind = 'interrupted'")
    assert sig.name in event and "every output switched off" in event


def assert_terminal_restored(terminal: Terminal) -> None:
    drawn = bytes(terminal.drawn)
    assert drawn.rfind(ALT_SCREEN_OFF) > drawn.rfind(ALT_SCREEN_ON) >= 0, \
        "the monitor left the terminal on its alternate screen"
    assert terminal.modes() == terminal.modes_before, "echo / line editing not restored"


@dataclass
class Ended:
    """A monitored run after its interruption: what the terminal drew, the exit code."""

    drawn: str
    returncode: int
    db: Path
    station: Station
    terminal: Terminal


@contextlib.contextmanager
def monitored_run_interrupted(served: tuple[Path, Station], tmp_path: Path,
                              interrupt: Callable[[subprocess.Popen, Terminal], None]
                              ) -> Iterator[Ended]:
    """`rig run --monitor` in a pty, driving its cells, then ``interrupt``-ed; the terminal is
    kept open until the caller has looked at it."""
    protocol, station = served
    db = tmp_path / "m.db"
    proc, terminal, reader = start_monitored_run(protocol, station, db)
    try:
        wait_until_monitored_and_driving(proc, terminal, db, station)
        interrupt(proc, terminal)
        proc.wait(timeout=120)
        reader.join(timeout=30)
        yield Ended(bytes(terminal.drawn).decode(errors="replace"), proc.returncode, db,
                    station, terminal)
    finally:
        stop(proc)
        terminal.closed.set()
        os.close(terminal.master)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_to_rig_run_monitor_interrupts_the_run_safely_and_restores_the_terminal(
        served, tmp_path, sig):
    with monitored_run_interrupted(served, tmp_path,
                                   lambda proc, _terminal: proc.send_signal(sig)) as run:
        assert "Traceback" not in run.drawn, run.drawn
        assert run.returncode == EXIT_INTERRUPTED, run.drawn
        assert_interrupted_by(run.db, run.station, sig)
        assert_terminal_restored(run.terminal)
        assert "rig resume" in run.drawn  # how to continue it


def press_ctrl_c(_proc: subprocess.Popen, terminal: Terminal) -> None:
    os.write(terminal.master, b"\x03")  # the key; the monitor has the terminal raw


def test_ctrl_c_in_the_monitor_interrupts_the_run_as_in_a_plain_rig_run(served, tmp_path):
    with monitored_run_interrupted(served, tmp_path, press_ctrl_c) as run:
        assert run.returncode == EXIT_INTERRUPTED, run.drawn
        assert_interrupted_by(run.db, run.station, signal.SIGINT)
        assert_terminal_restored(run.terminal)


def test_closing_the_terminal_of_rig_run_monitor_hangs_it_up_safely(served, tmp_path):
    """The ssh connection drops or the tmux window is killed: the kernel hangs the run up."""
    protocol, station = served
    db = tmp_path / "m.db"
    proc, terminal, reader = start_monitored_run(protocol, station, db)
    try:
        wait_until_monitored_and_driving(proc, terminal, db, station)
        terminal.closed.set()
        reader.join(timeout=30)
        os.close(terminal.master)  # the terminal is gone: SIGHUP to its session
        proc.wait(timeout=120)
        assert_interrupted_by(db, station, signal.SIGHUP)
        assert proc.returncode == EXIT_INTERRUPTED
    finally:
        stop(proc)
