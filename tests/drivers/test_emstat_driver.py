"""The EmStat4 driver against transcripts: the exact bytes it sends, what it makes of each reply.

Every test runs the real driver on a real pseudo-terminal (tests/support/pty_replay.py); the
transcript is checked at teardown, so a driver that sends one byte more or less fails the test.
"""

from __future__ import annotations

import math
import time

import pytest

from drivers.base import (
    InstrumentGone,
    InstrumentProtocolError,
    InstrumentTimeout,
    Potentiostat,
    Sample,
)
from drivers.emstat import DeviceError, EmStat4, NotAnEmStat4
from drivers.methodscript import STATUS_OVERLOAD, format_package
from tests.support.emstat_replay import Make
from tests.support.pty_replay import GARBAGE, HANG_UP, SILENCE, Pause, ReplayDevice

VERSION_REPLY = b"tes4_lr#Jan 10 2025 11:24:06\nR1.6.2*\n"

CP_SCRIPT = b"""e
var c
var p
var t
set_pgstat_chan 0
set_pgstat_mode 6
set_max_bandwidth 200
set_range ab 500m
set_autoranging ab 50m 3
set_range db 10m
set_autoranging db 10m 10m
set_i 1130u
cell_on
timer_start
meas_loop_cp p c 1130u 1 3
\ttimer_get t
\tpck_start
\tpck_add t
\tpck_add p
\tpck_add c
\tpck_end
\tif p > 500m
\t\tbreakloop
\tendif
\tif p < -500m
\t\tbreakloop
\tendif
endloop
on_finished:
cell_off

"""
OUTPUT_OFF = b"e\nset_pgstat_mode 0\ncell_off\n\n"
ABORT = b"Z\n"
ACCEPTED_CP = b"e\nM000A\n"
END = b"*\n\n"


def cp_package(t: float, e: float = 0.0213, i: float = 1.13e-3, status: int = 0) -> bytes:
    return format_package([("eb", t), ("ab", e), ("db", i)], status).encode() + b"\n"


def start_cp(es: EmStat4) -> None:
    es.start_current(1.13e-3, interval_s=1.0, duration_s=3.0, e_min_V=-0.5, e_max_V=0.5)


# ---- queries -----------------------------------------------------------------------------------
def test_identify_sends_t_and_returns_the_firmware_text(replay: Make) -> None:
    es, _ = replay([(b"t\n", VERSION_REPLY)])
    assert es.identify() == "es4_lr#Jan 10 2025 11:24:06 R1.6.2"
    assert isinstance(es, Potentiostat)


def test_identify_refuses_a_device_that_is_not_an_emstat4_without_retrying(replay: Make) -> None:
    es, _ = replay([(b"t\n", b"tespico#Jan 10 2025\nR1.3*\n")], retries=2)
    with pytest.raises(NotAnEmStat4, match="espico"):
        es.identify()


def test_identify_retries_after_one_garbled_reply(replay: Make) -> None:
    es, _ = replay([(b"t\n", GARBAGE), (b"t\n", VERSION_REPLY)], retries=1)
    assert es.identify().startswith("es4_lr")


def test_identify_times_out_after_its_retries(replay: Make) -> None:
    es, _ = replay([(b"t\n", SILENCE), (b"t\n", SILENCE)], retries=1, timeout_s=0.2)
    t0 = time.monotonic()
    with pytest.raises(InstrumentTimeout):
        es.identify()
    assert time.monotonic() - t0 < 1.5  # two timeouts and one short backoff


def test_identify_error_code_reply_raises_with_the_code(replay: Make) -> None:
    es, _ = replay([(b"t\n", b"!0001\n")])
    with pytest.raises(DeviceError, match="0x0001") as info:
        es.identify()
    assert info.value.code == 1


def test_serial_number_sends_i(replay: Make) -> None:
    es, _ = replay([(b"i\n", b"iES4SIM0001\n")])
    assert es.serial_number() == "ES4SIM0001"


def test_a_query_while_a_script_runs_is_refused(replay: Make) -> None:
    es, _ = replay([(CP_SCRIPT, ACCEPTED_CP), (ABORT, b"Z\n" + END)])
    start_cp(es)
    with pytest.raises(RuntimeError, match="script is running"):
        es.identify()
    es.abort()


# ---- the scripts, byte for byte ------------------------------------------------------------------
def test_start_current_sends_the_cp_script_with_the_window_inside(replay: Make) -> None:
    es, _ = replay([(CP_SCRIPT, ACCEPTED_CP), (ABORT, b"Z\n" + END)])
    start_cp(es)
    es.abort()


