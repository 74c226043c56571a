"""Offset pages of a listing, in page order, the later ones asked for several at a time (DESIGN §6).

A listing of 10,000 rules is 10 pages. One after another they were two thirds of the time from a ban to its
block at the edge (issue 18; each page is a round trip, 0.2-0.3 s at Cloudflare). Page 1 says how many
pages there are (`result_info.total_pages`). While the quota is plentiful the pages after it are asked for
PAGES_AT_ONCE at a time, and handed over strictly in page order, each with its own error: the caller
decides where the listing ends and what is incomplete exactly as it did one page at a time. What is asked
for beyond the caller's last page (or a page that failed) is at most PAGES_AT_ONCE - 1 pages; they make no
further attempt, and the listing waits for their requests in flight (a 429 among them ends the run) up to
STOPPED_WAIT seconds.

Without a known, plentiful quota (no `Ratelimit` headers, or little left) pages go one at a time: requests
in flight when a 429 comes cannot be called back, so they only go together when a 429 is unlikely.

No HTTP here: `fetch` is the caller's (rules.py). Every request still passes the run's Pacer, which spaces
their starts and keeps the quota's reserve whichever thread sends them.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Generator
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

# Pages in flight at once: 10 pages in the time of 3 to 4, well inside Cloudflare's 200 requests per second
# per IP; the Pacer's burst (20) covers a whole kicked listing of 10,000 rules and its writes.
PAGES_AT_ONCE = 4
# Seconds a listing that has ended waits for the pages it asked for beyond its end: they started beside the
# last page read, so a round trip (0.2-0.3 s at Cloudflare) has mostly passed; a hung one costs no more.
STOPPED_WAIT = 1.0


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page as read: what it holds, and what its `result_info` says of the paging."""

    number: int
    shown: str  # the request, as errors and logs name it
    items: list[T]
    size: int  # the page size the server says it used (never more than asked)
    pages: int | None  # total_pages, when it says


def in_order(
    fetch: Callable[[int], Page[T]], at_once: Callable[[], int], stop: threading.Event | None = None
) -> Generator[Page[T], None, None]:
    """Pages 1, 2, 3, … for as long as the caller reads them; `fetch(n)` reads page n (or raises).

    `at_once()` says, before each page is asked for, how many may be in flight: PAGES_AT_ONCE while the
    quota is plentiful, 1 otherwise (the caller's Pacer decides). A page's error is raised where that page
    would be handed over: the pages before it are all delivered first. Close the iterator when the listing
    ends. The pages asked for beyond it are no longer needed: `stop` is set (the caller's `fetch` makes no
    further attempt once it is), and what is in flight is waited for, up to STOPPED_WAIT seconds. On
    KeyboardInterrupt or SystemExit nothing is waited for: the page threads are daemons.
    """
    first = fetch(1)
    yield first
    number = 2
    known = first.pages or 0
    width = at_once() if known >= 3 else 1  # two pages or more to come: worth their own threads
    if width > 1:
        ahead: deque[Future[Page[T]]] = deque()
        try:
            while number <= known:
                while number + len(ahead) <= known and len(ahead) < max(1, at_once()):
                    ahead.append(_start(fetch, number + len(ahead)))
                page = ahead.popleft().result()
                number += 1
                yield page
        except BaseException as exc:
            if stop is not None:
                stop.set()
            if isinstance(exc, Exception | GeneratorExit):  # not KeyboardInterrupt, SystemExit
                # A 429 among them ends the run: what they meet in a round trip is seen before the listing
                # returns. One that hangs (a timeout is 30 s) is not waited for beyond that: the transport
                # still refuses every request after a 429, whenever it comes back.
                wait(ahead, timeout=STOPPED_WAIT)
            raise
    while True:  # beyond what page 1 announced (rules were added meanwhile), or no count: one at a time
        yield fetch(number)
        number += 1


def _start(fetch: Callable[[int], Page[T]], number: int) -> Future[Page[T]]:
    """fetch(number) in a daemon thread: a Ctrl-C ends the process without waiting for a page in flight
    (a ThreadPoolExecutor's threads are joined at exit, and their retries went on for seconds)."""
    future: Future[Page[T]] = Future()

    def run() -> None:
        future.set_running_or_notify_cancel()
        try:
            future.set_result(fetch(number))
        except BaseException as exc:  # handed over with the page, where it would be read
            future.set_exception(exc)

    threading.Thread(target=run, name=f"page-{number}", daemon=True).start()
    return future
