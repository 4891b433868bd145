"""Prefetching: decode and resize the next images on worker threads while the model runs.

LiteRT's ``invoke`` releases the GIL, and so do most of Pillow's decoding and numpy's array
work, so a few threads keep the interpreter fed and a folder runs close to the
interpreter's invoke-only rate.

Example:
    >>> list(prefetch([1, 2, 3], lambda x: x * 10))
    [(1, 10, None), (2, 20, None), (3, 30, None)]
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

from edgeship.errors import EdgeshipError

__all__ = ["default_num_workers", "prefetch"]

Item = TypeVar("Item")
Result = TypeVar("Result")


def default_num_workers() -> int:
    """Preprocessing threads: one per core, at most 4 (decoding a 227px JPEG takes ~1 ms)."""
    return max(1, min(4, os.cpu_count() or 1))


def _guarded(fn: Callable[[Item], Result], item: Item) -> tuple[Result | None, EdgeshipError | None]:
    # A user-fixable failure (an unreadable image) travels with its item; anything else is a bug
    # and is raised in the consumer by Future.result().
    try:
        return fn(item), None
    except EdgeshipError as e:
        return None, e


def prefetch(
    items: Iterable[Item],
    fn: Callable[[Item], Result],
    num_workers: int | None = None,
    depth: int | None = None,
) -> Iterator[tuple[Item, Result | None, EdgeshipError | None]]:
    """Yields ``(item, fn(item), None)`` in input order, computing up to ``depth`` items ahead.

    An item whose ``fn`` raised an :class:`EdgeshipError` is yielded as ``(item, None, error)``.

    Args:
        items: the work, in the order results are wanted.
        fn: called on worker threads; must not touch the interpreter.
        num_workers: threads; default :func:`default_num_workers`.
        depth: results in flight; default four per worker.
    """
    num_workers = num_workers or default_num_workers()
    depth = depth or 4 * num_workers
    iterator = iter(items)
    pending: deque[tuple[Item, Future]] = deque()
    with ThreadPoolExecutor(num_workers, thread_name_prefix="edgeship-prefetch") as pool:
        try:
            for item in iterator:
                pending.append((item, pool.submit(_guarded, fn, item)))
                if len(pending) >= depth:
                    break
            while pending:
                item, future = pending.popleft()
                following = next(iterator, _END)
                if following is not _END:
                    pending.append((following, pool.submit(_guarded, fn, following)))
                result, error = future.result()
                yield item, result, error
        finally:
            # The consumer stopped early (or failed): drop the work nobody will read.
            for _, future in pending:
                future.cancel()


_END = object()
