"""The protocol library off its default point (issue 9, item 9): every template across a
sparse grid of its documented parameters, and the coulombic-efficiency cases that broke.

The grid (``benchmarks/template_grid.py``; run it without ``--sparse`` for the dense one):
0.1 and 5 mA/cm^2 x 0.5 and 5 mAh/cm^2 plus the centre, glyme and carbonate cells, two cycles,
the virtual clock. Each point completes or ends with a short the simulated cell really had;
never a safety trip, a timeout or a false short from the template's own defaults; every charge
balance closes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.template_grid import KINDS, SPARSE, grid_file, problems, run_point, run_text
from protocols import builtin_protocol, parse_protocol
from rig.sim.cell import PRESETS, NaCell


@pytest.mark.parametrize("kind", KINDS)
def test_every_template_across_its_grid_completes_or_names_a_real_short(kind, tmp_path):
    found = []
    for k, (j, q) in enumerate(SPARSE):
        found += problems(kind, j, q, run_point(kind, j, q, tmp_path / f"{k}.db"))
    assert found == []


def ce_file(j: str) -> str:
    text = builtin_protocol("coulombic_efficiency").read_text(encoding="utf-8")
    return text.replace('current_density = "0.5 mA/cm^2"', f'current_density = "{j}"')


def _ends(tmp_path: Path, text: str) -> dict[str, tuple[str, list[dict]]]:
    return {r.cell_id: (r.end_reason, r.steps)
            for r in run_text(text, "ce.toml", tmp_path / "ce.db")}


def test_ce_at_1_mA_cm2_the_carbonate_spike_ends_the_strip_not_the_channel(tmp_path):
    # the bare-Cu spike of the carbonate cell reads 3.0 V, pinned at the EmStat4 LR's range:
    # it passed the 1 V cutoff, so the strip ends as planned (it tripped safety_window before)
    ends = _ends(tmp_path, ce_file("1 mA/cm^2"))
    for cell_id in ("NaCu-G1", "NaCu-C1"):
        reason, steps = ends[cell_id]
        assert reason == "completed"
        strips = [s for s in steps if s["label"] in ("formation_strip", "final_strip")]
        assert [s["end_reason"] for s in strips] == ["potential_above", "potential_above"]


def test_ce_at_2_mA_cm2_a_short_is_named_and_its_step_has_a_row(tmp_path):
    # before: both cells stripped 25.4 C after plating 20.3 C and timed out cutoff_not_reached
    ends = _ends(tmp_path, ce_file("2 mA/cm^2"))
    for reason, steps in ends.values():
        assert reason in ("short_hard", "short_soft")
        assert steps[-1]["end_reason"] == reason  # the step the short ended has its row


def test_a_tripped_step_gets_its_steps_row(tmp_path):
    text = grid_file("plating_stripping", 1.0, 1.0).replace('max_potential = "1 V"',
                                                            'max_potential = "5 mV"')
    for r in run_text(text, "trip.toml", tmp_path / "trip.db"):
        assert r.end_reason == "safety_window"
        last = r.steps[-1]
        assert (last["label"], last["end_reason"]) == ("strip", "safety_window")
        assert last["n_samples"] >= 1 and last["charge_C"] > 0


@pytest.mark.parametrize("electrolyte", ["glyme", "carbonate"])
def test_a_shorted_na_cu_cell_never_gives_back_more_na_than_was_plated(electrolyte):
    # the 25.4 C "stripped" after 20.3 C plated went through the shunt, not out of the Na
    cell = NaCell("na_cu", 1.13, PRESETS[electrolyte], seed=3, short_at_charge_C=30.0)
    plated = 0.0
    for _ in range(1000):
        cell.apply_current(-2.26e-3, 10.0)
        plated += 2.26e-3 * 10.0
    inventory = cell.na_inventory_C
    terminal = 0.0
    while terminal < 2 * plated:
        cell.apply_current(2.26e-3, 10.0)
        terminal += 2.26e-3 * 10.0
    assert cell.short is not None
    assert 0.0 <= cell.na_inventory_C <= inventory <= plated
    assert terminal > plated  # the terminals passed it; the Na did not


def test_ce_default_names_shorts_with_a_threshold_scaled_to_the_current_density():
    for j, below in (("0.1 mA/cm^2", 1e-3), ("0.5 mA/cm^2", 5e-3), ("5 mA/cm^2", 5e-3)):
        plan = parse_protocol(ce_file(j), "ce.toml")
        assert plan.failure.short_below_V == pytest.approx(below)
        assert plan.failure.short_drop_fraction == 0.5


def test_a_reading_pinned_at_the_range_past_the_cutoff_is_the_cutoff_other_overloads_trip():
    from protocols.plan import EndCondition
    from rig.engine.conditions import planned_cutoff

    ends = (EndCondition("potential_above", 1.0),)
    # the EmStat4 LR reads at most 3 V: a strip whose Na ran out shows 3.0 V with overload
    assert planned_cutoff(ends, 3.0, 5e-3, True, 0.01, 3.0) == ends[0]
    assert planned_cutoff(ends, 1.3, 5e-3, True, 0.01, 3.0) is None    # overload, not pinned
    assert planned_cutoff(ends, -3.0, 5e-3, True, 0.01, 3.0) is None   # pinned, wrong side
    assert planned_cutoff(ends, 3.0, 50e-3, True, 0.01, 3.0) is None   # current over the limit
    assert planned_cutoff(ends, 3.0, 5e-3, True, 0.01) is None         # range unknown: trips
