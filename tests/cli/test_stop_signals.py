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


@pytest.fixture
def started_from_a_terminal():
    """SIGHUP and SIGINT at their defaults for the test, also in a suite run under nohup."""
    before = {sig: signal.signal(sig, signal.SIG_DFL) for sig in stop_signals.RESPECTED_IF_IGNORED}
    yield
    for sig, handler in before.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize("sig", stop_signals.STOP_SIGNALS)
def test_a_stop_signal_reaches_a_subscriber_in_another_thread_and_kills_nobody(
        sig, started_from_a_terminal):
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


@pytest.fixture
def started_under_nohup():
    """This process as `nohup` starts a command: SIGHUP ignored (put back after)."""
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    yield
    signal.signal(signal.SIGHUP, before)


def test_an_inherited_ignore_of_sighup_is_kept_and_sigterm_is_still_caught(started_under_nohup):
    with stop_signals.catching():
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        signal.raise_signal(signal.SIGHUP)  # the terminal closes: nothing happens
        assert stop_signals.received() is None
        signal.raise_signal(signal.SIGTERM)  # `kill` or `systemctl stop` still stops the run
        assert stop_signals.received() == signal.SIGTERM
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN


def test_ctrl_c_pressed_in_this_process_stops_even_with_sigint_ignored():
    """A key pressed in the monitor is asked for here: it is not a signal the caller ignored."""
    got = []
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with stop_signals.catching():
            unsubscribe = stop_signals.subscribe(got.append)
            stop_signals.request(signal.SIGINT)
            unsubscribe()
            assert stop_signals.received() == signal.SIGINT
    finally:
        signal.signal(signal.SIGINT, before)
    assert got == [signal.SIGINT]
