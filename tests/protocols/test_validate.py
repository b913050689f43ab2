"""rig.validate.check_ranges: a plan against each channel's instrument, before anything runs."""

from __future__ import annotations

from drivers.base import MODES, Ranges
from drivers.emstat import EMSTAT4_LR_RANGES
from drivers.keithley2450 import Keithley2450
from protocols import parse_protocol
from rig.sim import mscript as sim_emstat  # the simulator's MethodSCRIPT limits
from rig.validate import check_ranges

PLAN = parse_protocol("""
kind = "sequence"
name = "every step type"
[record]
every = "10 s"
[safety]
max_current = "5 mA"
[[steps]]
type = "rest"
label = "settle"
until = {time = "1 min"}
[[steps]]
type = "current"
label = "plate"
current = "-1 mA"
until = {time = "1 min"}
[[steps]]
type = "loop"
count = 2
  [[steps.steps]]
  type = "potential"
  label = "hold"
  potential = "0 V"
  until = {time = "1 min"}
  [[steps.steps]]
  type = "eis"
  label = "eis_loop"
  f_start = "300 kHz"
[[cells]]
channel = 0
cell_id = "A"
type = "symmetric"
area = "1 cm^2"
electrolyte = "1 M NaPF6 in diglyme"
""", "x.toml")
WHERE = "x.toml: cells[0] (A, channel 0): "


def test_ranges_default_to_every_mode_and_no_frequency_limit():
    assert Ranges(0.03, 3.0).modes == MODES == ("current", "potential", "open_circuit", "eis")
    assert Ranges(0.03, 3.0).max_frequency_Hz is None
    assert check_ranges(PLAN, {0: ("anything", Ranges(0.03, 3.0))}, "x.toml") == []


def test_a_galvanostat_refuses_potential_and_eis_steps_even_inside_loops():
    galvanostat = Ranges(1.05, 21.0, modes=("current", "open_circuit"))
    assert check_ranges(PLAN, {0: ("the 2450", galvanostat)}, "x.toml") == [
        WHERE + 'potential step "hold" cannot run on the 2450 (it runs only constant-current '
        "steps, open-circuit rests)",
        WHERE + 'EIS step "eis_loop" cannot run on the 2450 (it runs only constant-current '
        "steps, open-circuit rests)",
    ]


def test_the_keithley_runs_potential_steps_and_refuses_eis_even_inside_loops():
    assert Keithley2450.ranges.modes == ("current", "potential", "open_circuit")
    assert check_ranges(PLAN, {0: ("the 2450", Keithley2450.ranges)}, "x.toml") == [
        WHERE + 'EIS step "eis_loop" cannot run on the 2450 (it runs only constant-current '
        "steps, potential steps, open-circuit rests)",
    ]


def test_an_eis_sweep_above_the_instruments_highest_frequency_is_refused():
    assert EMSTAT4_LR_RANGES.max_frequency_Hz == sim_emstat.MAX_FREQUENCY_HZ == 200e3
    assert check_ranges(PLAN, {0: ("EmStat4 es4-a", EMSTAT4_LR_RANGES)}, "x.toml") == [
        WHERE + 'EIS step "eis_loop" sweeps up to 300 kHz, above the 200 kHz maximum of '
        "EmStat4 es4-a"]
    ranges = Ranges(0.03, 3.0, max_frequency_Hz=300e3)  # the limit itself is allowed
    assert check_ranges(PLAN, {0: ("x", ranges)}, "x.toml") == []
