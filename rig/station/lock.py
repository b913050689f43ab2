"""One run per instrument: the locks that let several runs share a station file safely.

Cells are started at different times, by different people, on one station: a second `rig run`
on the same station file may use the channels nobody runs, and is refused, before anything is
opened, for a channel (or a sensor on a serial port) that a live run holds. The refusal is one
line naming that run.

Each exclusive connection a run uses (an instrument's serial port or VISA resource, a sensor on
a serial port) is a lock file in the lock directory, held with ``flock(LOCK_EX | LOCK_NB)`` for
the whole run. The kernel releases a flock when its process ends however it ends (crash,
SIGKILL, power cut), so a dead holder never blocks; the file stays, naming its last holder, and
is not a lock once nobody holds it. The directory is machine-wide, not per store or per user,
because the devices are: ``$NARIG_LOCK_DIR``, else ``/run/lock/narig`` where ``/run/lock`` is
world-writable (Debian, Ubuntu), else ``/tmp/narig-locks``. Holders also keep a shared flock on
the directory, which tells systemd-tmpfiles not to age-clean it under a weeks-long run.

Not locked: a Modbus TCP transmitter (every run reads it over its own connection: a station-wide
atmosphere sensor serves every run's interlock), and the built-in simulated station (each
`rig run` starts its own simulators, so nothing is shared).

    locks = lock_station(config, channels={1}, run_id="20261201-215012-ab12", source="lab.toml")
    ...                       # open and run
    locks.release()           # after the outputs are off (Station.closers does this)
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import socket
import stat
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rig.station.schema import (
    AtmosphereEntry,
    Keithley2450Entry,
    PressureEntry,
    StationError,
    StationFile,
    address_of,
    sensor_wanted,
)

LOCK_DIR_ENV = "NARIG_LOCK_DIR"


def lock_dir() -> Path:
    """Where the lock files live (module docstring): the same for every user of this machine."""
    env = os.environ.get(LOCK_DIR_ENV)
    if env:
        return Path(env)
    run_lock = Path("/run/lock")
    try:
        if run_lock.stat().st_mode & stat.S_IWOTH:
            return run_lock / "narig"
    except OSError:
        pass
    return Path("/tmp/narig-locks")


@dataclass(frozen=True)
class Claim:
    """One exclusive connection a run would hold."""

    key: str   # the device, normalised: the same device under two names is one key
    what: str  # for people: "channel 0 (es4-a at /dev/ttyUSB0)"


class InstrumentInUse(StationError):
    """A connection a run needs is held by another live process (``holder``)."""

    def __init__(self, message: str, what: str, holder: Holder) -> None:
        super().__init__(message)
        self.what, self.holder = what, holder


def device_key(entry: Any) -> str | None:
    """The exclusive device an entry talks to, or None when it can be shared (Modbus TCP).

    >>> from rig.station.schema import Keithley2450Entry
    >>> device_key(Keithley2450Entry(name="k", driver="keithley2450",
    ...                              resource="TCPIP0::192.168.1.50::5025::SOCKET"))
    'visa:tcpip::192.168.1.50::5025::socket'
    """
    if isinstance(entry, Keithley2450Entry):
        # TCPIP0:: and TCPIP:: name the same board
        return "visa:" + re.sub(r"^(tcpip|gpib|usb|asrl)0::", r"\1::", entry.resource.lower())
    if isinstance(entry, AtmosphereEntry):
        if entry.serial_port is None:
            return None
        return "serial:" + os.path.realpath(entry.serial_port)
    return "serial:" + os.path.realpath(entry.port)  # an EmStat4, a KELLER gauge


def claims_of(config: StationFile, channels: Collection[int] | None) -> list[Claim]:
    """The exclusive connections a run on ``channels`` (None: all) of ``config`` uses, in file
    order: its channels' instruments, and the sensors it reads on serial ports."""
    wanted = None if channels is None else set(channels)
    out = []
    for ch in config.channels:
        if wanted is None or ch.channel in wanted:
            entry = config.instrument(ch.instrument)
            key = device_key(entry)
            if key is not None:
                out.append(Claim(key, f"channel {ch.channel} ({entry.name} at "
                                      f"{address_of(entry)})"))
    for s in config.sensors:
        key = device_key(s) if sensor_wanted(s, wanted) else None
        if key is not None:
            out.append(Claim(key, f"sensor {s.name} at {address_of(s)}"))
    return out


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as written into its file."""

    run_id: str | None  # None: not a run (rig station check)
    pid: int
    host: str
    since: float  # wall-clock time it was taken
    purpose: str = "run"

    def describe(self) -> str:
        """``run 20261201-215012-ab12 (pid 4242 on lab-pc, since 2026-12-01 21:50:12)``."""
        who = f"run {self.run_id}" if self.run_id else self.purpose
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"{who} (pid {self.pid} on {self.host}, since {since})"

    def to_json(self) -> str:
        return json.dumps({"run_id": self.run_id, "pid": self.pid, "host": self.host,
                           "since": self.since, "purpose": self.purpose})

    @classmethod
    def from_json(cls, text: str) -> Holder | None:
        try:
            d = json.loads(text)
            return cls(d.get("run_id"), int(d["pid"]), str(d["host"]), float(d["since"]),
                       str(d.get("purpose") or "run"))
        except (ValueError, KeyError, TypeError):
            return None  # being written, or not ours

    @classmethod
    def this_process(cls, run_id: str | None, purpose: str = "run") -> Holder:
        return cls(run_id, os.getpid(), socket.gethostname(), time.time(), purpose)


class InstrumentLocks:
    """Locks held by this process; ``release()`` (idempotent) lets them go."""

    def __init__(self, directory: Path, fds: list[int], dir_fd: int | None) -> None:
        self.directory = directory
        self._fds = fds
        self._dir_fd = dir_fd

    @property
    def held(self) -> int:
        return len(self._fds)

    def release(self) -> None:
        fds, self._fds = self._fds, []
        for fd in fds:
            os.close(fd)  # closing the only descriptor releases its flock
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None


def _file_name(key: str) -> str:
    """A readable, collision-free file name for a device key."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("_")[:80]
    return f"{slug}-{hashlib.sha1(key.encode()).hexdigest()[:8]}.lock"


