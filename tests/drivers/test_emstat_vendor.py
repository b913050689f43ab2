"""The EmStat4 as PalmSens documents it, not as our simulator and driver agree with each other.

* Scripts in the vendor's dialect (comments, ``store_var``, variables as arguments, ``11i``,
  ``set_range_minmax``, ``db``/``ab`` ranges, ``1M``) run on the simulator and give packages of
  the documented variable types with plausible numbers, decoded by a strict decoder written
  here from the documented package rules. (PalmSens's example scripts and Python package are
  under a licence that limits their use to PalmSens hardware, so they are not copied into this
  repository; these scripts are ours, written in the same dialect. The vendor's own CP, CA,
  OCP, EIS, GEIS, LSV and CV examples were run unchanged against the simulator by hand.)
* Transcript tests: the replies are the vendor's documented bytes (the README's package, the
  firmware names of PalmSens's instrument code, ``e!4001: Line 1, Col 16``), replayed over a pty.
* The driver's own scripts pass the grammar (the simulator's strict compiler, the vendor's
  command list, the documented literal forms).
* Reliability: lost and garbled replies are recovered from; a 1 % fault run completes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator

import pytest
import serial

from drivers.base import InstrumentProtocolError
from drivers.emstat import (
    DeviceError,
    EmStat4,
    MissingVariable,
    NotAnEmStat4,
    build_ca_script,
    build_cp_script,
    build_eis_script,
    build_ocp_script,
    script_bytes,
)
from rig.clock import VirtualClock
from rig.sim.cell import PRESETS, NaCell
from rig.sim.emstat import FaultProfile, SimulatedEmStat4
from rig.sim.mscript import ScriptError, compile_script
from tests.support.pty_replay import SILENCE

# ---- a strict decoder from the documented package rules (independent of drivers/) -------------
PREFIX = {"a": 1e-18, "f": 1e-15, "p": 1e-12, "n": 1e-9, "u": 1e-6, "m": 1e-3, " ": 1.0,
          "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18, "i": 1.0}
VARIABLE = re.compile(r"([a-z]{2})([0-9A-F]{7})([afpnumkMGTPEi ])((?:,[0-9A-F]+)*)")


def decode(line: str) -> dict[str, tuple[float, dict[str, int]]]:
    """``P`` + ``;``-separated variables: type, 7 hex (value + 2^27), SI prefix, metadata
    ``,1X`` (status) and ``,2XX`` (range)."""
    assert line.startswith("P"), line
    out = {}
    for part in line[1:].split(";"):
        m = VARIABLE.fullmatch(part)
        assert m, f"not a documented variable: {part!r}"
        vtype, hex7, prefix, meta = m.groups()
        fields = {}
        for item in meta.split(",")[1:]:
            if item[0] == "1" and len(item) == 2:
                fields["status"] = int(item[1], 16)
            elif item[0] == "2" and len(item) == 3:
                fields["range"] = int(item[1:], 16)
        out[vtype] = ((int(hex7, 16) - 2 ** 27) * PREFIX[prefix], fields)
    return out


def test_the_strict_decoder_reads_the_readme_package() -> None:
    p = decode("Pda7F85F3Fu;ba48D503Dp,10,288")
    assert p["da"][0] == pytest.approx(-0.499905)
    assert p["ba"][0] == pytest.approx(-57.85e-6, rel=1e-3)
    assert p["ba"][1] == {"status": 0, "range": 0x88}


# ---- scripts in the vendor's dialect, on the simulator ----------------------------------------
CP_DIALECT = """#############
# Chronopotentiometry: the elapsed time, the set current and the measured potential
#############
var e_meas
var i_set
var i_dc
var step_s
var run_s
var t
store_var i_dc 1m ja          # 1 mA
store_var step_s 100m ja
store_var run_s 2 ja
set_pgstat_chan 0
set_pgstat_mode 6
set_max_bandwidth 10
set_range ab 1
set_autoranging ab 100m 2
set_range db 20m
set_autoranging db 20m 20m
set_i 0 # before the cell goes on
cell_on
timer_start
meas_loop_cp e_meas i_set i_dc step_s run_s
    timer_get t
    pck_start
    pck_add t
    pck_add i_set
    pck_add e_meas
    pck_end
