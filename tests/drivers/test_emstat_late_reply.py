"""An EmStat4 reply that comes after the driver gave up on it is recognised and dropped, never
taken for the reply to a later command (issue 9).

Found by the fault soak on a loaded machine at 0.1 s timeouts: a stall of the host process made
replies late, and two channels ended at the same instant, one on 'no answer within 0.1 s', the
other on DeviceError 'Z!0006': the late reply to the resync's own abort read as the acceptance
of the script sent after it. Here the device is a transcript on a real pseudo-terminal
(tests/support/pty_replay.py): a reply held back by the transcript goes out with the reply to
the next command, exactly where a device answering in order puts a late reply, so nothing
depends on wall-clock margins (the driver's timeout simply expires on a silent device).
"""

from __future__ import annotations

import pytest

from drivers.base import InstrumentTimeout
from drivers.emstat import build_cp_script, script_bytes
from tests.drivers.test_emstat_driver import (
    ABORT,
    ACCEPTED_CP,
    CP_SCRIPT,
    END,
    OUTPUT_OFF,
    VERSION_REPLY,
    cp_package,
    start_cp,
)
from tests.support.emstat_replay import Make
from tests.support.pty_replay import SILENCE

SERIAL_REPLY = b"iES4-12345\n"
TIMEOUT_S = 0.2


def three_packages() -> bytes:
    return cp_package(1) + cp_package(2) + cp_package(3)


def test_a_late_version_reply_is_never_read_as_the_serial_number(replay: Make) -> None:
    # the first 't' is answered only after the second was sent; the second's own reply comes
    # with the next command's
    es, _ = replay([(b"t\n", SILENCE), (b"t\n", VERSION_REPLY),
                    (b"i\n", VERSION_REPLY + SERIAL_REPLY)], retries=1, timeout_s=TIMEOUT_S)
    assert es.identify().startswith("es4_lr")
    assert es.serial_number() == "ES4-12345"
    assert es.late_replies == 2   # both version lines, dropped
    assert es.resyncs == 1        # the 't' asked again: one fault, counted once


def test_a_late_query_reply_at_a_script_start_is_dropped_and_the_script_runs(
        replay: Make) -> None:
    es, _ = replay([(b"i\n", SILENCE),
                    (CP_SCRIPT, SERIAL_REPLY + ACCEPTED_CP + three_packages() + END)],
                   retries=0, timeout_s=TIMEOUT_S)
    with pytest.raises(InstrumentTimeout):   # the query's own timeout: the caller's to handle
        es.serial_number()
    start_cp(es)
    samples, ended = es.read_samples(3)
    assert [s.t_s for s in samples] == [1, 2, 3] and ended
    assert es.late_replies == 1


def test_a_late_reply_to_the_resyncs_abort_is_not_taken_for_the_scripts_acceptance(
        replay: Make) -> None:
    # the script's 'e' is late, so is the reply to the resync's first Z; the second Z finds
    # nothing to abort ('Z!0006') and that reply lands where the resent script's 'e' is awaited
    es, _ = replay([(CP_SCRIPT, SILENCE), (ABORT, SILENCE),
                    (ABORT, ACCEPTED_CP + b"Z\n" + END),
                    (CP_SCRIPT, b"Z!0006\n" + ACCEPTED_CP + three_packages() + END)],
                   retries=2, timeout_s=TIMEOUT_S)
    start_cp(es)
    samples, ended = es.read_samples(3)
    assert [s.t_s for s in samples] == [1, 2, 3] and ended
    assert es.resyncs == 2        # the lost acceptance and the lost abort reply, once each
    assert es.late_replies == 1   # the 'Z!0006'


