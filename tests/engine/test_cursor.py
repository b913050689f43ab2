"""The plan cursor on plain plans: loops, cycles, gotos, named ends and resume positions."""

from __future__ import annotations

import pytest

from protocols.plan import EndCondition, Loop, RecordRule, Rest
from rig.engine.cursor import NEXT, NoSuchLabel, PlanCursor, Position, Then


def rest(label: str) -> Rest:
    return Rest((EndCondition("time", 60.0),), RecordRule(10.0), label=label)


CYCLING = (rest("settle"),
           Loop(3, (rest("plate"), rest("strip")), counts_cycles=True, label="cycles"),
           rest("final"))


def walk(cursor: PlanCursor, thens: dict[str, list[str]] | None = None, limit: int = 100):
    """Labels run in order (and their cycle); ``thens``: what each label says, in turn."""
    thens = {k: list(v) for k, v in (thens or {}).items()}
    seen = []
    while cursor.step is not None and len(seen) < limit:
        label = cursor.step.label
        seen.append((label, cursor.cycle))
        said = thens.get(label)
        cursor.advance(Then.parse(said.pop(0)) if said else NEXT)
    return seen


def test_a_cycling_loop_numbers_each_iteration_and_the_plan_completes():
    cursor = PlanCursor(CYCLING)
    assert walk(cursor) == [("settle", 0), ("plate", 1), ("strip", 1), ("plate", 2),
                            ("strip", 2), ("plate", 3), ("strip", 3), ("final", 3)]
    assert cursor.end_reason == "completed"


def test_nested_loops_keep_one_counter_each_in_the_path():
    plan = (Loop(2, (Loop(2, (rest("a"),)), rest("b"))),)
    cursor, seen = PlanCursor(plan), []
    while cursor.step is not None:
        seen.append((cursor.step.label, cursor.path, cursor.loop_iterations))
        cursor.advance(NEXT)
    assert seen == [("a", (0, 0, 0), (0, 0)), ("a", (0, 0, 0), (0, 1)), ("b", (0, 1), (0,)),
                    ("a", (0, 0, 0), (1, 0)), ("a", (0, 0, 0), (1, 1)), ("b", (0, 1), (1,))]


def test_a_named_end_ends_the_plan_with_its_name():
    cursor = PlanCursor(CYCLING)
    assert walk(cursor, {"strip": ["next", "end:cutoff_not_reached"]})[-1] == ("strip", 2)
    assert cursor.step is None and cursor.end_reason == "cutoff_not_reached"


def test_a_goto_inside_a_loop_jumps_within_it_and_one_outside_leaves_the_loop():
    cursor = PlanCursor(CYCLING)
    # strip says "plate" once (a repeat inside the same iteration), then "final" (out)
    assert walk(cursor, {"strip": ["plate", "final"]}) == [
        ("settle", 0), ("plate", 1), ("strip", 1), ("plate", 1), ("strip", 1), ("final", 1)]
    assert cursor.end_reason == "completed"


def test_a_goto_to_a_loop_starts_it_over_as_new_cycles():
    cursor = PlanCursor(CYCLING)
    seen = walk(cursor, {"final": ["cycles"]}, limit=12)
    assert seen[7:10] == [("final", 3), ("plate", 4), ("strip", 4)]


def test_a_goto_to_no_such_label_is_refused():
    cursor = PlanCursor(CYCLING)
    with pytest.raises(NoSuchLabel, match="'nowhere'"):
        cursor.advance(Then.parse("nowhere"))


def test_a_resumed_cursor_continues_at_the_checkpoint_with_its_cycle():
    # the checkpoint: strip of the second iteration (cycle 2)
    cursor = PlanCursor(CYCLING, Position(path=(1, 1), loop_iterations=(1,), cycle=2))
    assert cursor.path == (1, 1) and cursor.loop_iterations == (1,)
    assert walk(cursor) == [("strip", 2), ("plate", 3), ("strip", 3), ("final", 3)]


def test_then_keeps_the_protocols_text():
    for text in ("next", "plate", "end:stripped"):
        assert str(Then.parse(text)) == text


def test_an_empty_plan_or_an_empty_loop_completes_at_once():
    assert PlanCursor(()).step is None
    cursor = PlanCursor((Loop(0, (rest("never"),)), rest("after")))
    assert walk(cursor) == [("after", 0)]
