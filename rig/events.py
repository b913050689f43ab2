"""The kinds of event a run records: one list, shared by the engine that writes them, the store
that keeps them and the monitor and analysis that read them.

A ``StrEnum``: a member *is* its text, so what is stored, compared and printed is the same
string it always was, and a reader may still match a kind it read from an older store:

>>> EventKind.SAFETY_TRIP == "safety_trip", f"{EventKind.INTERLOCK_HOLD}"
(True, 'interlock_hold')
>>> EventKind.interlock("release")
<EventKind.INTERLOCK_RELEASE: 'interlock_release'>
"""

from __future__ import annotations

from enum import StrEnum


class EventKind(StrEnum):
    # the run
    RUN_START = "run_start"
    RUN_END = "run_end"
    RESUMED_AFTER_CRASH = "resumed_after_crash"
    INTERRUPTED = "interrupted"            # a stop signal: outputs off, resumable
    RUN_FAILED = "run_failed"              # the store or a task of the run failed
    ABORTED_DEAD_RUN = "aborted_dead_run"  # `rig abort` of a run whose engine was gone
    COMMAND = "command"
    COMMAND_REFUSED = "command_refused"    # a command row the engine does not know
    # a channel's plan
    STEP_END = "step_end"
    CHANNEL_END = "channel_end"
    BAD_PLAN = "bad_plan"
    ENGINE_ERROR = "engine_error"
    # held at open circuit (a person's pause, a station interlock's hold) and back
    PAUSED = "paused"
    HELD = "held"
    RESUMED = "resumed"
    # ended from outside the plan (the same words as the channel's end reason)
    ABORTED = "aborted"
    OVERPRESSURE = "overpressure"
    # what the data showed
    SAFETY_TRIP = "safety_trip"
    OVERSHOOT = "overshoot"
    SHORT_HARD = "short_hard"
    SHORT_SOFT = "short_soft"
    OVERPOTENTIAL_DIVERGENCE = "overpotential_divergence"
    # the instruments
    INSTRUMENT_FAULT = "instrument_fault"
    INSTRUMENT_TIMEOUT = "instrument_timeout"
    INSTRUMENT_RETRIED = "instrument_retried"  # an attempt the driver failed and retried (a lost or garbled reply, a redone setup)
    GARBLED_PACKAGE = "garbled_package"
    OUTPUT_OFF = "output_off"        # switching an output off failed
    # the station's sensors and interlocks
    SENSOR_FAULT = "sensor_fault"
    SENSOR_OK = "sensor_ok"
    SENSOR_RETRIED = "sensor_retried"  # failed attempts the sensor's driver retried
    PRESSURE_RISING = "pressure_rising"
    INTERLOCK_HOLD = "interlock_hold"
    INTERLOCK_RELEASE = "interlock_release"
    INTERLOCK_ALARM_CLEARED_MANUAL = "interlock_alarm_cleared_manual"

    @classmethod
    def interlock(cls, action: str) -> EventKind:
        """The event of an atmosphere interlock transition (``Transition.action``)."""
        return cls(f"interlock_{action}")


HOLD_KINDS = (EventKind.PAUSED, EventKind.HELD, EventKind.RESUMED)
"""A channel's hold begins with paused or held and ends with resumed."""

INTERLOCK_KINDS = (EventKind.INTERLOCK_HOLD, EventKind.INTERLOCK_RELEASE,
                   EventKind.INTERLOCK_ALARM_CLEARED_MANUAL)
