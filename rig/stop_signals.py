"""SIGTERM, SIGHUP and SIGINT as one request — stop the run safely — however the run was started.

Only the main thread may catch a signal, but the engine does not always run there: under
`rig run --monitor` it runs in a thread beside the Textual app, which owns the main thread and
the terminal. So the main thread catches the three signals here, for as long as a run may be
going, and whoever must act on one subscribes: the engine (every output off, the run
'interrupted', exit 4), the monitor (closes, leaving the terminal as it found it). A signal that
arrives before anyone listens (while the run is being created) is kept and given to each
subscriber as it joins, so it is never lost.

>>> import signal
>>> got = []
>>> with catching():
...     signal.raise_signal(signal.SIGTERM)
...     unsubscribe = subscribe(got.append)  # joins after the signal: still told
...     unsubscribe()
>>> got, received()
([<Signals.SIGTERM: 15>], None)
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
# Started with SIGHUP or SIGINT ignored (`nohup rig run ...`; `rig run ... &` in a script) the
# caller asked for the run to outlive its terminal: those stay ignored. SIGTERM always stops.
RESPECTED_IF_IGNORED = (signal.SIGHUP, signal.SIGINT)

Subscriber = Callable[[signal.Signals], None]

_lock = threading.Lock()
_depth = 0
_previous: dict[signal.Signals, Any] = {}
_subscribers: list[Subscriber] = []
_received: list[signal.Signals] = []


@contextlib.contextmanager
def catching() -> Iterator[None]:
    """Catch the stop signals for the duration (reentrant). Outside the main thread this does
    nothing: the signals are then caught only if the main thread is itself ``catching``."""
    global _depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with _lock:
        _depth += 1
        if _depth == 1:
            _received.clear()
            for sig in to_catch():
                _previous[sig] = signal.signal(sig, _handle)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for sig, handler in _previous.items():
                    signal.signal(sig, handler)
                _previous.clear()
                _received.clear()


def to_catch() -> tuple[signal.Signals, ...]:
    """The stop signals to catch: all three, but SIGHUP and SIGINT only if the process was not
    started with them ignored (as nohup starts it)."""
    return tuple(sig for sig in STOP_SIGNALS
                 if not (sig in RESPECTED_IF_IGNORED and signal.getsignal(sig) is signal.SIG_IGN))


def subscribe(callback: Subscriber) -> Callable[[], None]:
    """Call ``callback(sig)`` on a stop signal — in the main thread, inside a signal handler:
    it must only hand the news on (``loop.call_soon_threadsafe``), never block. Told at once if
    a signal already came. Returns the unsubscribe function."""
    with _lock:
        _subscribers.append(callback)
        first = _received[0] if _received else None
    if first is not None:
        callback(first)

    def unsubscribe() -> None:
        with _lock, contextlib.suppress(ValueError):
            _subscribers.remove(callback)
    return unsubscribe


@contextlib.contextmanager
def hung_up_terminal_ignored() -> Iterator[None]:
    """Around what a command says at a run's end, on a terminal that may be gone (SIGHUP: the
    ssh link dropped, the tmux window closed): writing there fails with EIO. The run's end is
    stored and its exit code stands, so the words are dropped (stdout and stderr pointed at
    /dev/null) instead of becoming a traceback nobody sees and exit 1."""
    try:
        yield
    except OSError as exc:
        if exc.errno != errno.EIO:
            raise
        devnull = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):
            with contextlib.suppress(OSError):
                os.dup2(devnull, fd)


def active() -> bool:
    """The main thread is catching the stop signals now."""
    return _depth > 0


def received() -> signal.Signals | None:
    """The first stop signal received while catching, if any."""
    return _received[0] if _received else None


def request(sig: signal.Signals) -> None:
    """A stop asked for in this process (Ctrl-C pressed in the monitor): handed on as the
    signal would be, also when the process was started with that signal ignored — a key
    pressed here is not a terminal hanging up. Call it in the main thread while catching."""
    _handle(sig, None)


def _handle(signum: int, _frame: FrameType | None) -> None:
    # no lock here: the handler interrupts the main thread, which may hold it
    sig = signal.Signals(signum)
    _received.append(sig)
    for callback in list(_subscribers):
        callback(sig)
