"""Running many LLM calls concurrently, and running async code from sync callers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def run_in_fresh_loop(main: Callable[[], Awaitable[T]]) -> T:
    """Run `main()` in a new event loop; in a helper thread when the caller already runs a loop
    (e.g. inside an async Prefect task), so sync APIs work from anywhere."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())  # type: ignore[arg-type]
    box: dict[str, Any] = {}

    def worker() -> None:
        try:
            box["value"] = asyncio.run(main())  # type: ignore[arg-type]
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=worker, name="llm-run-sync")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


async def gather_with_progress(coros: list[Awaitable[T]], desc: str, progress: bool = True) -> list[T]:
    """Await `coros` concurrently (the client's semaphore bounds what is in flight) with a progress bar;
    results in input order."""
    async def indexed(index: int, coro: Awaitable[T]) -> tuple[int, T]:
        return index, await coro

    results: list[Any] = [None] * len(coros)
    tasks = [asyncio.ensure_future(indexed(i, c)) for i, c in enumerate(coros)]
    bar = tqdm(total=len(tasks), desc=desc, disable=not progress)
    try:
        for finished in asyncio.as_completed(tasks):
            index, value = await finished
            results[index] = value
            bar.update(1)
    finally:
        bar.close()
        for task in tasks:
            task.cancel()
    return results