def test_a_late_abort_reply_after_a_step_is_dropped_by_the_next_step_and_by_output_off(
        replay: Make) -> None:
    es, _ = replay([(CP_SCRIPT, ACCEPTED_CP + cp_package(1)), (ABORT, SILENCE),
                    (ABORT, b"Z\n" + END),
                    (CP_SCRIPT, b"Z!0006\n" + ACCEPTED_CP + three_packages() + END),
                    (OUTPUT_OFF, b"e\n\n")],
                   retries=1, timeout_s=TIMEOUT_S)
    start_cp(es)
    assert [s.t_s for s in es.read_samples(1)[0]] == [1]
    es.abort()                 # the engine's stop at a cutoff: its Z answered late
    start_cp(es)
    samples, ended = es.read_samples(3)
    assert [s.t_s for s in samples] == [1, 2, 3] and ended
    es.output_off()
    assert es.resyncs == 1 and es.late_replies == 1


def test_a_late_abort_reply_at_output_off_is_dropped_and_the_output_confirmed_off(
        replay: Make) -> None:
    es, _ = replay([(CP_SCRIPT, ACCEPTED_CP + cp_package(1)), (ABORT, SILENCE),
                    (ABORT, b"Z\n" + END), (OUTPUT_OFF, b"Z!0006\ne\n\n")],
                   retries=1, timeout_s=TIMEOUT_S)
    start_cp(es)
    es.read_samples(1)
    es.output_off()   # raised DeviceError 'Z!0006' before: the cell's off was never confirmed
    assert es.late_replies == 1


CHUNK = script_bytes(build_cp_script(1.13e-3, 1.0, 2.0, -0.5, 0.5))


def test_a_late_reply_at_a_chunk_boundary_is_dropped_and_the_step_goes_on(replay: Make) -> None:
    # a 4 s step in chunks of 2 s; the second chunk's 'e' and the resync's first abort are late
    es, _ = replay([(CHUNK, ACCEPTED_CP + cp_package(1) + cp_package(2) + END),
                    (CHUNK, SILENCE), (ABORT, SILENCE), (ABORT, ACCEPTED_CP + b"Z\n" + END),
                    (CHUNK, b"Z!0006\n" + ACCEPTED_CP + cp_package(1) + cp_package(2) + END)],
                   retries=2, timeout_s=TIMEOUT_S, host_watchdog_s=2.0)
    es.start_current(1.13e-3, interval_s=1.0, duration_s=4.0, e_min_V=-0.5, e_max_V=0.5)
    first, ended = es.read_samples(2)
    second, ended = es.read_samples(4)
    assert [s.t_s for s in first + second] == [1, 2, 3, 4] and ended
    assert es.chunks_started == 1 and es.resyncs == 2 and es.late_replies == 1


# ---- every fault counted once, also where nothing is read after it (the soak's short counts) --
def test_a_lost_reply_at_output_off_is_counted_as_recovered(replay: Make) -> None:
    # the channel's last command: before, its retried attempt was in no count, so a fault on
    # the wire at a channel's end left no event
    es, _ = replay([(OUTPUT_OFF, SILENCE), (ABORT, b"Z!0006\n"), (OUTPUT_OFF, b"e\n\n")],
                   retries=1, timeout_s=TIMEOUT_S)
    es.output_off()
    assert es.resyncs == 1


def test_a_garbled_package_an_abort_drops_is_reported(replay: Make) -> None:
    garbled = cp_package(2).replace(b"eb", b"e?", 1)
    es, _ = replay([(CP_SCRIPT, ACCEPTED_CP + cp_package(1)),
                    (ABORT, garbled + b"Z\n" + END)], timeout_s=TIMEOUT_S)
    start_cp(es)
    assert len(es.read_samples(1)[0]) == 1
    es.abort()
    assert len(es.rejected) == 1 and "dropped unread" in es.rejected[0]


def test_an_error_answering_a_host_command_inside_a_scripts_output_does_not_end_the_step(
        replay: Make) -> None:
    # the soak's DeviceError 'Z!0006' ended a channel; wherever such a line lands it is a late
    # reply to a command, not the script's own runtime error
    es, _ = replay([(CP_SCRIPT, ACCEPTED_CP + cp_package(1) + b"Z!0006\n" + cp_package(2)
                     + cp_package(3) + END)], timeout_s=TIMEOUT_S)
    start_cp(es)
    samples, ended = es.read_samples(3)
    assert [s.t_s for s in samples] == [1, 2, 3] and ended
    assert es.late_replies == 1
