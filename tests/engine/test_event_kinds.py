"""Every event kind the rig writes is a member of rig.events.EventKind (issue 8): no call under
rig/ passes a kind as a string literal, so the monitor, the report and analysis match the same
names the engine writes; and the members keep the strings older stores hold."""

from __future__ import annotations

import ast
from pathlib import Path

import rig
from rig.events import EventKind

RIG = Path(rig.__file__).resolve().parent  # wherever the tests directory is moved
# RunWriter.event(run_key, channel, t, level, kind, message) and
# RunWriter.record_end(run_key, status, end_reason, ended_at, channel_reason, level, kind, message)
KIND_ARG = {"event": 4, "record_end": 6}


def literal_kinds() -> list[str]:
    found = []
    for path in sorted(RIG.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            at = KIND_ARG.get(node.func.attr)
            if at is None or len(node.args) <= at:
                continue
            kind = node.args[at]
            strings = [kind] if not isinstance(kind, ast.IfExp) else [kind.body, kind.orelse]
            for s in strings:
                if isinstance(s, (ast.Constant, ast.JoinedStr)):
                    found.append(f"{path.relative_to(RIG.parent)}:{node.lineno}: "
                                 f"{ast.unparse(kind)}")
    return found


def test_no_event_kind_under_rig_is_a_string_literal():
    assert literal_kinds() == []


def test_the_run_level_kinds_keep_their_stored_strings():
    assert [EventKind.INTERRUPTED, EventKind.RUN_FAILED, EventKind.ABORTED_DEAD_RUN,
            EventKind.COMMAND_REFUSED, EventKind.SENSOR_RETRIED, EventKind.RUN_START,
            EventKind.RUN_END, EventKind.RESUMED_AFTER_CRASH] == [
        "interrupted", "run_failed", "aborted_dead_run", "command_refused", "sensor_retried",
        "run_start", "run_end", "resumed_after_crash"]
