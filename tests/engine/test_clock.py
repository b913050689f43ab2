"""The clock: virtual time jumps only when every participant sleeps, in order, and a streaming
instrument that writes on the clock's schedule never deadlocks the engine that reads it."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from rig.clock import RealClock, VirtualClock, make_clock


async def test_virtual_sleepers_wake_in_time_order_and_time_jumps():
    clock = VirtualClock(start=0.0)
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, t: float) -> None:
        with clock.participant():
            await clock.sleep_until(t)
            woke.append((name, clock.now()))

    wall0 = time.monotonic()
    await asyncio.gather(sleeper("c", 3600.0 * 400), sleeper("a", 10.0), sleeper("b", 3600.0))
    assert woke == [("a", 10.0), ("b", 3600.0), ("c", 1_440_000.0)]
    assert time.monotonic() - wall0 < 1.0  # 400 h took no wall time


async def test_a_busy_participant_holds_time_still():
    clock = VirtualClock(start=0.0)
    seen: list[float] = []
    release = asyncio.Event()

    async def busy() -> None:
        with clock.participant():
            await release.wait()  # e.g. an instrument request in flight
            seen.append(clock.now())

    async def sleeper() -> None:
        with clock.participant():
            await clock.sleep(100.0)
            seen.append(clock.now())

    tasks = [asyncio.create_task(busy()), asyncio.create_task(sleeper())]
    await asyncio.sleep(0.05)
    assert clock.now() == 0.0 and seen == []  # the sleeper waits: one participant is busy
    release.set()
    await asyncio.gather(*tasks)
    assert seen == [0.0, 100.0]


async def test_repeated_sleeps_accumulate_exactly():
    clock = VirtualClock(start=0.0)

    async def ticker() -> int:
        n = 0
        with clock.participant():
            while clock.now() < 1000.0:
                await clock.sleep(10.0)
                n += 1
        return n

    counts = await asyncio.gather(ticker(), ticker())
    assert counts == [100, 100] and clock.now() == 1000.0


async def test_cancelled_sleeper_does_not_block_others():
    clock = VirtualClock(start=0.0)

    async def forever() -> None:
        with clock.participant():
            await clock.sleep(1e9)

    async def short() -> float:
        with clock.participant():
            await clock.sleep(5.0)
            return clock.now()

    long_task = asyncio.create_task(forever())
    await asyncio.sleep(0)
    long_task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await long_task
    assert await short() == 5.0


async def test_streaming_device_writes_before_the_reader_wakes_no_deadlock():
    """The trap of design.md: a device that streams on its own schedule. The pump writes every
    package due by the new time into a real pipe before any sleeper wakes, so the engine's
    blocking read (in a worker thread, holding time still) always finds its data."""
    clock = VirtualClock(start=0.0)
    r, w = os.pipe()
    interval = 10.0
    sent = [0]

    def pump(now: float) -> None:
        while (sent[0] + 1) * interval <= now:
            sent[0] += 1
            os.write(w, f"{sent[0] * interval}\n".encode())

    clock.add_pump(pump)
    received: list[float] = []

    def read_line() -> float:  # blocking, like a serial read
        buf = b""
        while not buf.endswith(b"\n"):
            buf += os.read(r, 1)
        return float(buf)

    async def engine() -> None:
        loop = asyncio.get_running_loop()
        with clock.participant():
            for k in range(1, 51):
                await clock.sleep_until(k * interval)
                received.append(await asyncio.wait_for(
                    loop.run_in_executor(None, read_line), timeout=5))

    await asyncio.wait_for(engine(), timeout=10)
    os.close(r)
    os.close(w)
    assert received == [k * interval for k in range(1, 51)]


async def test_real_clock_accelerated_sleeps_scaled_wall_time():
    clock = RealClock(speed=100.0)
    t0, wall0 = clock.now(), time.monotonic()
    await clock.sleep(5.0)  # 5 clock seconds = 50 ms of wall time
    wall = time.monotonic() - wall0
    assert clock.now() - t0 >= 5.0 - 1e-6
    assert wall < 2.0


def test_make_clock_parses_specs_and_rejects_others():
    assert make_clock("", simulated=True).is_virtual
    assert not make_clock("", simulated=False).is_virtual
    assert make_clock("x60", simulated=True).speed == 60.0
    with pytest.raises(ValueError, match="virtual, real, xN"):
        make_clock("fast", simulated=True)


async def test_a_woken_sleeper_holds_time_until_it_sleeps_again():
    """A nudge (an interlock, a command) wakes a participant at the current time; the clock must
    not jump past that time while the woken participant acts."""
    clock = VirtualClock(start=0.0)
    seen: list[tuple[str, float]] = []
    wake = asyncio.get_running_loop().create_future()

    async def channel() -> None:
        with clock.participant():
            await clock.sleep_until(1000.0, wake)
            seen.append(("woken", clock.now()))
            await asyncio.sleep(0.01)  # acting on the nudge (e.g. an instrument call)
            seen.append(("acted", clock.now()))

    async def sensor() -> None:
        with clock.participant():
            await clock.sleep_until(30.0)
            wake.set_result(None)  # the interlock trips at t = 30
            await clock.sleep_until(60.0)
            seen.append(("sensor", clock.now()))

    await asyncio.gather(channel(), sensor())
    assert seen[:2] == [("woken", 30.0), ("acted", 30.0)]
