"""One worker thread per physical connection.

Drivers are synchronous; the engine is asyncio. Every driver call goes through the Link of its
connection, so a transport is never used by two threads at once and the event loop never blocks
on a serial read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class Link:
    def __init__(self, name: str) -> None:
        self.name = name
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"link-{name}")

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def call_blocking(self, fn: Callable[..., T], *args: Any, timeout: float = 10.0) -> T:
        """From outside the loop (shutdown paths): still on the connection's own thread."""
        return self._executor.submit(fn, *args).result(timeout=timeout)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