endloop
on_finished:
    cell_off
"""
CA_DIALECT = """# Chronoamperometry: time and measured current only (the potential stays commented out)
var e_set
var i_meas
var e_dc
var step_s
var run_s
var t
store_var e_dc 10m ja
store_var step_s 100m ja
store_var run_s 2 ja
set_pgstat_chan 0
set_pgstat_mode 2
set_max_bandwidth 60
set_range_minmax da e_dc e_dc
set_range ba 100u
set_autoranging ba 50n 2m
set_e e_dc
cell_on
timer_start
meas_loop_ca e_set i_meas e_dc step_s run_s
    timer_get t
    pck_start
    pck_add t
    # pck_add e_set
    pck_add i_meas
    pck_end
endloop
on_finished:
    cell_off
"""
OCP_DIALECT = """var e_meas
var step_s
var run_s
var t
store_var step_s 100m ja
store_var run_s 2100m ja
set_pgstat_chan 0
set_pgstat_mode 3
set_max_bandwidth 60
set_range ab 4
set_autoranging ab 4 4
set_range ba 2m
set_autoranging ba 2m 2m
cell_off                    # open circuit needs the cell off
timer_start
meas_loop_ocp e_meas step_s run_s
    timer_get t
    pck_start
    pck_add t
    pck_add e_meas
    pck_end
endloop
on_finished:
    cell_off
"""
EIS_DIALECT = """var f
var zre
var zim
var e_ac
var f_hi
var f_lo
var n
var e_dc
store_var e_ac 10m ja
store_var f_hi 100k ja
store_var f_lo 100 ja
store_var n 11i ja
store_var e_dc 0 ja
set_pgstat_chan 0
set_pgstat_mode 3
set_max_bandwidth 1M
set_range_minmax da e_dc e_dc
set_range ba 2u
set_autoranging ba 500n 2m
set_range ab 4
set_autoranging ab 4 4
set_e e_dc
cell_on
meas_loop_eis f zre zim e_ac f_hi f_lo n e_dc
    pck_start
    pck_add f
    pck_add zre
    pck_add zim
    pck_end
endloop
on_finished:
    cell_off
"""
CYCLES_DIALECT = """# two constant-current cycles in one script, the cycle count in a plain loop
var e
var i
var i_chg
var i_dis
var n
var cycle
var t
store_var i_chg 1m ba
store_var i_dis -1m ba
store_var n 2i ja
store_var cycle 1i ja
set_pgstat_chan 0
set_pgstat_mode 6
set_range ab 1
set_autoranging ab 50m 3
set_range db 1m
set_autoranging db 1m 1m
cell_on
timer_start
loop cycle <= n
    meas_loop_cp e i i_chg 1 3
        timer_get t
        pck_start
        pck_add t
        pck_add e
        pck_add i
        pck_end
        if e > 2
            breakloop
        elseif e < -2
            breakloop
        else
        endif
    endloop
    meas_loop_cp e i i_dis 1 3
        timer_get t
        pck_start
        pck_add t
        pck_add e
        pck_add i
        pck_end
    endloop
    add_var cycle 1i
endloop
on_finished:
    cell_off