def _open_dir(directory: Path) -> int:
    """The lock directory (created world-writable and sticky, like /tmp), held shared."""
    if not directory.is_dir():
        try:
            directory.mkdir(parents=True, exist_ok=True)
            os.chmod(directory, 0o1777)
        except OSError as exc:
            raise StationError(f"cannot create the instrument lock directory {directory}: "
                               f"{exc.strerror or exc} (set ${LOCK_DIR_ENV} to another)") from None
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_SH)  # systemd-tmpfiles skips a directory someone has locked
    return fd


def _open_lock_file(path: Path) -> int:
    """The lock file, created readable and writable for every user."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:  # another user's file we may not write: locking still works
        return os.open(path, os.O_RDONLY)
    try:
        if os.fstat(fd).st_uid == os.getuid():
            os.fchmod(fd, 0o666)  # whatever the umask, others must be able to take it later
    except OSError:
        pass
    return fd


def _try_lock(path: Path) -> tuple[int | None, Holder | None]:
    """(fd, None) when locked by us; (None, holder) when a live process holds it."""
    while True:
        fd = _open_lock_file(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            try:
                text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
            finally:
                os.close(fd)
            return None, Holder.from_json(text) or Holder(None, 0, "?", time.time(),
                                                           "another rig process (starting)")
        try:  # the file we locked may have been removed (by hand, a cleaner) since we opened it
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd, None
        os.close(fd)


def _write_holder(fd: int, holder: Holder) -> None:
    try:
        data = (holder.to_json() + "\n").encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    except OSError:
        pass  # a read-only file (another user's): the lock holds, only the name is missing


def acquire(claims: Sequence[Claim], holder: Holder, *, source: str | None = None,
            directory: Path | None = None) -> InstrumentLocks:
    """Every claim or none: raises InstrumentInUse (one line: what, and who holds it)."""
    directory = directory or lock_dir()
    if not claims:
        return InstrumentLocks(directory, [], None)
    dir_fd = _open_dir(directory)
    locks = InstrumentLocks(directory, [], dir_fd)
    try:
        for claim in dict((c.key, c) for c in claims).values():
            fd, other = _try_lock(directory / _file_name(claim.key))
            if fd is None:
                assert other is not None
                prefix = f"{source}: " if source else ""
                raise InstrumentInUse(
                    f"{prefix}{claim.what} is in use by {other.describe()}; use other "
                    "channels, or wait for that run to end", claim.what, other)
            _write_holder(fd, holder)
            locks._fds.append(fd)
    except BaseException:
        locks.release()
        raise
    return locks


def lock_station(config: StationFile, channels: Collection[int] | None, run_id: str, *,
                 source: str | None = None) -> InstrumentLocks:
    """Lock what a run on ``channels`` of ``config`` uses, for ``run_id``, before it opens
    anything; raises InstrumentInUse naming the run that holds one of them."""
    return acquire(claims_of(config, channels), Holder.this_process(run_id), source=source)