def test_start_potential_sends_the_ca_script_with_the_current_limit_inside(replay: Make) -> None:
    script = b"""e
var c
var p
var t
set_pgstat_chan 0
set_pgstat_mode 3
set_max_bandwidth 200
set_range_minmax da -50m -50m
set_range ba 1m
set_autoranging ba 100n 1m
set_e -50m
cell_on
timer_start
meas_loop_ca p c -50m 100m 60
\ttimer_get t
\tpck_start
\tpck_add t
\tpck_add p
\tpck_add c
\tpck_end
\tif c > 500u
\t\tbreakloop
\tendif
\tif c < -500u
\t\tbreakloop
\tendif
endloop
on_finished:
cell_off

"""
    es, _ = replay([(script, b"e\nM0007\n"), (ABORT, b"Z\n" + END)])
    es.start_potential(-0.05, interval_s=0.1, duration_s=60, i_max_A=5e-4)
    es.abort()


def test_start_open_circuit_sends_the_ocp_script(replay: Make) -> None:
    script = b"""e
var p
var t
set_pgstat_chan 0
set_pgstat_mode 2
set_range ab 3
set_autoranging ab 50m 3
cell_off
timer_start
meas_loop_ocp p 500m 2
\ttimer_get t
\tpck_start
\tpck_add t
\tpck_add p
\tpck_end
endloop

"""
    packages = b"".join(format_package([("eb", t), ("ab", 2.71)]).encode() + b"\n"
                        for t in (0.5, 1.0, 1.5, 2.0))
    es, _ = replay([(script, b"e\nM000B\n" + packages + END)])
    es.start_open_circuit(interval_s=0.5, duration_s=2)
    samples, ended = es.read_samples(math.inf)
    assert ended
    assert [s.t_s for s in samples] == [0.5, 1.0, 1.5, 2.0]
    assert all(s.current_A == 0.0 and s.potential_V == pytest.approx(2.71) for s in samples)


EIS_SCRIPT = b"""e
var h
var r
var j
var t
set_pgstat_chan 0
set_pgstat_mode 3
set_max_bandwidth 400k
set_range_minmax da 0 0
set_range ba 10m
set_autoranging ba 100n 10m
set_range ab 3
set_autoranging ab 3 3
set_e 0
cell_on
timer_start
meas_loop_eis h r j 10m 10000 1 5 0
\ttimer_get t
\tpck_start
\tpck_add t
\tpck_add h
\tpck_add r
\tpck_add j
\tpck_end
endloop
on_finished:
cell_off

"""


def eis_package(t: float, f: float) -> bytes:
    z = complex(10 + 100 / (1 + f), -50 / (1 + f))
    return format_package([("eb", t), ("dc", f), ("cc", z.real), ("cd", z.imag)]).encode() + b"\n"


def test_eis_streams_points_on_the_sweep_schedule(replay: Make) -> None:
    # 10 kHz .. 1 Hz, 5 points; each takes max(1 s, 3 periods): due at 1, 2, 3, 4 and 7 s
    points = [(1, 1e4), (2, 1e3), (3, 100), (4, 10), (7, 1)]
    reply = b"e\nM000D\n" + b"".join(eis_package(t, f) for t, f in points) + END
    es, _ = replay([(EIS_SCRIPT, reply)])
    es.start_eis(1e4, 1.0, 5, amplitude_V=0.01, dc_V=0.0)
    first, ended = es.read_eis(3.5)
    assert [f for _, f, _ in first] == [1e4, 1e3, 100] and not ended
    rest, ended = es.read_eis(math.inf)
    assert ended and [t for t, _, _ in rest] == [4, 7]
    assert rest[-1][1:] == (1.0, pytest.approx(complex(60, -25), rel=1e-6))


def test_eis_convenience_measures_at_open_circuit_first(replay: Make) -> None:
    ocp = b"".join(format_package([("eb", t), ("ab", 0.0123)]).encode() + b"\n"
                   for t in (0.25, 0.5, 0.75, 1.0))
    eis = EIS_SCRIPT.replace(b"set_e 0", b"set_e 12300u").replace(
        b"set_range_minmax da 0 0", b"set_range_minmax da 12300u 12300u").replace(
        b"10m 10000 1 5 0\n", b"5m 10000 100 3 12300u\n")
    points = [(1, 1e4), (2, 1e3), (3, 100)]
    es, _ = replay([
        (b"e\n" + b"\n".join(_ocp_lines()) + b"\n\n", b"e\nM000B\n" + ocp + END),
        (eis, b"e\nM000D\n" + b"".join(eis_package(t, f) for t, f in points) + END),
    ])
    spectrum = es.eis([1e4, 1e3, 100], amplitude_V=0.005)
    assert [f for f, _ in spectrum] == [1e4, 1e3, 100]
    assert all(isinstance(z, complex) for _, z in spectrum)


