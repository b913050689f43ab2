"""The plan cursor: where a channel is in its plan tree, and where it goes next.

Pure: it knows the steps, loop counters, the cycle number, gotos and named ends, and nothing of
instruments or time. The channel asks it for the step to run, runs it, and tells it what the
step said comes next (its ``then``).

>>> from protocols.plan import EndCondition, Loop, RecordRule, Rest
>>> def rest(label):
...     return Rest((EndCondition("time", 60.0),), RecordRule(10.0), label=label)
>>> plan = (rest("settle"), Loop(2, (rest("plate"), rest("strip")), counts_cycles=True))
>>> cursor = PlanCursor(plan)
>>> walk = []
>>> while cursor.step is not None:
...     walk.append((cursor.step.label, cursor.cycle, cursor.path, cursor.loop_iterations))
...     cursor.advance(NEXT)
>>> walk  # doctest: +NORMALIZE_WHITESPACE
[('settle', 0, (0,), ()), ('plate', 1, (1, 0), (0,)), ('strip', 1, (1, 1), (0,)),
 ('plate', 2, (1, 0), (1,)), ('strip', 2, (1, 1), (1,))]
>>> cursor.end_reason
'completed'

A ``then`` is parsed once: ``next``, a step label to go to, or ``end:<name>``:

>>> Then.parse("end:cutoff_not_reached"), Then.parse("plate"), str(Then.parse("next"))
(Then(kind='end', target='cutoff_not_reached'), Then(kind='goto', target='plate'), 'next')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from protocols.plan import Loop, Step


@dataclass(frozen=True, slots=True)
class Then:
    """What comes after a step: the next one, a labelled step (goto), or the channel's end."""

    kind: Literal["next", "goto", "end"]
    target: str = ""

    @classmethod
    def parse(cls, text: str) -> Then:
        if text == "next":
            return NEXT
        if text.startswith("end:"):
            return cls("end", text[4:])
        return cls("goto", text)

    def __str__(self) -> str:
        """The protocol's own text (what a checkpoint stores)."""
        return {"next": "next", "goto": self.target, "end": f"end:{self.target}"}[self.kind]


NEXT = Then("next")


class NoSuchLabel(Exception):
    """A goto to a label that no enclosing list of steps has."""

    def __init__(self, label: str) -> None:
        super().__init__(f"no step labelled {label!r} to go to")
        self.label = label


@dataclass(frozen=True, slots=True)
class Position:
    """Where a checkpoint says the channel was: the index in each nested list of steps, the
    iteration of each enclosing loop, and the cycle number."""

    path: tuple[int, ...]
    loop_iterations: tuple[int, ...]
    cycle: int


@dataclass(slots=True)
class _Frame:
    steps: tuple[Step, ...]
    index: int
    loop: Loop | None = None  # the loop whose body this list is (None: the plan itself)
    iteration: int = 0


class PlanCursor:
    """Walks a channel's plan. ``step`` is the step to run now (never a Loop; None once the
    plan has ended, with ``end_reason``: 'completed' or the name of an ``end:<name>``).

    ``at``: continue where a checkpoint was (the loops on the way keep their counters and do
    not start a new cycle; the iterations after do).
    """

    def __init__(self, steps: tuple[Step, ...], at: Position | None = None) -> None:
        self.cycle = at.cycle if at is not None else 0
        self.end_reason: str | None = None
        self._frames: list[_Frame] = [_Frame(steps, at.path[0] if at and at.path else 0)]
        if at is not None:
            self._descend(at)
        self._settle()

    # ---- where -------------------------------------------------------------------------------
    @property
    def step(self) -> Step | None:
        if not self._frames:
            return None
        f = self._frames[-1]
        return f.steps[f.index]

    @property
    def path(self) -> tuple[int, ...]:
        return tuple(f.index for f in self._frames)

    @property
    def loop_iterations(self) -> tuple[int, ...]:
        return tuple(f.iteration for f in self._frames if f.loop is not None)

    # ---- moving --------------------------------------------------------------------------
    def advance(self, then: Then) -> None:
        """The current step ended and said ``then``: move to the step that comes next.
        A goto looks for its label in the current list, then in each enclosing one (leaving
        the loops in between); raises NoSuchLabel if none has it."""
        if not self._frames:
            return
        if then.kind == "end":
            self._finish(then.target)
        elif then.kind == "goto":
            for depth in range(len(self._frames) - 1, -1, -1):
                f = self._frames[depth]
                target = next((k for k, st in enumerate(f.steps) if st.label == then.target),
                              None)
                if target is not None:
                    del self._frames[depth + 1:]
                    f.index = target
                    self._settle()
                    return
            raise NoSuchLabel(then.target)
        else:
            self._frames[-1].index += 1
            self._settle()

    def _finish(self, reason: str) -> None:
        self._frames.clear()
        self.end_reason = reason

    def _descend(self, at: Position) -> None:
        """Rebuild the frames down the checkpoint's path (loops entered mid-way: no new cycle)."""
        for depth in range(1, len(at.path)):
            f = self._frames[-1]
            if f.index >= len(f.steps):
                return
            loop = f.steps[f.index]
            level = len(self._frames) - 1
            if not isinstance(loop, Loop) or level >= len(at.loop_iterations):
                return
            iteration = at.loop_iterations[level]
            if iteration >= loop.count:
                f.index += 1
                return
            self._frames.append(_Frame(loop.steps, at.path[depth], loop, iteration))

    def _settle(self) -> None:
        """Move down into loops and up out of finished lists until on a step to run."""
        frames = self._frames
        while frames:
            f = frames[-1]
            if f.index < len(f.steps):
                step = f.steps[f.index]
                if not isinstance(step, Loop):
                    return
                if step.count > 0:
                    frames.append(_Frame(step.steps, 0, step, 0))
                    if step.counts_cycles:
                        self.cycle += 1
                else:
                    f.index += 1
                continue
            if f.loop is not None and f.iteration + 1 < f.loop.count:
                f.iteration += 1
                f.index = 0
                if f.loop.counts_cycles:
                    self.cycle += 1
                continue
            frames.pop()
            if frames:
                frames[-1].index += 1
        self.end_reason = "completed"
