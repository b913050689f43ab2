"""The simulated EmStat4 against a plain pyserial client: the bytes of docs/methodscript.md."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import serial

from drivers.base import InstrumentProtocolError
from drivers.methodscript import (
    STATUS_OVERLOAD,
    error_code,
    format_si,
    parse_package,
    parse_package_variables,
)
from rig.clock import RealClock, VirtualClock
from rig.sim.cell import PRESETS, NaCell
from rig.sim.mscript import ERR_UNEXPECTED_CHAR, ERR_UNEXPECTED_END
from rig.sim.emstat import (
    ERR_BAD_ARGUMENT,
    ERR_BAD_LITERAL,
    ERR_BAD_STRUCTURE,
    ERR_BUSY,
    ERR_UNKNOWN_COMMAND,
    ERR_UNKNOWN_SCRIPT_COMMAND,
    ERR_UNKNOWN_VARIABLE,
    ERR_WRONG_MODE,
    FaultProfile,
    SimulatedEmStat4,
    eis_frequencies,
)

I_1MA_CM2 = 1.13e-3  # 1 mA/cm^2 on the default 1.13 cm^2 electrode


def cp_script(current_A: float, interval_s: float, duration_s: float,
              e_min_V: float = -1.0, e_max_V: float = 1.0) -> str:
    i = format_si(current_A)
    return f"""var c
var p
var t
set_pgstat_chan 0
set_pgstat_mode 6
set_max_bandwidth 200
set_range ba 10m
set_autoranging ba 10m 10m
set_i {i}
cell_on
timer_start
meas_loop_cp p c {i} {format_si(interval_s)} {format_si(duration_s)}
\ttimer_get t
\tpck_start
\tpck_add t
\tpck_add p
\tpck_add c
\tpck_end
\tif p > {format_si(e_max_V)}
\t\tbreakloop
\tendif
\tif p < {format_si(e_min_V)}
\t\tbreakloop
\tendif
endloop
on_finished:
cell_off
"""


def ocp_script(interval_s: float, duration_s: float) -> str:
    return f"""var p
var t
set_pgstat_chan 0
set_pgstat_mode 2
cell_off
timer_start
meas_loop_ocp p {format_si(interval_s)} {format_si(duration_s)}
\ttimer_get t
\tpck_start
\tpck_add t
\tpck_add p
\tpck_end
endloop
"""


def eis_script(f_start: float, f_end: float, n_points: int) -> str:
    return f"""var h
var r
var j
var t
set_pgstat_chan 0
set_pgstat_mode 3
set_max_bandwidth 400k
set_e 0
cell_on
timer_start
meas_loop_eis h r j 10m {format_si(f_start)} {format_si(f_end)} {n_points} 0
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


def send_script(ser: serial.Serial, text: str) -> None:
    ser.write(b"e\n" + text.encode() + b"\n")


def read_line(ser: serial.Serial) -> str:
    raw = ser.readline()
    assert raw.endswith(b"\n"), f"no complete line before timeout: {raw!r}"
    return raw.decode()[:-1]


def read_until_end(ser: serial.Serial) -> list[str]:
    """Lines up to and including the empty line that ends a script's output."""
    lines = [read_line(ser)]
    while lines[-1] != "":
        lines.append(read_line(ser))
    return lines


def start_accepted(ser: serial.Serial, text: str, loop_id: str) -> None:
    send_script(ser, text)
    assert read_line(ser) == "e"
    assert read_line(ser) == loop_id