"""


@pytest.fixture
def sim() -> Iterator[tuple[SimulatedEmStat4, serial.Serial, VirtualClock]]:
    clock = VirtualClock()
    instrument = SimulatedEmStat4(NaCell("symmetric", 1.13, PRESETS["glyme"], seed=1),
                                  clock).start()
    port = serial.Serial(instrument.port, timeout=2)
    yield instrument, port, clock
    port.close()
    instrument.close()


def run_script(sim: tuple[SimulatedEmStat4, serial.Serial, VirtualClock], text: str,
               seconds: float) -> list[str]:
    instrument, port, clock = sim
    port.write(b"e\n" + text.encode() + b"\n")
    first = port.readline()
    assert first == b"e\n", f"refused: {first!r} ({instrument.last_error})"
    clock.advance(seconds)
    lines = []
    while not lines or lines[-1] != "":
        raw = port.readline()
        assert raw.endswith(b"\n"), lines
        lines.append(raw.decode()[:-1])
    return lines


def test_a_cp_script_in_the_vendor_dialect_sends_set_current_db_and_measured_potential_ab(
        sim) -> None:
    lines = run_script(sim, CP_DIALECT, 3.0)
    assert lines[0] == "M000A" and lines[-2:] == ["*", ""]
    packages = [decode(x) for x in lines if x.startswith("P")]
    assert len(packages) == 20
    for p in packages:
        assert list(p) == ["eb", "db", "ab"]
        assert p["db"][0] == pytest.approx(1e-3) and p["db"][1] == {}   # applied: no metadata
        assert 0.005 < p["ab"][0] < 0.1                                  # tens of mV, glyme
        assert p["ab"][1]["status"] == 0 and p["ab"][1]["range"] in (3, 4, 5, 6)


def test_a_ca_package_without_the_potential_carries_the_measured_current_with_its_range(
        sim) -> None:
    lines = run_script(sim, CA_DIALECT, 3.0)
    assert lines[0] == "M0007"
    packages = [decode(x) for x in lines if x.startswith("P")]
    assert len(packages) == 20 and all(list(p) == ["eb", "ba"] for p in packages)
    currents = [p["ba"][0] for p in packages]
    assert all(1e-5 < i < 2e-3 for i in currents), "10 mV on a ~10 ohm symmetric cell"
    assert all(p["ba"][1]["range"] in (18, 21, 24) for p in packages)


def test_an_ocp_script_reads_a_resting_symmetric_cell_near_zero(sim) -> None:
    lines = run_script(sim, OCP_DIALECT, 3.0)
    assert lines[0] == "M000B"
    packages = [decode(x) for x in lines if x.startswith("P")]
    assert len(packages) == 21 and all(abs(p["ab"][0]) < 0.01 for p in packages)
    assert all(p["ab"][1] == {"status": 0, "range": 6} for p in packages)  # fixed: ab 4 4


def test_an_eis_script_with_11i_points_and_1M_bandwidth_gives_a_plausible_spectrum(sim) -> None:
    lines = run_script(sim, EIS_DIALECT, 60.0)
    assert lines[0] == "M000D"
    packages = [decode(x) for x in lines if x.startswith("P")]
    assert len(packages) == 11
    freqs = [p["dc"][0] for p in packages]
    assert freqs[0] == pytest.approx(1e5) and freqs[-1] == pytest.approx(100, rel=1e-6)
    for p in packages:
        assert p["cc"][0] > 0 and p["cd"][0] <= 0   # a capacitive cell
        assert "range" in p["cc"][1] and "range" in p["cd"][1]


def test_a_plain_loop_with_arithmetic_runs_two_cycles_and_marks_its_loops(sim) -> None:
    lines = run_script(sim, CYCLES_DIALECT, 20.0)
    assert lines[0] == "L" and lines[-2:] == ["+", ""]
    assert lines.count("M000A") == 4 and lines.count("*") == 4
    currents = [decode(x)["db"][0] for x in lines if x.startswith("P")]
    assert currents == pytest.approx([1e-3] * 3 + [-1e-3] * 3 + [1e-3] * 3 + [-1e-3] * 3)


def test_a_current_beyond_the_allowed_ranges_reads_as_overload(sim) -> None:
    script = CA_DIALECT.replace("store_var e_dc 10m ja", "store_var e_dc 200m ja").replace(
        "set_autoranging ba 50n 2m", "set_autoranging ba 50n 100u")
    packages = [decode(x) for x in run_script(sim, script, 3.0) if x.startswith("P")]
    for p in packages:
        value, meta = p["ba"]
        assert meta["status"] & 0x2 and meta["range"] == 18   # overload in the 100 uA range
        assert value == pytest.approx(100e-6)                  # clamped to its full scale


@pytest.mark.parametrize(("script", "code", "where"), [
    ("invalid_command", 0x4001, "Line 1, Col 1"),
    ("var a\nvar a", 0x4026, "Line 2, Col 5"),
    ("var a\nstore_var a 1.5m ja", 0x4039, "Line 2, Col 13"),
    ("var a\nstore_var a 1m zz", 0x0002, "Line 2, Col 16"),
    ("set_e x", 0x420B, "Line 1, Col 7"),
    ("set_pgstat_mode 6\nset_i 1", 0x4205, "Line 2, Col 7"),
    ("if 1 > 0", 0x4018, "Line 2, Col 1"),
    ("endif", 0x400E, "Line 1, Col 1"),
    ("pck_add a", 0x401B, "Line 1, Col 1"),
])
def test_refused_scripts_answer_the_vendors_code_line_and_column(
        sim, script: str, code: int, where: str) -> None:
    instrument, port, _ = sim
    port.write(b"e\n" + script.encode() + b"\n\n")
    assert port.readline() == f"e!{code:04X}: {where}\n".encode()
    assert not instrument.running


def test_host_commands_answer_as_the_firmware_does(sim) -> None:
    _, port, _ = sim
    for sent, reply in [(b"v\n", b"v01.08.00\n"), (b"\n", b"\n"), (b"Z\n", b"Z!0006\n"),
                        (b"q\n", b"q!0003\n"), (b"i\n", b"iES4SIM0001\n")]:
        port.write(sent)
        assert port.readline() == reply


def test_a_variable_argument_out_of_range_is_a_runtime_error_that_ends_the_script(sim) -> None:
    script = CP_DIALECT.replace("store_var i_dc 1m ja", "store_var i_dc 1 ja")  # 1 A > 30 mA
    lines = run_script(sim, script, 1.0)
    assert lines == ["!4205: Line 23", ""]  # the meas_loop_cp line


# ---- transcripts: the vendor's bytes, replayed ------------------------------------------------
ACCEPT_CA = b"e\nM0007\n"
END = b"*\n\n"


def ca_bytes(potential_V: float = -0.5) -> bytes:
    return script_bytes(build_ca_script(potential_V, 1.0, 2.0, 1e-3))


def cp_bytes() -> bytes:
    return script_bytes(build_cp_script(1.13e-3, 1.0, 2.0, -1.0, 1.0))


def test_the_readme_package_decodes_to_its_documented_potential_and_current(replay) -> None:
    es, _ = replay([(ca_bytes(), ACCEPT_CA + b"Peb80F4240u;da7F85F3Fu;ba48D503Dp,10,288\n"
                     + b"Peb81E8480u;da7F85F3Fu;ba48D503Dp,10,288\n" + END)])
    es.start_potential(-0.5, interval_s=1.0, duration_s=2.0, i_max_A=1e-3)
    samples, ended = es.read_samples(math.inf)
    assert ended and [s.t_s for s in samples] == pytest.approx([1.0, 2.0])
    for s in samples:
        assert s.potential_V == pytest.approx(-0.499905)
        assert s.current_A == pytest.approx(-57.85e-6, rel=1e-3)
        assert not s.overload


def test_the_readme_package_without_a_timer_takes_the_schedules_time(replay) -> None:
    es, _ = replay([(ca_bytes(), ACCEPT_CA + b"Pda7F85F3Fu;ba48D503Dp,10,288\n" * 2 + END)])
    es.start_potential(-0.5, interval_s=1.0, duration_s=2.0, i_max_A=1e-3)
    samples, _ = es.read_samples(math.inf)
    assert [s.t_s for s in samples] == [1.0, 2.0]
    assert samples[0].potential_V == pytest.approx(-0.499905)


def test_a_ca_package_without_any_potential_is_accepted_at_the_set_potential(replay) -> None:
    # the vendor's CA example sends the time and the measured current only
    es, _ = replay([(ca_bytes(-0.05), ACCEPT_CA + b"Peb80F4240u;ba48D503Dp,10,288\n"
                     + b"Peb81E8480u;ba48D503Dp,10,288\n" + END)])
    es.start_potential(-0.05, interval_s=1.0, duration_s=2.0, i_max_A=1e-3)
    samples, _ = es.read_samples(math.inf)
    assert len(samples) == 2 and not es.rejected
    assert all(s.potential_V == pytest.approx(-0.05) for s in samples)
    assert samples[0].current_A == pytest.approx(-57.85e-6, rel=1e-3)


def test_a_cp_package_in_the_vendors_order_yields_its_set_current_db(replay) -> None:
    # the vendor's CP example: time, set current (db), measured potential (ab)
    package = b"Peb80F4240u;db8113E10n;ab8005460u,10,206\n"   # 1.13 mA, 21.6 mV
    es, _ = replay([(cp_bytes(), b"e\nM000A\n" + package + package.replace(b"80F4240", b"81E8480")
                     + END)])
    es.start_current(1.13e-3, interval_s=1.0, duration_s=2.0, e_min_V=-1.0, e_max_V=1.0)
    samples, _ = es.read_samples(math.inf)
    assert [s.current_A for s in samples] == pytest.approx([1.13e-3, 1.13e-3])
    assert samples[0].potential_V == pytest.approx(0.0216)


def test_an_overloaded_measured_potential_reaches_the_sample(replay) -> None:
    es, _ = replay([(cp_bytes(), b"e\nM000A\n" + b"Peb80F4240u;ab82DC6C0u,12,206;db8113E10n\n"
                     + END)])
    es.start_current(1.13e-3, interval_s=1.0, duration_s=2.0, e_min_V=-1.0, e_max_V=1.0)
    samples, _ = es.read_samples(math.inf)
    assert samples[0].overload and samples[0].potential_V == pytest.approx(3.0)


def test_packages_without_what_the_step_needs_raise_a_typed_error(replay) -> None:
    no_current = b"Peb80F4240u;ab8005460u,10,206\n"
    es, _ = replay([(cp_bytes(), b"e\nM000A\n" + no_current * 3 + END),
                    (b"Z\n", b"Z\n" + END)])
    es.start_current(1.13e-3, interval_s=1.0, duration_s=2.0, e_min_V=-1.0, e_max_V=1.0)
    with pytest.raises(MissingVariable, match="CP package without db or ba") as info:
        es.read_samples(math.inf)
    assert isinstance(info.value, InstrumentProtocolError) and info.value.needs == "db"
    es.abort()


@pytest.mark.parametrize(("firmware", "model"), [
    (b"tes4_lr1500#Mar 12 2026 14:28:01\nR*\n", "EmStat4 LR"),
    (b"tes4_hr1500#Mar 12 2026 14:28:01\nR*\n", "EmStat4 HR"),
])
def test_the_emstat4_lr_and_hr_firmware_names_are_accepted(replay, firmware, model) -> None:
    es, _ = replay([(b"t\n", firmware)])
    assert es.identify().startswith(firmware[1:7].decode())
    assert es.model == model


@pytest.mark.parametrize(("firmware", "why"), [
    (b"tespico1500#Mar 12 2026\nR*\n", "an EmStat Pico"),
    (b"tmes4lr1500#Mar 12 2026\nR*\n", "a MultiEmStat4 LR"),
    (b"tnexus11500#Mar 12 2026\nR*\n", "a Nexus"),
    (b"tfoo#x\nR*\n", "none the driver knows"),
])
def test_other_devices_are_refused_with_the_reason(replay, firmware, why) -> None:
    es, _ = replay([(b"t\n", firmware)], retries=2)
    with pytest.raises(NotAnEmStat4, match=why):
        es.identify()


def test_a_script_error_reply_raises_with_the_vendors_code(replay) -> None:
    es, _ = replay([(ca_bytes(), b"e!4001: Line 1, Col 16\n")])
    with pytest.raises(DeviceError) as info:
        es.start_potential(-0.5, interval_s=1.0, duration_s=2.0, i_max_A=1e-3)
    assert info.value.code == 0x4001


def test_a_lost_accept_reply_is_recovered_by_abort_and_resend(replay) -> None:
    es, _ = replay([(ca_bytes(), SILENCE), (b"Z\n", b"Z!0006\n"),
                    (ca_bytes(), ACCEPT_CA + b"Peb80F4240u;da7F85F3Fu;ba48D503Dp,10,288\n"
                     + b"Peb81E8480u;da7F85F3Fu;ba48D503Dp,10,288\n" + END)], retries=2)
    es.start_potential(-0.5, interval_s=1.0, duration_s=2.0, i_max_A=1e-3)
    samples, ended = es.read_samples(math.inf)
    assert ended and len(samples) == 2 and es.resyncs == 1


def test_a_garbled_accept_reply_is_recovered_by_abort_drain_and_resend(replay) -> None:
    es, _ = replay([(ca_bytes(), b"?\nM0007\n"), (b"Z\n", b"Z\n" + END),
                    (ca_bytes(), ACCEPT_CA + b"Peb80F4240u;da7F85F3Fu;ba48D503Dp,10,288\n"
                     + b"Peb81E8480u;da7F85F3Fu;ba48D503Dp,10,288\n" + END)], retries=2)
    es.start_potential(-0.5, interval_s=1.0, duration_s=2.0, i_max_A=1e-3)
    samples, _ = es.read_samples(math.inf)
    assert len(samples) == 2 and es.resyncs == 1


def test_a_garbled_abort_reply_is_answered_by_a_second_abort(replay) -> None:
    es, _ = replay([(b"Z\n", b"Z!0?06\n"), (b"Z\n", b"Z!0006\n")], retries=2)
    es.abort()
    assert es.resyncs == 1


def test_garbled_markers_in_the_stream_are_skipped_and_reported(replay) -> None:
    es, _ = replay([(ca_bytes(), b"e\nM00?7\nPeb80F4240u;da7F85F3Fu;ba48D503Dp,10,288\n"
                     + b"?eb81E8480u;da7F85F3Fu;ba48D503Dp,10,288\n?\n\n")])
    es.start_potential(-0.5, interval_s=1.0, duration_s=2.0, i_max_A=1e-3)
    samples, ended = es.read_samples(math.inf)
    assert ended and len(samples) == 1 and len(es.rejected) == 3


def test_every_documented_output_line_is_classified() -> None:
    from drivers.emstat import parse_line
    kinds = [parse_line(x).kind for x in ["M000A", "L", "+", "C0001", "-", "THello world!"]]
    assert kinds == ["loop_start", "plain_loop", "plain_loop", "scan", "scan", "text"]


# ---- the driver's own scripts pass the grammar ---------------------------------------------------
# The commands PalmSens lists for MethodSCRIPT (palmsens-sdk capabilities list), those we use.
VENDOR_COMMANDS = {
    "var", "store_var", "set_e", "set_i", "loop", "endloop", "breakloop", "if", "else", "elseif",
    "endif", "meas_loop_ca", "meas_loop_cp", "meas_loop_ocp", "meas_loop_eis", "set_autoranging",
    "pck_start", "pck_add", "pck_end", "set_max_bandwidth", "cell_on", "cell_off",
    "set_pgstat_mode", "set_pgstat_chan", "timer_start", "timer_get", "set_range",
    "set_range_minmax", "on_finished:",
}
LITERAL = re.compile(r"-?\d+[afpnumkMGTPE]?")


def driver_scripts() -> list[list[str]]:
    return [build_cp_script(1.13e-3, 1, 3600, -0.5, 0.5), build_cp_script(-30e-3, 0.1, 5, -3, 3),
            build_cp_script(2e-9, 10, 1e5, -0.02, 0.04),
            build_ca_script(-0.05, 0.1, 60, 5e-4), build_ca_script(2.5, 1, 10, 0.03),
            build_ocp_script(10, 1e7), build_eis_script(1e5, 0.1, 31, 0.01, 0.0123),
            build_eis_script(200e3, 1e-5, 1000, 3.0, -3.0)]


@pytest.mark.parametrize("lines", driver_scripts())
def test_the_drivers_scripts_pass_the_strict_compiler_and_the_vendor_grammar(lines) -> None:
    mode = 6 if any("meas_loop_cp" in x for x in lines) else 3
    try:
        compile_script(lines, mode)
    except ScriptError as exc:
        pytest.fail(f"refused: {exc.wire()}")
    names = {x.split()[0] for x in lines}
    assert names <= VENDOR_COMMANDS
    variables = {x.split()[1] for x in lines if x.startswith("var ")}
    for line in lines:
        assert line == line.rstrip() and "#" not in line
        for arg in line.split()[1:]:
            assert (arg in variables or LITERAL.fullmatch(arg) or arg in ("ab", "ba", "da", "db")
                    or arg in (">", "<")), f"{arg!r} in {line!r}"


# ---- reliability: a run through a 1 % faulty wire --------------------------------------------------
def test_a_driver_at_a_20_percent_lost_reply_rate_still_starts_every_step() -> None:
    clock = VirtualClock()
    sim = SimulatedEmStat4(NaCell("symmetric", 1.13, PRESETS["glyme"], seed=1), clock,
                           fault=FaultProfile(no_reply=0.2, seed=4)).start()
    es = EmStat4(sim.port, timeout_s=0.2, retries=4)
    try:
        done = 0
        for _ in range(12):
            es.start_current(1e-3, interval_s=1.0, duration_s=2.0, e_min_V=-1, e_max_V=1)
            clock.advance(2.0)
            samples, ended = es.read_samples(2.0)
            assert ended and len(samples) == 2
            done += 1
        assert done == 12 and sim.faults_injected["no_reply"] >= 3 and es.resyncs >= 3
    finally:
        es.close()
        sim.close()


def test_a_run_at_a_1_percent_fault_rate_completes_on_every_channel_with_the_faults_counted(
        tmp_path) -> None:
    from rig.store import get_events
    from tests.support.station_runs import cycling_plan, run, station_for

    plan = cycling_plan(3, cell_ids=("G0", "G1", "G2"), charge_C=3.6 * 1.13 / 4)
    fault = {f"es4-ch{k}": FaultProfile(no_reply=0.01, garbled_line=0.01,
                                        truncated_package=0.01, seed=10 + k) for k in range(3)}
    station = station_for(plan, faults=fault)
    sims = list(station.simulators)
    result, conn = run(plan, tmp_path / "s.db", station)
    assert result.reasons == {0: "completed", 1: "completed", 2: "completed"}
    injected = [s.faults_injected for s in sims if hasattr(s, "faults_injected")]
    assert sum(f["garbled_line"] + f["truncated_package"] for f in injected) > 20
    logged = sum(1 for k in range(3) for e in get_events(conn, result.run_key, k)
                 if e["kind"] == "garbled_package")
    assert logged > 20   # every skipped package and garbled line is in the log
