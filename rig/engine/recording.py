"""The recording rule: which acquired samples are kept in the store."""

from __future__ import annotations

from protocols.plan import RecordRule


class Recorder:
    """Keeps a sample every ``every_s``, or sooner when E or I moved enough since the last kept
    one. The first sample of a step is always kept, and so is the last (see ``force``)."""

    __slots__ = ("dE", "dI", "every_s", "last_e", "last_i", "last_t")

    def __init__(self, rule: RecordRule) -> None:
        # a hair under the interval so float jitter never skips a due sample
        self.every_s = rule.every_s * (1 - 1e-9)
        self.dE = rule.every_dE_V
        self.dI = rule.every_dI_A
        self.last_t = float("-inf")
        self.last_e = 0.0
        self.last_i = 0.0

    def wants(self, t: float, e: float, i: float) -> bool:
        if (
            t - self.last_t >= self.every_s
            or (self.dE is not None and abs(e - self.last_e) >= self.dE)
            or (self.dI is not None and abs(i - self.last_i) >= self.dI)
        ):
            self.last_t, self.last_e, self.last_i = t, e, i
            return True
        return False

    def force(self, t: float, e: float, i: float) -> bool:
        """Keep this sample unless it is the one kept last."""
        if t == self.last_t:
            return False
        self.last_t, self.last_e, self.last_i = t, e, i
        return True
