"""`rig station check`: open, identify and read every instrument and sensor of a station file
once, all at the same time (each on its own connection); failures are results, not exceptions.
A device a live run holds (rig.station.lock) is not opened: its row says which run has it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from drivers.base import InstrumentError
from rig.clock import RealClock, VirtualClock
from rig.station.lock import Claim, Holder, InstrumentInUse, acquire, device_key
from rig.station.opening import open_instrument, open_sensor
from rig.station.schema import (
    AtmosphereEntry,
    EmStat4Entry,
    Keithley2450Entry,
    StationFile,
    address_of,
    entries_of,
)

Clock = RealClock | VirtualClock


@dataclass
class CheckResult:
    """One instrument or sensor opened, identified and read once."""

    name: str
    driver: str
    address: str
    expected: str
    identity: str = ""
    reading: str = ""
    error: str = ""
    in_use: str = ""  # held by a live run: not opened, so the run is not disturbed

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def status(self) -> str:
        return "IN USE" if self.in_use else ("OK" if self.ok else "FAIL")


def _expected(entry: Any) -> str:
    if isinstance(entry, EmStat4Entry):
        return f"an EmStat4 answering MethodSCRIPT at {entry.baudrate} baud"
    if isinstance(entry, Keithley2450Entry):
        return f"a Keithley {entry.command_set} answering SCPI (*IDN? names the model)"
    if isinstance(entry, AtmosphereEntry):
        quantities = ", ".join(s.quantity for s in entry.map.registers)
        return f"a Modbus transmitter, device id {entry.map.device_id}, serving {quantities}"
    return (f"a KELLER Series 30 transmitter at bus address {entry.address}, "
            f"{entry.baudrate} baud")


def _check_emstat(driver: Any) -> tuple[str, str]:
    identity = f"{driver.identify()} SN {driver.serial_number()}"
    return identity, f"OCP {driver.open_circuit_potential():+.4f} V"


def _check_keithley(driver: Any) -> tuple[str, str]:
    identity = driver.identify()
    errors = driver.errors()
    state = "output ON" if driver.output_is_on() else "output off"
    queued = "; ".join(f"{c} {m}" for c, m in errors) if errors else "no errors queued"
    return identity, f"{state}, {queued}"


def _check_atmosphere(driver: Any) -> tuple[str, str]:
    values = driver.read()
    missing = [q for q, v in values.items() if math.isnan(v)]
    if missing:
        raise InstrumentError(f"the transmitter has no {', '.join(missing)} reading (NaN)")
    shown = [f"{q.removesuffix('_ppm').upper()} {v:.3f} ppm" if q.endswith("_ppm")
             else f"{v:.2f} K" for q, v in values.items()]
    specs = ", ".join(f"{s.quantity}@0x{s.address:04X}" for s in driver.map.registers)
    return f"Modbus device {driver.map.device_id} ({specs})", ", ".join(shown)


def _check_pressure(driver: Any) -> tuple[str, str]:
    info = driver.initialise()
    pressure_Pa, temperature_K = driver.read()
    identity = (f"KELLER class {info.device_class} group {info.group} "
                f"firmware {info.firmware}")
    return identity, f"{pressure_Pa / 1e5:.5f} bar, {temperature_K:.2f} K"


def _check_one(entry: Any, clock: Clock) -> CheckResult:
    kind = getattr(entry, "driver", None) or f"{entry.kind}"
    result = CheckResult(entry.name, kind, address_of(entry), _expected(entry))
    key = device_key(entry)
    try:  # never talk to a device a live run is driving; hold it while we do
        locks = acquire([Claim(key, entry.name)] if key else [],
                        Holder.this_process(None, "rig station check"))
    except InstrumentInUse as exc:
        result.in_use = exc.holder.describe()
        result.reading = f"in use by {result.in_use}"
        return result
    driver = None
    try:
        if isinstance(entry, (EmStat4Entry, Keithley2450Entry)):
            driver = open_instrument(entry, clock)
            probe: Callable[[Any], tuple[str, str]] = (
                _check_emstat if isinstance(entry, EmStat4Entry) else _check_keithley)
        else:
            driver = open_sensor(entry)
            probe = _check_atmosphere if isinstance(entry, AtmosphereEntry) else _check_pressure
        result.identity, result.reading = probe(driver)
    except Exception as exc:  # noqa: BLE001 - any failure is reported, never raised
        result.error = f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc)
    finally:
        if driver is not None:
            with contextlib.suppress(Exception):  # closing after a failure is best effort
                driver.close()
        locks.release()
    return result


def check_station(config: StationFile, clock: Clock | None = None) -> list[CheckResult]:
    """Open, identify and read every instrument and sensor once, all at the same time (each
    on its own connection); failures are results, not exceptions."""
    clock = clock if clock is not None else RealClock()
    entries = [e for _, e in entries_of(config)]
    with ThreadPoolExecutor(max_workers=max(1, len(entries))) as pool:
        return list(pool.map(lambda e: _check_one(e, clock), entries))


def format_check(results: Sequence[CheckResult]) -> str:
    """The table `rig station check` prints, then one paragraph per failure."""
    header = ("name", "driver", "address", "identity", "reading", "status")
    rows = [(r.name, r.driver, r.address, r.identity or "-", r.reading or "-",
             r.status) for r in results]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()
             for row in [header, *rows]]
    for r in results:
        if not r.ok:
            lines += ["", f"FAIL {r.name} ({r.driver} at {r.address}):",
                      f"  expected {r.expected}", f"  error: {r.error}"]
    failed = sum(not r.ok for r in results)
    busy = sum(bool(r.in_use) for r in results)
    lines += ["", f"{len(results) - failed - busy} of {len(results)} OK"
              + (f", {busy} in use by a run (not opened)" if busy else "")
              + (f", {failed} failed" if failed else "")]
    return "\n".join(lines)