def wait_until(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def packages(lines: list[str]) -> list[dict[str, float]]:
    return [parse_package(line) for line in lines if line.startswith("P")]


def glyme_cell(cell_type: str, seed: int = 0) -> NaCell:
    """A 1.13 cm^2 cell in 1 M NaPF6/diglyme (Na||Cu starts with no Na on the copper)."""
    return NaCell(cell_type, 1.13, PRESETS["glyme"], seed=seed)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


def open_sim(cell: NaCell, clock: VirtualClock | RealClock,
             fault: FaultProfile | None = None) -> tuple[SimulatedEmStat4, serial.Serial]:
    sim = SimulatedEmStat4(cell, clock, fault=fault).start()
    return sim, serial.Serial(sim.port, timeout=2)


@pytest.fixture
def sym(clock: VirtualClock) -> Iterator[tuple[SimulatedEmStat4, serial.Serial]]:
    sim, ser = open_sim(glyme_cell("symmetric", seed=1), clock)
    yield sim, ser
    ser.close()
    sim.close()


def test_identity_replies_are_byte_exact(sym: tuple[SimulatedEmStat4, serial.Serial]) -> None:
    _, ser = sym
    ser.write(b"t\n")
    assert ser.read(len(b"tes4_lr#narig-sim\nR1.0*\n")) == b"tes4_lr#narig-sim\nR1.0*\n"
    ser.write(b"i\n")
    assert ser.read(len(b"iES4SIM0001\n")) == b"iES4SIM0001\n"


def test_cp_packages_arrive_at_multiples_of_interval_with_sign_of_current(
    sym: tuple[SimulatedEmStat4, serial.Serial], clock: VirtualClock,
) -> None:
    sim, ser = sym
    for current in (I_1MA_CM2, -I_1MA_CM2):
        start_accepted(ser, cp_script(current, 1.0, 10.0), "M000A")
        assert sim.output_on
        clock.advance(5.0)
        first = [parse_package(read_line(ser)) for _ in range(5)]
        clock.advance(5.0)
        rest = read_until_end(ser)
        pkgs = first + packages(rest)
        assert rest[-2:] == ["*", ""]
        assert [p["eb"] for p in pkgs] == pytest.approx([1.0 * k for k in range(1, 11)])
        for p in pkgs:
            assert p["db"] == pytest.approx(current), "CP packages carry the set current (db)"
            assert p["ab"] * current > 0, "E has the sign of I"
            assert 0.005 < abs(p["ab"]) < 0.1, "tens of mV for glyme at 1 mA/cm^2"
        assert not sim.output_on and not sim.running


def test_packages_due_only_when_time_has_come(
    sym: tuple[SimulatedEmStat4, serial.Serial], clock: VirtualClock,
) -> None:
    _, ser = sym
    start_accepted(ser, cp_script(I_1MA_CM2, 0.1, 1.0), "M000A")
    clock.advance(0.25)
    assert [parse_package(read_line(ser))["eb"] for _ in range(2)] == pytest.approx([0.1, 0.2])
    ser.timeout = 0.1
    assert ser.readline() == b""
    ser.timeout = 2
    for _ in range(10):
        clock.advance(0.1)  # accumulated float steps still hit every 0.1 s package
    assert [p["eb"] for p in packages(read_until_end(ser))] == pytest.approx(
        [0.1 * k for k in range(3, 11)])


def test_duration_not_a_multiple_of_interval_ends_with_a_package_at_duration(
    sym: tuple[SimulatedEmStat4, serial.Serial], clock: VirtualClock,
) -> None:
    _, ser = sym
    start_accepted(ser, cp_script(I_1MA_CM2, 2.0, 5.0), "M000A")
    clock.advance(10.0)
    assert [p["eb"] for p in packages(read_until_end(ser))] == pytest.approx([2.0, 4.0, 5.0])


def test_potential_cutoff_ends_stripping_from_bare_copper_at_first_package_above(
    clock: VirtualClock,
) -> None:
    sim, ser = open_sim(glyme_cell("na_cu", seed=0), clock)
    try:
        start_accepted(ser, cp_script(I_1MA_CM2, 1.0, 3600.0, e_max_V=1.0), "M000A")
        clock.advance(3600.0)
        lines = read_until_end(ser)
        pkgs = packages(lines)
        assert lines[-2:] == ["*", ""]
        assert len(pkgs) < 3600, "the instrument stopped itself before the duration"
        assert pkgs[-1]["ab"] > 1.0
        assert all(p["ab"] <= 1.0 for p in pkgs[:-1])
        assert not sim.output_on
    finally:
        ser.close()
        sim.close()


def test_ocp_packages_carry_time_and_potential_only(
    sym: tuple[SimulatedEmStat4, serial.Serial], clock: VirtualClock,
) -> None:
    sim, ser = sym
    start_accepted(ser, ocp_script(10.0, 60.0), "M000B")
    assert not sim.output_on
    clock.advance(60.0)
    lines = read_until_end(ser)
    pkgs = packages(lines)
    assert lines[-2:] == ["*", ""]
    assert [set(p) for p in pkgs] == [{"eb", "ab"}] * 6
    assert [p["eb"] for p in pkgs] == pytest.approx([10.0 * k for k in range(1, 7)])
    assert all(abs(p["ab"]) < 0.05 for p in pkgs), "a symmetric cell rests near 0 V"


def test_eis_sweeps_down_in_frequency_with_positive_real_impedance(
    sym: tuple[SimulatedEmStat4, serial.Serial], clock: VirtualClock,
) -> None:
    sim, ser = sym
    start_accepted(ser, eis_script(100e3, 0.1, 19), "M000D")
    assert sim.output_on
    clock.advance(200.0)
    lines = read_until_end(ser)
    pkgs = packages(lines)
    freqs = [p["dc"] for p in pkgs]
    assert freqs == pytest.approx(list(eis_frequencies(100e3, 0.1, 19)), rel=1e-5)
    assert all(a > b for a, b in itertools.pairwise(freqs))
    assert all(p["cc"] > 0 for p in pkgs)
    assert pkgs[0]["eb"] == pytest.approx(1.0)  # fast points take 1 s
    assert pkgs[-1]["eb"] - pkgs[-2]["eb"] == pytest.approx(30.0)  # 3 periods at 0.1 Hz
    assert lines[-2:] == ["*", ""] and not sim.output_on


def test_abort_replies_and_switches_the_output_off(
    sym: tuple[SimulatedEmStat4, serial.Serial], clock: VirtualClock,
) -> None:
    sim, ser = sym
    start_accepted(ser, cp_script(I_1MA_CM2, 1.0, 3600.0), "M000A")
    clock.advance(2.5)
    assert [parse_package(read_line(ser))["eb"] for _ in range(2)] == pytest.approx([1.0, 2.0])
    ser.write(b"Z\n")
    assert read_until_end(ser) == ["Z", "*", ""]
    assert not sim.output_on and not sim.running
    ser.write(b"Z\n")
    assert read_line(ser) == "Z!0006"


def test_output_off_script_answers_e_then_empty_line(
    sym: tuple[SimulatedEmStat4, serial.Serial],
) -> None:
    sim, ser = sym
    send_script(ser, "set_pgstat_mode 6\ncell_on\n")
    assert read_until_end(ser) == ["e", ""]
    assert sim.output_on
    send_script(ser, "set_pgstat_mode 0\ncell_off\n")
    assert read_until_end(ser) == ["e", ""]
    assert not sim.output_on


def test_cell_rests_at_open_circuit_between_scripts(clock: VirtualClock) -> None:
    cell = glyme_cell("symmetric")
    with SimulatedEmStat4(cell, clock):
        r_sei_0 = cell.r_sei_ohm
        clock.advance(100 * 3600.0)
        assert cell.time_s == pytest.approx(100 * 3600.0)
        assert cell.charge_passed_C == 0.0
        assert cell.r_sei_ohm > r_sei_0, "the SEI grows at rest"


def test_output_left_on_keeps_driving_the_cell(
    sym: tuple[SimulatedEmStat4, serial.Serial], clock: VirtualClock,
) -> None:
    sim, ser = sym
    send_script(ser, "set_pgstat_mode 6\nset_i 1130u\ncell_on\n")
    assert read_until_end(ser) == ["e", ""]
    clock.advance(3600.0)
    assert sim.cell.charge_passed_C == pytest.approx(1.13e-3 * 3600.0)


@pytest.mark.parametrize(("script", "code"), [
    ("var p\nfrobnicate p\n", ERR_UNKNOWN_SCRIPT_COMMAND),
    ("set_pgstat_mode 6\nset_i 1.5m\n", ERR_BAD_LITERAL),  # not <int><prefix>
    ("set_pgstat_mode 6\nset_i 1\n", ERR_BAD_ARGUMENT),  # 1 A: beyond the LR's 30 mA
    ("set_pgstat_mode 6\nset_i\n", ERR_UNEXPECTED_CHAR),  # the argument is missing
    ("set_pgstat_mode 6\nmeas_loop_cp p c 1m 1 10\nendloop\n", ERR_UNKNOWN_VARIABLE),
    ("var p\nvar c\nset_pgstat_mode 3\nmeas_loop_cp p c 1m 1 10\nendloop\n", ERR_WRONG_MODE),
    ("var p\nvar c\nset_pgstat_mode 6\nmeas_loop_cp p c 1m 1 10\n", ERR_UNEXPECTED_END),
    ("var p\nset_pgstat_mode 2\nmeas_loop_ocp p 1 10\n\tendif\nendloop\n", ERR_BAD_STRUCTURE),
    ("var p\nvar x\nset_pgstat_mode 2\nmeas_loop_ocp p 1 10\n\tif x > 1\n\tendif\nendloop\n",
     ERR_UNKNOWN_VARIABLE),  # x never gets a value
    ("set_pgstat_mode 0\ncell_on\n", ERR_WRONG_MODE),
])
def test_bad_scripts_are_refused_with_their_error_code(
    sym: tuple[SimulatedEmStat4, serial.Serial], script: str, code: int,
) -> None:
    sim, ser = sym
    send_script(ser, script)
    assert error_code(read_line(ser)) == code
    assert not sim.running


def test_unknown_host_command_and_second_script_are_refused(
    sym: tuple[SimulatedEmStat4, serial.Serial],
) -> None:
    _, ser = sym
    ser.write(b"x\n")
    assert read_line(ser) == f"x!{ERR_UNKNOWN_COMMAND:04X}"
    start_accepted(ser, ocp_script(1.0, 100.0), "M000B")
    send_script(ser, ocp_script(1.0, 100.0))
    assert error_code(read_line(ser)) == ERR_BUSY


def test_potential_beyond_compliance_is_clamped_and_flagged_overload(clock: VirtualClock) -> None:
    sim, ser = open_sim(glyme_cell("na_cu"), clock)  # bare copper at 10 mA: above 3 V
    try:
        start_accepted(ser, cp_script(10e-3, 1.0, 3.0, e_max_V=3.0), "M000A")
        clock.advance(3.0)
        pkgs = [parse_package_variables(x) for x in read_until_end(ser) if x.startswith("P")]
        assert len(pkgs) == 3
        for _, potential, current in pkgs:
            assert potential.value == 3.0
            # the measured potential says so; the set current (db) carries no status
            assert potential.status & STATUS_OVERLOAD and current.type == "db"
    finally:
        ser.close()
        sim.close()


def test_real_clock_pump_thread_delivers_packages_in_wall_time() -> None:
    clock = RealClock(speed=1000.0)
    sim, ser = open_sim(glyme_cell("symmetric", seed=2), clock)
    try:
        t0 = time.monotonic()
        start_accepted(ser, cp_script(I_1MA_CM2, 1.0, 200.0), "M000A")
        lines = read_until_end(ser)  # 200 s of clock time: 0.2 s of wall time
        wall = time.monotonic() - t0
        assert [p["eb"] for p in packages(lines)] == pytest.approx(list(range(1, 201)))
        assert 0.15 < wall < 2.0
    finally:
        ser.close()
        sim.close()


def test_close_stops_every_thread_and_is_idempotent(clock: VirtualClock) -> None:
    before = set(threading.enumerate())
    for c in (clock, RealClock(speed=10.0)):
        sim = SimulatedEmStat4(glyme_cell("symmetric"), c)
        with sim, serial.Serial(sim.port, timeout=1) as ser:
            ser.write(b"i\n")
            assert read_line(ser) == "iES4SIM0001"
        sim.close()
    assert set(threading.enumerate()) <= before
    assert clock._pumps == []


def test_no_reply_fault_makes_the_host_time_out(clock: VirtualClock) -> None:
    sim, ser = open_sim(glyme_cell("symmetric"), clock, FaultProfile(no_reply=1.0))
    try:
        ser.timeout = 0.2
        ser.write(b"i\n")
        assert ser.readline() == b""
    finally:
        ser.close()
        sim.close()


def test_garbled_and_truncated_lines_fail_to_parse(clock: VirtualClock) -> None:
    fault = FaultProfile(garbled_line=0.5, truncated_package=0.5, seed=3)
    sim, ser = open_sim(glyme_cell("symmetric"), clock, fault)
    try:
        send_script(ser, cp_script(I_1MA_CM2, 1.0, 50.0))
        wait_until(lambda: sim.running)
        clock.advance(50.0)
        ser.timeout = 0.3
        lines = ser.read(100_000).decode().split("\n")
        bad = 0
        for line in (x for x in lines if x.startswith("P")):
            try:
                parse_package(line)
            except InstrumentProtocolError:
                bad += 1
        assert bad > 10
    finally:
        ser.close()
        sim.close()


def test_disconnect_fault_leaves_a_dead_port_that_recovers(clock: VirtualClock) -> None:
    fault = FaultProfile(disconnect=1.0, dead_for_s=60.0)
    sim, ser = open_sim(glyme_cell("symmetric"), clock, fault)
    try:
        ser.timeout = 0.2
        ser.write(b"i\n")
        assert ser.readline() == b""
        wait_until(lambda: sim.port_dead)  # once the simulator's reader has taken the line
        clock.advance(61.0)
        assert not sim.port_dead
    finally:
        ser.close()
        sim.close()


def test_a_line_suffers_at_most_one_fault_so_each_fault_counted_is_a_damaged_line() -> None:
    """The fault soak found 3 of 14 EmStat channels 'one fault short': a package cut short and
    then garbled was two faults in the simulator's count, but one bad package on the wire."""
    from rig.sim.emstat import _Faults

    faults = _Faults(FaultProfile(garbled_line=1.0, truncated_package=1.0, seed=1))
    package, status = "Pda7F85F3Fu;ba48D503Dp,10,288", "M0005"
    got = faults.lines([package, status])
    assert package.startswith(got[0]) and got[0] != package and "?" not in got[0]  # cut short
    assert len(got[1]) == len(status) and "?" in got[1]  # garbled
    assert faults.injected["truncated_package"] + faults.injected["garbled_line"] == 2
