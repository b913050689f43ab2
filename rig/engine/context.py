"""What every part of a run shares: its clock, its writer, its limits and who shows it.

Its own module so the channel, the sensors and the run all depend on it and not on each other
(no import cycle channel <-> run <-> sensors).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

from protocols.plan import CellSpec, FailureCriteria, Plan, Safety
from rig.clock import RealClock, VirtualClock
from rig.store import RunWriter, get_eis, get_sensors, get_steps, open_reader


class Progress(Protocol):
    """What the engine tells whoever shows the run (the CLI, tests). Must be cheap."""

    def run_started(self, run_id: str, plan: Plan) -> None: ...
    def channel_started(self, channel: int, cell: CellSpec) -> None: ...
    def cycle_done(self, channel: int, cycle: int, stats: dict[str, float]) -> None: ...
    def sample(self, channel: int, t: float, e: float, i: float) -> None: ...
    def channel_ended(self, channel: int, reason: str) -> None: ...


class NoProgress:
    def run_started(self, run_id: str, plan: Plan) -> None: ...
    def channel_started(self, channel: int, cell: CellSpec) -> None: ...
    def cycle_done(self, channel: int, cycle: int, stats: dict[str, float]) -> None: ...
    def sample(self, channel: int, t: float, e: float, i: float) -> None: ...
    def channel_ended(self, channel: int, reason: str) -> None: ...


@dataclass
class RunContext:
    clock: RealClock | VirtualClock
    writer: RunWriter
    run_key: int
    run_id: str
    safety: Safety
    progress: Progress = field(default_factory=NoProgress)
    failure: FailureCriteria = field(default_factory=FailureCriteria)
    outcome: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    pressure_sensors: dict[int, str] = field(default_factory=dict)  # channel -> sensor name
    # On the virtual clock, sensors are polled at most this often (simulated seconds): each poll
    # is a real network round trip, and a 400-h demo must not be made of them. 0: as configured.
    sensor_floor_s: float = 0.0
    # how often a channel reads its instrument, in clock seconds: on hardware often enough to
    # react; on the virtual clock in batches (the instrument's own cutoffs act in between)
    read_every_s: float = 1.0
    virtual_batch: int = 128        # a step whose end is known (its charge or time)
    virtual_batch_early: int = 16   # a step that may end sooner (cutoffs, |dE/dt|, shorts)

    async def outcome_of(self, cell: CellSpec, reason: str) -> dict[str, Any] | None:
        """The protocol's named result for a channel that ended (CE, CCD, failure cycle...),
        computed from what the store holds for it; None when the protocol names none."""
        if self.outcome is None:
            return None
        return await asyncio.to_thread(self._compute_outcome, cell, reason)

    def _compute_outcome(self, cell: CellSpec, reason: str) -> dict[str, Any] | None:
        if self.outcome is None:
            return None
        outcome = self.outcome
        self.writer.flush()
        conn = open_reader(self.writer.path)
        try:
            from rig.analysis.outcomes import compute_outcome

            ch = cell.channel
            steps = get_steps(conn, self.run_key, ch)
            eis = get_eis(conn, self.run_key, ch)
            name = self.pressure_sensors.get(ch)
            sensors = get_sensors(conn, self.run_key, sensor=name) if name else []
            return compute_outcome(outcome, steps, reason, self.parameters, eis=eis,
                                   sensors=sensors, cell=cell)
        except Exception as exc:  # noqa: BLE001 -- analysis must never lose the run's end
            return {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            conn.close()

    def read_window(self, interval_s: float, early: bool = True) -> float:
        if self.clock.is_virtual:
            batch = self.virtual_batch_early if early else self.virtual_batch
            return max(interval_s * batch, self.read_every_s)
        return min(interval_s, self.read_every_s)
