"""rig.stop_signals: the main thread catches SIGTERM/SIGHUP/SIGINT for as long as a run may go
and hands each to whoever listens, in any thread; a signal before anyone listens is kept."""

from __future__ import annotations

import doctest
import signal
import threading

import pytest

from rig import stop_signals


def test_its_docstring_example_holds():
    result = doctest.testmod(stop_signals)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("sig", stop_signals.STOP_SIGNALS)
def test_a_stop_signal_reaches_a_subscriber_in_another_thread_and_kills_nobody(sig):
    told = threading.Event()
    got = []
    subscribed = threading.Event()

    def engine_thread() -> None:
        unsubscribe = stop_signals.subscribe(lambda s: (got.append(s), told.set()))
        subscribed.set()
        assert told.wait(30)
        unsubscribe()

    with stop_signals.catching():
        worker = threading.Thread(target=engine_thread)
        worker.start()
        assert subscribed.wait(30)
        signal.raise_signal(sig)  # would end this process without the catching
        worker.join(30)
        assert stop_signals.received() == sig
    assert got == [sig]


def test_catching_nests_and_puts_the_previous_handlers_back():
    before = {sig: signal.getsignal(sig) for sig in stop_signals.STOP_SIGNALS}
    with stop_signals.catching():
        caught = signal.getsignal(signal.SIGTERM)
        with stop_signals.catching():
            assert signal.getsignal(signal.SIGTERM) is caught
        assert stop_signals.active() and signal.getsignal(signal.SIGTERM) is caught
    assert not stop_signals.active()
    assert {sig: signal.getsignal(sig) for sig in stop_signals.STOP_SIGNALS} == before


def test_outside_the_main_thread_catching_changes_nothing():
    seen = []

    def other() -> None:
        with stop_signals.catching():
            seen.append(stop_signals.active())

    worker = threading.Thread(target=other)
    worker.start()
    worker.join(30)
    assert seen == [False]