def _ocp_lines() -> list[bytes]:
    return [b"var p", b"var t", b"set_pgstat_chan 0", b"set_pgstat_mode 2",
            b"set_range ab 3", b"set_autoranging ab 50m 3", b"cell_off",
            b"timer_start", b"meas_loop_ocp p 250m 1", b"\ttimer_get t", b"\tpck_start",
            b"\tpck_add t", b"\tpck_add p", b"\tpck_end", b"endloop"]


def test_arguments_beyond_the_instrument_are_refused_before_any_byte(replay: Make) -> None:
    es, _ = replay([])
    with pytest.raises(ValueError, match="0.03 A"):
        es.start_current(0.05, 1, 10, -1, 1)
    with pytest.raises(ValueError, match="window"):
        es.start_current(1e-3, 1, 10, 1, -1)
    with pytest.raises(ValueError, match="interval"):
        es.start_open_circuit(0, 10)


# ---- streaming ---------------------------------------------------------------------------------
def test_read_samples_returns_every_sample_and_the_end(replay: Make) -> None:
    reply = ACCEPTED_CP + cp_package(1) + cp_package(2) + cp_package(3, e=0.03) + END
    es, _ = replay([(CP_SCRIPT, reply)])
    start_cp(es)
    samples, ended = es.read_samples(math.inf)
    assert ended
    assert [s.t_s for s in samples] == [1, 2, 3]
    assert samples[-1] == Sample(3.0, pytest.approx(0.03), pytest.approx(1.13e-3), False)
    assert es.read_samples(10) == ([], True)  # nothing runs any more


def test_read_samples_leaves_later_packages_for_a_later_call(replay: Make) -> None:
    reply = ACCEPTED_CP + cp_package(1) + cp_package(2) + cp_package(3) + END
    es, _ = replay([(CP_SCRIPT, reply)])
    start_cp(es)
    time.sleep(0.05)  # everything has arrived: the driver must still stop at until_s
    assert [s.t_s for s in es.read_samples(1.5)[0]] == [1]
    assert es.read_samples(1.5) == ([], False)
    samples, ended = es.read_samples(2.0)  # package 2 is due at exactly 2.0
    assert [s.t_s for s in samples] == [2] and not ended
    samples, ended = es.read_samples(3.0)  # the last package, then the end
    assert [s.t_s for s in samples] == [3] and ended


def test_read_samples_waits_for_what_is_due_and_no_more(replay: Make) -> None:
    reply = [ACCEPTED_CP, cp_package(1), Pause(0.3), cp_package(2), Pause(0.3), cp_package(3),
             END]
    es, _ = replay([(CP_SCRIPT, reply)])
    start_cp(es)
    t0 = time.monotonic()
    samples, ended = es.read_samples(2.0)
    waited = time.monotonic() - t0
    assert [s.t_s for s in samples] == [1, 2] and not ended
    assert 0.25 < waited < 0.55  # waited for package 2, not for package 3
    samples, ended = es.read_samples(3.0)
    assert [s.t_s for s in samples] == [3] and ended


def test_a_safety_breakloop_ends_the_step_early(replay: Make) -> None:
    reply = ACCEPTED_CP + cp_package(1) + cp_package(2, e=0.51) + END
    es, _ = replay([(CP_SCRIPT, reply)])
    start_cp(es)
    samples, ended = es.read_samples(2.5)
    assert ended and [s.potential_V for s in samples] == pytest.approx([0.0213, 0.51])


def test_the_overload_status_marks_the_sample(replay: Make) -> None:
    reply = ACCEPTED_CP + cp_package(1) + cp_package(2, e=3.0, status=STATUS_OVERLOAD) + END
    es, _ = replay([(CP_SCRIPT, reply)])
    start_cp(es)
    samples, _ = es.read_samples(math.inf)
    assert [s.overload for s in samples] == [False, True]


def test_an_error_code_in_the_stream_raises_with_the_code_and_the_line(replay: Make) -> None:
    es, _ = replay([(CP_SCRIPT, ACCEPTED_CP + cp_package(1) + b"!0004\n"),
                    (ABORT, b"Z\n" + END), (OUTPUT_OFF, b"e\n\n")])
    start_cp(es)
    with pytest.raises(InstrumentProtocolError, match=r"0x0004.*'!0004'") as info:
        es.read_samples(2)
    assert info.value.code == 4
    es.output_off()  # the safety path still works: abort, then the output-off script


