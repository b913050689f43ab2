"""``kind = "sequence"``: explicit ``[[steps]]`` for anything the templates do not cover.

A step is a table with a ``type``: ``"rest"``, ``"current"``, ``"current_density"``,
``"potential"``, ``"eis"`` or ``"loop"``. Every step but an EIS sweep or a loop ends on its
``until``: one table of end conditions, or a list of them, each with an optional ``then``::

    [[steps]]
    type = "current_density"
    label = "strip"
    current_density = "0.5 mA/cm^2"
    half_cycle = "strip"
    until = [{potential_above = "1 V"},
             {time = "3 h", then = "end:cutoff_not_reached"}]

``then`` is ``"next"`` (the default), the ``label`` of a later step (a goto), or
``"end:<outcome>"`` to end the channel with that reason. The checks in ``sequence_problems``
make a sequence safe to run unattended: labels are unique; a goto names a label, jumps only
forward and only to a step of its own list or of an enclosing one (the engine looks a label up
there, and a backward jump would repeat without a count: that is what loops are for); every step
has an end condition that bounds it (a time limit, or a charge limit on a current step); every
end condition can fire on its step (a rest passes no charge, a current step holds its current).

Example:
    >>> from pydantic import TypeAdapter
    >>> step = TypeAdapter(StepModel).validate_python(
    ...     {"type": "rest", "until": {"time": "1 h", "then": "end:rested"}})
    >>> step.until[0].time, step.until[0].then
    (3600.0, 'end:rested')
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from pydantic import BeforeValidator, Field

from protocols.bounds import MAX_COUNT, Name
from protocols.model import OUTCOMES, FailureModel, FileModel, Problem, ProtocolBase
from protocols.units import (
    ArealCapacity,
    Charge,
    Current,
    CurrentDensity,
    Frequency,
    PositiveCurrent,
    PositivePotential,
    Potential,
    PotentialRate,
    RecordInterval,
    Time,
)

END_FIELDS = ("time", "charge", "areal_charge", "potential_above", "potential_below",
              "current_above", "current_below", "dEdt_below")
ENGINE_END_REASONS = ("short_hard", "short_soft", "overpotential_divergence", "safety_window")
"""Reasons the engine ends a channel with by itself, which a sequence may declare expected."""

_END_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
AUTO_LABELS = {"rest": "rest", "current": "current", "current_density": "current",
               "potential": "potential", "eis": "eis", "loop": "loop"}


class EndModel(FileModel):
    """One table of ``until``: the step ends when any of its conditions is met."""

    time: Time | None = Field(None, examples=["1 h"])
    charge: Charge | None = Field(None, description="|charge| passed", examples=["1 mAh"])
    areal_charge: ArealCapacity | None = Field(
        None, description="|charge| passed per electrode area", examples=["1 mAh/cm^2"])
    potential_above: Potential | None = Field(None, examples=["1 V"])
    potential_below: Potential | None = Field(None, examples=["-1 V"])
    current_above: PositiveCurrent | None = Field(None, description="|I| above (potential steps)",
                                                  examples=["5 mA"])
    current_below: PositiveCurrent | None = Field(None, description="|I| below (potential steps)",
                                                  examples=["10 uA"])
    dEdt_below: PotentialRate | None = Field(None, description="|dE/dt| below",
                                             examples=["1 mV/h"])
    then: Name = Field("next", description='"next", a later step\'s label, or "end:<outcome>"',
                       examples=["next"])

    def given(self) -> list[tuple[str, float]]:
        """The conditions this table sets, ``[(field, canonical value)]``."""
        return [(name, getattr(self, name)) for name in END_FIELDS
                if getattr(self, name) is not None]


class RecordModel(FileModel):
    """``record``: keep a sample every ``every``, or sooner when E moved ``dE`` or I ``dI``."""

    every: RecordInterval = Field(examples=["10 s"])
    dE: PositivePotential | None = Field(None, examples=["5 mV"])
    dI: PositiveCurrent | None = Field(None, examples=["0.1 mA"])


def _one_or_many(schema: dict[str, Any]) -> None:
    """JSON Schema: ``until`` is one table or a list of them."""
    items = schema.pop("items")
    schema.pop("type", None)
    schema.pop("minItems", None)
    schema["anyOf"] = [items, {"type": "array", "items": items, "minItems": 1}]


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, dict) else value


Until = Annotated[list[EndModel], BeforeValidator(_as_list),
                  Field(min_length=1, json_schema_extra=_one_or_many,
                        examples=[{"time": "1 h"}])]


class StepBase(FileModel):
    label: Name | None = Field(None, description="a name for gotos and the data",
                               examples=["plate"])


class RestStep(StepBase):
    """Open circuit."""

    type: Literal["rest"]
    until: Until
    record: RecordModel | None = None


class CurrentStep(StepBase):
    """Constant current (negative plates Na onto the working electrode)."""

    type: Literal["current"]
    current: Current = Field(examples=["-1 mA"])
    half_cycle: Literal["plate", "strip"] | None = None
    until: Until
    record: RecordModel | None = None


class CurrentDensityStep(StepBase):
    """Constant current given per electrode area (each cell's current = this x its area)."""

    type: Literal["current_density"]
    current_density: CurrentDensity = Field(examples=["-0.5 mA/cm^2"])
    half_cycle: Literal["plate", "strip"] | None = None
    until: Until
    record: RecordModel | None = None


class PotentialStep(StepBase):
    """Constant potential (the working electrode against the counter)."""

    type: Literal["potential"]
    potential: Potential = Field(examples=["0 V"])
    until: Until
    record: RecordModel | None = None


class EisStep(StepBase):
    """One potentiostatic impedance sweep; it ends when the sweep is done."""

    type: Literal["eis"]
    f_start: Frequency = Field("200 kHz", validate_default=True, examples=["200 kHz"])
    f_end: Frequency = Field("100 mHz", validate_default=True, examples=["100 mHz"])
    points_per_decade: int = Field(6, ge=1, le=100, strict=True, examples=[6])
    amplitude: PositivePotential = Field("10 mV", validate_default=True, examples=["10 mV"])
    dc: Potential | None = Field(None, description="default: the open-circuit potential",
                                 examples=["0 V"])


class LoopStep(StepBase):
    """Repeat ``steps`` ``count`` times; ``counts_cycles``: each iteration is a new cycle."""

    type: Literal["loop"]
    count: int = Field(ge=1, le=MAX_COUNT, strict=True, examples=[10])
    counts_cycles: bool = Field(False, strict=True)
    steps: list[StepModel] = Field(min_length=1)


StepModel = Annotated[
    Union[RestStep, CurrentStep, CurrentDensityStep, PotentialStep, EisStep, LoopStep],  # noqa: UP007
    Field(discriminator="type")]
LoopStep.model_rebuild()

StepTypes = (RestStep, CurrentStep, CurrentDensityStep, PotentialStep, EisStep, LoopStep)


class SequenceModel(ProtocolBase):
    """``kind = "sequence"``: explicit steps. Default safety window -1 V to +1 V."""

    kind: Literal["sequence"]
    record: RecordModel | None = Field(None, description="for every step without its own")
    steps: list[StepModel] = Field(min_length=1)
    failure: FailureModel | None = None
    outcome: Literal[OUTCOMES] | None = Field(  # type: ignore[valid-type]
        None, description="what rig.analysis.outcomes computes when a channel ends")
    expected_ends: list[Name] = Field(
        default_factory=list, description="end reasons that are this protocol's planned result",
        examples=[["short_hard"]])

    def problems(self) -> list[Problem]:
        found = super().problems() + sequence_problems(self)
        if self.failure is not None and self.failure.short_below_resistance is not None:
            found.append(("failure.short_below_resistance", (
                "only for the template kinds (a sequence has no single current density); give "
                'short_below as a potential, e.g. short_below = "1 mV"')))
        return found


# ---- the step tree -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Node:
    """A step with where it sits: its path, its place in execution order and its lists."""

    path: str  # "steps[2].steps[0]"
    step: Any  # one of StepTypes
    order: int  # preorder index: execution order, loops before their bodies
    lists: tuple[str, ...]  # the step lists around it, outermost first ("steps", ...)
    loops: tuple[Node, ...]  # enclosing loops, outermost first


def walk(steps: list[Any], prefix: str = "steps", lists: tuple[str, ...] = (),
         loops: tuple[Node, ...] = (), counter: list[int] | None = None) -> Iterator[Node]:
    """Every step of a tree, in execution order (a loop before its body)."""
    counter = counter if counter is not None else [0]
    lists = (*lists, prefix)
    for i, step in enumerate(steps):
        node = Node(f"{prefix}[{i}]", step, counter[0], lists, loops)
        counter[0] += 1
        yield node
        if isinstance(step, LoopStep):
            yield from walk(step.steps, f"{node.path}.steps", lists, (*loops, node), counter)


def labels_of(nodes: list[Node]) -> dict[int, str]:
    """Each step's label by ``id(step)``: its own, or one made from its type (never equal to a
    written label, so a goto is never ambiguous).

    >>> from pydantic import TypeAdapter
    >>> steps = TypeAdapter(list[StepModel]).validate_python([
    ...     {"type": "rest", "label": "rest", "until": {"time": "1 h"}},
    ...     {"type": "rest", "until": {"time": "1 h"}}])
    >>> sorted(labels_of(list(walk(steps))).values())
    ['rest', 'rest_2']
    """
    written = {n.step.label for n in nodes if n.step.label}
    out = {}
    for n in nodes:
        label = n.step.label
        if not label:
            base = getattr(n.step, "half_cycle", None) or AUTO_LABELS[n.step.type]
            label, k = base, 2
            while label in written:
                label, k = f"{base}_{k}", k + 1
        out[id(n.step)] = label
    return out


def sequence_problems(m: SequenceModel) -> list[Problem]:
    """Every cross-field problem of a sequence file, with its field path."""
    nodes = list(walk(m.steps))
    window = (m.safety.min_potential if m.safety.min_potential is not None else -1.0,
              m.safety.max_potential if m.safety.max_potential is not None else 1.0)
    found = _label_problems(nodes) + _loop_problems(nodes)
    for node in nodes:
        if isinstance(node.step, EisStep) and node.step.f_start == node.step.f_end:
            found.append((f"{node.path}.f_end", "must differ from f_start"))
        if isinstance(node.step, (LoopStep, EisStep)):
            continue
        found += _step_problems(node, window)
        if node.step.record is None and m.record is None:
            found.append((f"{node.path}.record", ('missing; add record = {every = "10 s"} to the '
                          "step, or a [record] table for every step")))
    found += _goto_problems(nodes)
    found += _current_limit_problems(m, nodes) + _expected_end_problems(m, nodes)
    return found


def _label_problems(nodes: list[Node]) -> list[Problem]:
    found: list[Problem] = []
    seen: dict[str, str] = {}
    for n in nodes:
        label = n.step.label
        if label is None:
            continue
        if label == "next" or label.startswith("end:"):
            found.append((f"{n.path}.label", f'"{label}" is reserved for then; choose another'))
        elif label in seen:
            found.append((f"{n.path}.label", f'label "{label}" is already used by {seen[label]}'))
        else:
            seen[label] = n.path
    return found


def _loop_problems(nodes: list[Node]) -> list[Problem]:
    found = []
    for n in nodes:
        if isinstance(n.step, LoopStep) and n.step.counts_cycles:
            outer = [lp for lp in n.loops if lp.step.counts_cycles]
            if outer:
                found.append((f"{n.path}.counts_cycles", ("a loop inside a loop that counts cycles "
                              f"cannot count them too ({outer[0].path} does)")))
    return found


_WHY_NOT = {
    "rest": ({"charge", "areal_charge", "current_above", "current_below"},
             "a rest passes no current; end it on time, potential or dEdt_below"),
    "current": ({"current_above", "current_below"},
                "a current step holds its current; current ends are for potential steps"),
    "potential": ({"potential_above", "potential_below", "dEdt_below"},
                  "a potential step holds its potential; end it on time, charge or current"),
}


def _step_problems(node: Node, window: tuple[float, float]) -> list[Problem]:
    step, path = node.step, node.path
    family = "current" if step.type in ("current", "current_density") else step.type
    found = []
    amount = getattr(step, "current", None) if step.type == "current" else getattr(
        step, "current_density", None)
    if family == "current" and amount == 0:
        field = "current" if step.type == "current" else "current_density"
        found.append((f"{path}.{field}", "must not be zero; use a rest step for open circuit"))
    if family == "potential" and not window[0] <= step.potential <= window[1]:
        found.append((f"{path}.potential", (f"{step.potential:g} V is outside the safety window "
                      f"({window[0]:g} V to {window[1]:g} V)")))
    forbidden, why = _WHY_NOT[family]
    kinds = set()
    for k, end in enumerate(step.until):
        given = end.given()
        if not given:
            found.append((f"{path}.until[{k}]", "no end condition; give one of "
                          + ", ".join(END_FIELDS)))
        for name, value in given:
            kinds.add(name)
            where = f"{path}.until[{k}].{name}"
            if name in forbidden:
                found.append((where, why))
            elif _never_before_trip(name, value, window):
                found.append((where, _outside(value, window)))
    bound = {"time"} | ({"charge", "areal_charge"} if family == "current" else set())
    if not kinds & bound:
        found.append((f"{path}.until", _unbounded(family)))
    return found


def _never_before_trip(name: str, value: float, window: tuple[float, float]) -> bool:
    """A potential end at or beyond the safety window: the safety trip always comes first."""
    return ((name == "potential_above" and value >= window[1])
            or (name == "potential_below" and value <= window[0]))


def _outside(value: float, window: tuple[float, float]) -> str:
    return (f"{value:g} V is not inside the safety window ({window[0]:g} V to {window[1]:g} V): "
            "the safety trip would always come first")


def _unbounded(family: str) -> str:
    if family == "current":
        return ("nothing bounds this step; add a charge or time limit, e.g. "
                '{time = "10 h", then = "end:timeout"} (a potential or dEdt end fires only if the '
                "cell gets there)")
    what = "rest" if family == "rest" else "potential step"
    because = ("a rest passes no charge" if family == "rest"
               else "the charge a potential step passes is up to the cell")
    return (f'nothing bounds this {what}; add a time limit, e.g. {{time = "10 h"}} ({because}, '
            "and its other ends fire only if the cell gets there)")


def _goto_problems(nodes: list[Node]) -> list[Problem]:
    by_label = {n.step.label: n for n in nodes if n.step.label}
    shown = ", ".join(by_label) if by_label else "no step has a label"
    found = []
    for n in nodes:
        for k, end in enumerate(getattr(n.step, "until", ())):
            problem = _then_problem(end.then, n, by_label, shown)
            if problem:
                found.append((f"{n.path}.until[{k}].then", problem))
    return found


def _then_problem(then: str, node: Node, by_label: dict[str, Node], shown: str) -> str | None:
    if then == "next":
        return None
    if then.startswith("end:"):
        if _END_NAME.fullmatch(then[4:]):
            return None
        return (f'"{then}": after "end:" give a name of letters, digits and _, '
                'e.g. "end:cutoff_reached"')
    target = by_label.get(then)
    if target is None:
        labels = f"labels: {shown}" if by_label else shown
        return f'"{then}" is not a step label ({labels})'
    if target.order <= node.order:
        return (f'"{then}" ({target.path}) does not come after this step: a goto only jumps '
                "forward (to repeat steps, use a loop with a count)")
    if target.lists[-1] not in node.lists:
        return (f'"{then}" ({target.path}) is inside a loop this step is not in: a goto jumps '
                "to a step of its own list or of an enclosing one")
    return None


def _current_limit_problems(m: SequenceModel, nodes: list[Node]) -> list[Problem]:
    if m.safety.max_current is not None:
        return []
    if any(isinstance(n.step, (PotentialStep, EisStep)) for n in nodes):
        return [("safety.max_current", ("missing; the current of a potential or EIS step is up "
                 'to the cell, so give the largest |current| allowed, e.g. max_current = "5 mA"'))]
    return []


def _expected_end_problems(m: SequenceModel, nodes: list[Node]) -> list[Problem]:
    ends = {e.then[4:] for n in nodes for e in getattr(n.step, "until", ())
            if e.then.startswith("end:")}
    allowed = sorted(ends) + list(ENGINE_END_REASONS)
    return [(f"expected_ends[{k}]", (f'"{name}" is neither an end:<outcome> of this file nor an '
             f"engine end reason (allowed: {', '.join(allowed)})"))
            for k, name in enumerate(m.expected_ends) if name not in allowed]