def test_a_refused_script_raises_and_leaves_nothing_running(replay: Make) -> None:
    es, _ = replay([(CP_SCRIPT, b"!0003\n"), (OUTPUT_OFF, b"e\n\n")])
    with pytest.raises(DeviceError, match="0x0003"):
        start_cp(es)
    es.output_off()  # no abort first: nothing runs


def test_a_garbled_package_is_skipped_and_reported_the_good_ones_kept(replay: Make) -> None:
    garbled = cp_package(2).replace(b";ab", b";a?", 1)
    es, _ = replay([(CP_SCRIPT, ACCEPTED_CP + cp_package(1) + garbled + cp_package(3) + END)])
    start_cp(es)
    samples, ended = es.read_samples(3)
    assert [s.t_s for s in samples] == [1.0, 3.0] and ended
    assert len(es.rejected) == 1 and "a?" in es.rejected[0]


def test_silence_mid_stream_raises_a_timeout_and_output_off_recovers(replay: Make) -> None:
    es, _ = replay([(CP_SCRIPT, ACCEPTED_CP + cp_package(1)),
                    (ABORT, b"Z\n" + END), (OUTPUT_OFF, b"e\n\n")], timeout_s=0.2)
    start_cp(es)
    with pytest.raises(InstrumentTimeout):
        es.read_samples(2)
    es.output_off()


# ---- stopping ----------------------------------------------------------------------------------
def test_abort_a_running_script_drains_its_end(replay: Make) -> None:
    # packages already due come before the Z, then the loop end and the script end
    es, _ = replay([(CP_SCRIPT, ACCEPTED_CP), (ABORT, cp_package(1) + b"Z\n" + END)])
    start_cp(es)
    es.abort()
    assert es.read_samples(5) == ([], True)


def test_abort_with_nothing_running_accepts_z_0006(replay: Make) -> None:
    es, _ = replay([(ABORT, b"Z!0006\n")])
    es.abort()


def test_starting_a_step_while_one_runs_aborts_it_first(replay: Make) -> None:
    es, _ = replay([(CP_SCRIPT, ACCEPTED_CP), (ABORT, b"Z\n" + END),
                    (CP_SCRIPT, ACCEPTED_CP + cp_package(1)), (ABORT, b"Z\n" + END)])
    start_cp(es)
    start_cp(es)
    assert [s.t_s for s in es.read_samples(1)[0]] == [1]
    es.abort()


def test_output_off_with_nothing_running_sends_only_the_off_script(replay: Make) -> None:
    es, _ = replay([(OUTPUT_OFF, b"e\n\n")])
    es.output_off()


def test_output_off_raises_when_the_instrument_never_confirms(replay: Make) -> None:
    es, _ = replay([(CP_SCRIPT, ACCEPTED_CP), (ABORT, SILENCE), (OUTPUT_OFF, SILENCE)],
                   timeout_s=0.2)
    start_cp(es)
    with pytest.raises(InstrumentTimeout):
        es.output_off()


def test_output_off_retries_until_the_instrument_confirms(replay: Make) -> None:
    es, _ = replay([(OUTPUT_OFF, GARBAGE), (ABORT, b"Z!0006\n"), (OUTPUT_OFF, b"e\n\n")],
                   retries=1)
    es.output_off()


def test_a_vanished_port_raises_instrument_gone(replay: Make) -> None:
    es, _ = replay([(b"t\n", HANG_UP)], retries=2)
    with pytest.raises(InstrumentGone):
        es.identify()


def test_close_switches_the_output_off_then_the_port_is_gone(replay: Make) -> None:
    es, _ = replay([(CP_SCRIPT, ACCEPTED_CP), (ABORT, b"Z\n" + END), (OUTPUT_OFF, b"e\n\n")])
    start_cp(es)
    es.close()
    es.close()  # twice is fine
    with pytest.raises(InstrumentGone):
        es.identify()


def test_from_serial_wraps_an_open_port() -> None:
    import serial

    with ReplayDevice([(b"i\n", b"iES4-7\n"), (OUTPUT_OFF, b"e\n\n")]) as device:
        port = serial.serial_for_url(device.port, baudrate=921600)
        with EmStat4.from_serial(port, timeout_s=0.5) as es:
            assert es.serial_number() == "ES4-7"
        assert not port.is_open  # leaving the block switched the output off and closed it
        device.check()
