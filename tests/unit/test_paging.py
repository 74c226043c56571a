"""A listing's pages asked for several at a time (reconcile/cloudflare/paging.py), and what that asks of the
Pacer and the rules client: the same rules and the same errors as one page at a time, a bounded number of
pages asked for beyond the end, and only while the quota is plentiful."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from reconcile.cloudflare import paging
from reconcile.cloudflare.answers import Quota
from reconcile.cloudflare.credentials import Credentials
from reconcile.cloudflare.pacing import Pacer
from reconcile.cloudflare.rules import Client, IncompleteListing
from reconcile.core.model import Scope, ScopeKind
from reconcile.errors import CloudflareError, RateLimited

ZONE = Scope(ScopeKind.ZONE, "023e105f4ecef8ad9ca31a8372d0c353")


class Fetcher:
    """fetch(n) for in_order: `pages` pages of `size`, a short wait each; records what was asked, and how
    many were in flight at most."""

    def __init__(self, pages: int, *, fail: int | None = None, wait: float = 0.01, gate: int = 0) -> None:
        self.pages, self.fail, self.wait = pages, fail, wait
        # Pages 2 to gate - 1 answer only once page `gate` is asked for: those asked together are then in
        # flight together whatever the machine's speed (a thread may start after another has finished).
        self.gate = gate
        self.asked: list[int] = []
        self.beside: list[int] = []  # for each page asked for, how many others were in flight then
        self.in_flight = self.most_in_flight = 0
        self._lock = threading.Condition()

    def __call__(self, number: int) -> paging.Page[int]:
        with self._lock:
            self.asked.append(number)
            self.beside.append(self.in_flight)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self._lock.notify_all()
            if 1 < number < self.gate:
                assert self._lock.wait_for(lambda: self.gate in self.asked, timeout=30)
        try:
            # Later pages answer sooner: the order they come back in is not the order they were asked in.
            time.sleep(self.wait / number)
            if number == self.fail:
                raise CloudflareError(f"page {number} failed", method="GET", path=f"?page={number}")
            items = [number * 10 + i for i in range(10)] if number <= self.pages else []
            return paging.Page(number, f"?page={number}", items, 10, self.pages)
        finally:
            with self._lock:
                self.in_flight -= 1


def read_all(fetch: Fetcher, at_once: int) -> list[int]:
    got: list[int] = []
    pages = paging.in_order(fetch, lambda: at_once)
    try:
        for page in pages:
            got.append(page.number)
            if page.number >= fetch.pages:
                return got
    finally:
        pages.close()
    raise AssertionError("unreachable")


@pytest.mark.parametrize("at_once", [1, 2, 4])
def test_pages_come_in_page_order_whatever_order_they_are_answered_in(at_once: int) -> None:
    fetch = Fetcher(10, gate=1 + at_once)
    assert read_all(fetch, at_once) == list(range(1, 11))
    assert sorted(fetch.asked) == list(range(1, 11))  # each page once, none beyond the last
    assert fetch.most_in_flight == at_once


def test_one_at_a_time_when_the_caller_says_so_mid_listing() -> None:
    fetch = Fetcher(10, gate=3)  # pages 2 and 3 go together, then one at a time
    widths = iter([4, 4, 4] + [1] * 20)
    pages = paging.in_order(fetch, lambda: next(widths))
    seen = [page.number for _, page in zip(range(10), pages, strict=False)]
    pages.close()
    assert seen == list(range(1, 11)) and sorted(fetch.asked) == seen
    assert max(fetch.beside) > 0  # at first, pages went together
    # Once the quota stopped being plentiful, no page went out beside another.
    assert fetch.beside[-3:] == [0, 0, 0]


def test_an_error_comes_where_its_page_would_and_few_pages_are_asked_beyond_it() -> None:
    fetch = Fetcher(50, fail=3)
    got: list[int] = []
    with pytest.raises(CloudflareError, match="page 3 failed"):
        for page in paging.in_order(fetch, lambda: paging.PAGES_AT_ONCE):
            got.append(page.number)
    assert got == [1, 2]
    # Page 3's error is raised once every page asked for is answered: at most PAGES_AT_ONCE - 1 beyond it.
    assert max(fetch.asked) <= 3 + paging.PAGES_AT_ONCE - 1
    assert fetch.in_flight == 0


def test_closing_early_cancels_what_has_not_started() -> None:
    fetch = Fetcher(1000)
    pages = paging.in_order(fetch, lambda: paging.PAGES_AT_ONCE)
    assert [next(pages).number, next(pages).number] == [1, 2]
    pages.close()
    assert len(fetch.asked) <= 2 + paging.PAGES_AT_ONCE and fetch.in_flight == 0


def test_pages_beyond_what_page_one_announced_are_asked_one_at_a_time() -> None:
    fetch = Fetcher(3)
    pages = paging.in_order(fetch, lambda: paging.PAGES_AT_ONCE)
    fetch.pages = 6  # rules were added while the listing ran: pages 4 to 6 say so
    numbers = [next(pages).number for _ in range(6)]
    pages.close()
    assert numbers == [1, 2, 3, 4, 5, 6]
    assert fetch.asked[3:] == [4, 5, 6]


# --- the Pacer with requests in flight together ------------------------------------------------------


def test_answers_in_flight_together_are_not_taken_for_others_spending() -> None:
    pacer = Pacer(1_000_000, 100, 600, clock=lambda: 0.0)
    first = pacer.acquire("GET page 1")
    pacer.observe(Quota(1199, 300.0, 1200, 300), first)
    two, three = pacer.acquire("GET page 2"), pacer.acquire("GET page 3")
    # The server counted page 3 before page 2: page 3's answer says one left less than page 1's.
    pacer.observe(Quota(1198, 300.0, 1200, 300), three)
    pacer.observe(Quota(1197, 300.0, 1200, 300), two)  # older than the last answer: not read
    assert pacer.seen is not None and pacer.seen.ours == three
    alone = pacer.acquire("POST")
    pacer.observe(Quota(1196, 300.0, 1200, 300), alone)
    assert pacer.others_spent == 0


def test_others_spending_is_still_seen_between_requests_sent_one_at_a_time() -> None:
    pacer = Pacer(1_000_000, 100, 600, clock=lambda: 0.0)
    one = pacer.acquire("GET")
    pacer.observe(Quota(1199, 300.0, 1200, 300), one)
    two = pacer.acquire("GET")
    pacer.observe(Quota(1190, 300.0, 1200, 300), two)  # 9 gone, 1 of them ours
    assert pacer.others_spent == 8


def test_a_request_that_got_no_answer_is_no_longer_in_flight() -> None:
    pacer = Pacer(1_000_000, 100, 600, clock=lambda: 0.0)
    lost = pacer.acquire("GET")
    pacer.finished(lost)  # a reset: no answer to observe
    one = pacer.acquire("GET")
    pacer.observe(Quota(1190, 300.0, 1200, 300), one)
    two = pacer.acquire("GET")
    pacer.observe(Quota(1180, 300.0, 1200, 300), two)
    assert pacer.others_spent == 9  # sent one at a time: counted as before


def test_threads_acquiring_at_once_get_every_number_once() -> None:
    pacer = Pacer(1_000_000, 10_000, 600)
    numbers: list[int] = []
    lock = threading.Lock()

    def take() -> None:
        for _ in range(200):
            number = pacer.acquire("GET")
            with lock:
                numbers.append(number)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(numbers) == list(range(1, 801)) and pacer.requests == 800


# --- the rules client ----------------------------------------------------------------------------------


class PagedSession(requests.Session):
    """`total` rules, 5 a page, with or without quota headers; a page may answer 429 or 500. Records how
    many requests were in flight at most."""

    def __init__(
        self,
        total: int,
        *,
        headers: bool = True,
        status: dict[int, int] | None = None,
        announced: int | None = None,
        left: dict[int, int] | None = None,
        before: Callable[[int], None] = lambda page: None,
    ) -> None:
        super().__init__()
        self.total, self.headers_on, self.status = total, headers, status or {}
        self.announced = announced  # total_pages as page 1 says it, when rules were deleted since
        self.left = left or {}  # the quota's `r` a page's answer states (1000 when not given)
        self.before = before  # called with the page's number before it is answered (a test holds it there)
        self.asked: list[int] = []
        self.in_flight = self.most_in_flight = 0
        self._lock = threading.Lock()

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        page = int(str(url).split("page=")[1].split("&")[0])
        with self._lock:
            self.asked.append(page)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            self.before(page)
            time.sleep(0.02)
            response = requests.Response()
            response.status_code = self.status.get(page, 200)
            if self.headers_on:
                response.headers["Ratelimit"] = f'"default";r={self.left.get(page, 1000)};t=200'
                response.headers["Ratelimit-Policy"] = '"default";q=1200;w=300'
            if response.status_code == 429:
                response.headers["Retry-After"] = "60"
            ids = range((page - 1) * 5, min(page * 5, self.total))
            rules = [
                {
                    "id": f"{n:032x}",
                    "mode": "block",
                    "configuration": {"target": "ip", "value": f"10.0.0.{n}"},
                }
                for n in ids
            ]
            info = {"page": page, "per_page": 5, "total_pages": self.announced or -(-self.total // 5)}
            body = {"success": True, "errors": [], "messages": [], "result": rules, "result_info": info}
            response._content = json.dumps(body).encode()
            return response
        finally:
            with self._lock:
                self.in_flight -= 1


def client(
    session: requests.Session,
    pacer: Pacer | None = None,
    retries: int = 0,
    sleep: Callable[[float], None] = lambda _: None,
) -> Client:
    return Client(
        "https://api.cloudflare.com/client/v4",
        Credentials(token="t" * 40),
        pacer=pacer or Pacer(1_000_000, 1000, 600),
        session=session,
        per_page=5,
        retries=retries,
        sleep=sleep,
    )


def test_with_a_plentiful_quota_pages_go_together_and_come_back_in_order() -> None:
    gate = 1 + paging.PAGES_AT_ONCE
    ready = threading.Event()

    def before(page: int) -> None:  # pages 2 to 4 answer once page 5 is asked: in flight together
        if page == gate:
            ready.set()
        elif 1 < page < gate:
            assert ready.wait(timeout=30)

    session = PagedSession(48, before=before)
    rules = client(session).list_rules(ZONE)
    assert [r.value for r in rules] == [f"10.0.0.{n}" for n in range(48)]
    assert sorted(session.asked) == list(range(1, 11))
    assert session.most_in_flight == paging.PAGES_AT_ONCE


def test_without_quota_headers_pages_go_one_at_a_time() -> None:
    session = PagedSession(48, headers=False)
    assert len(client(session).list_rules(ZONE)) == 48
    assert session.asked == list(range(1, 11)) and session.most_in_flight == 1


def test_a_failed_page_keeps_the_pages_before_it_only() -> None:
    session = PagedSession(48, status={4: 500})
    with pytest.raises(IncompleteListing) as info:
        client(session).list_rules(ZONE)
    assert [r.value for r in info.value.rules] == [f"10.0.0.{n}" for n in range(15)]
    assert "page=4" in info.value.path


def test_a_429_on_a_later_page_ends_the_listing_even_after_an_earlier_failure() -> None:
    # Page 3 fails, page 4 (in flight with it) meets a 429: the 429 is what the run must stop on.
    session = PagedSession(48, status={3: 500, 4: 429})
    listing = client(session)
    with pytest.raises(RateLimited):
        listing.list_rules(ZONE)
    assert listing.rate_limited == 1
    assert max(session.asked) <= 2 + paging.PAGES_AT_ONCE  # nothing asked for after the 429 came back


def test_a_429_on_a_page_asked_for_beyond_the_end_still_ends_the_run() -> None:
    # Page 1 announces 10 pages, but rules were deleted meanwhile: the listing ends at page 3 (4 rules), while
    # pages 2 to 5 were asked for together and page 5 met a 429. Nothing may be written after it.
    session = PagedSession(14, status={5: 429}, announced=10)
    listing = client(session)
    with pytest.raises(RateLimited):
        listing.list_rules(ZONE)
    assert 5 in session.asked and listing.rate_limited == 1


class Blocking(Pacer):
    """A Pacer whose sleep (the spacing before a start, taken holding its lock) waits for the test's word,
    and which says when an answer is about to be observed."""

    def __init__(self) -> None:
        self.sleeping, self.wake, self.observing = threading.Event(), threading.Event(), threading.Event()
        super().__init__(60, 100, 600, sleep=self._sleep)

    def _sleep(self, seconds: float) -> None:
        self.sleeping.set()
        assert self.wake.wait(timeout=30)

    def observe(self, quota: Quota | None, ours: int | None = None) -> None:
        self.observing.set()
        super().observe(quota, ours)


def test_no_request_starts_after_another_thread_met_a_429_while_it_waited_for_its_start() -> None:
    pacer = Blocking()
    sent: list[str] = []

    class Session(requests.Session):
        def request(
            self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any
        ) -> requests.Response:
            sent.append(str(url))
            assert pacer.sleeping.wait(
                timeout=30
            )  # the second request now sleeps in acquire, holding its lock
            response = requests.Response()
            response.status_code = 429
            response._content = b""
            return response

    transport = Client(
        "https://api.cloudflare.com/client/v4", Credentials(token="t" * 40), pacer=pacer, session=Session()
    )
    errors: dict[str, BaseException] = {}

    def send(path: str) -> threading.Thread:
        def run() -> None:
            try:
                transport.send("GET", path, None)
            except BaseException as exc:
                errors[path] = exc

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    first = send("/zones?page=1")
    while not sent:  # the first request has its slot and is in flight
        time.sleep(0.001)
    waiting = send("/zones?page=2")
    assert pacer.observing.wait(timeout=30)  # the 429 is back; its observe waits for the sleeper's lock
    pacer.wake.set()
    first.join(timeout=30)
    waiting.join(timeout=30)
    assert sent == ["https://api.cloudflare.com/client/v4/zones?page=1"]
    assert all(isinstance(errors.get(path), RateLimited) for path in ("/zones?page=1", "/zones?page=2"))
    assert transport.requests == 1


def test_a_stopped_page_makes_no_further_attempt() -> None:
    stop = threading.Event()
    session = PagedSession(48, status={3: 500})
    listing = Client(
        "https://api.cloudflare.com/client/v4",
        Credentials(token="t" * 40),
        pacer=Pacer(1_000_000, 1000, 600),
        session=session,
        per_page=5,
        retries=3,
        sleep=lambda _: stop.set(),  # the listing ends during the first backoff
    )
    with pytest.raises(CloudflareError, match="not sent"):
        listing.send("GET", "/zones/x/firewall/access_rules/rules?page=3&per_page=5", None, stop=stop)
    assert session.asked == [3] and listing.requests == 1


def test_a_ctrl_c_waits_for_no_page_in_flight_and_stops_them() -> None:
    release = threading.Event()
    asked: list[int] = []
    returned: list[int] = []
    stop = threading.Event()

    def fetch(number: int) -> paging.Page[int]:
        asked.append(number)
        if number > 1:
            release.wait(timeout=30)  # a page that hangs
            assert stop.is_set()  # by the time it would try again, it is told not to
            returned.append(number)
        return paging.Page(number, f"?page={number}", [number], 1, 10)

    calls = iter(range(100))

    def at_once() -> int:
        if next(calls) == 5:  # the main thread, pages 2 to 5 in flight: Ctrl-C
            raise KeyboardInterrupt
        return paging.PAGES_AT_ONCE

    pages = paging.in_order(fetch, at_once, stop)
    assert next(pages).number == 1
    with pytest.raises(KeyboardInterrupt):
        next(pages)
    # Raised while the pages still hang: nothing waited for them.
    assert returned == [] and sorted(asked) == [1, 2, 3, 4, 5] and stop.is_set()
    release.set()


def page_threads_end() -> None:
    for thread in threading.enumerate():
        if thread.name.startswith("page-"):
            thread.join(timeout=30)


def test_a_listing_does_not_wait_for_a_hung_page_beyond_its_end(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paging, "STOPPED_WAIT", 0.2)  # the wait for pages beyond the end, shortened
    # Page 4 (beyond the real end: page 1 announced 10 pages, there are 3) never answers: a timeout is 30 s.
    release, answered = threading.Event(), threading.Event()

    def before(page: int) -> None:
        if page == 4:
            release.wait(timeout=30)
            answered.set()

    rules = client(PagedSession(14, announced=10, before=before)).list_rules(ZONE)
    assert len(rules) == 14 and not answered.is_set()  # returned while page 4 still hangs
    release.set()
    page_threads_end()


def test_a_page_waiting_for_the_quotas_reset_holds_up_no_other_page(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paging, "STOPPED_WAIT", 0.2)  # the wait for pages beyond the end, shortened
    # Page 4 (beyond the end) answers 500, saying the quota is at its reserve: its retry waits for the reset.
    # Pages 2 and 3, which the listing needs, answer meanwhile and must be read.
    resetting, reset, woke = threading.Event(), threading.Event(), threading.Event()

    def sleep(seconds: float) -> None:  # the Pacer's: only the wait for the reset is long
        if seconds > 1:
            resetting.set()
            reset.wait(timeout=30)
            woke.set()

    def before(page: int) -> None:
        if page in (2, 3):
            assert resetting.wait(timeout=30)

    # Pages 5 and 6 say so too: of answers that cross, the Pacer reads only the newest request's.
    session = PagedSession(14, announced=10, status={4: 500}, left={4: 100, 5: 100, 6: 100}, before=before)
    listing = client(session, pacer=Pacer(1_000_000, 1000, 600, sleep=sleep), retries=1)
    rules = listing.list_rules(ZONE)
    assert len(rules) == 14 and not woke.is_set()  # read while page 4 still waits for the reset
    reset.set()
    page_threads_end()
    assert session.asked.count(4) == 1  # its retry came after the listing ended: not sent


def test_an_attempt_that_is_not_sent_is_not_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paging, "STOPPED_WAIT", 0.2)  # the wait for pages beyond the end, shortened
    # Pages 4 to 6 (beyond the end) answer 500; their retries wake once the listing has returned.
    returned = threading.Event()
    session = PagedSession(14, announced=10, status={4: 500, 5: 500, 6: 500})
    pacer = Pacer(1_000_000, 1000, 600)

    def backoff(seconds: float) -> None:
        returned.wait(timeout=30)

    listing = client(session, pacer=pacer, retries=3, sleep=backoff)
    assert len(listing.list_rules(ZONE)) == 14
    returned.set()
    page_threads_end()
    # Each page once (up to 3 beyond the end are asked for beside the last), no retry sent, none counted.
    assert sorted(session.asked) == list(range(1, len(session.asked) + 1))
    assert pacer.requests == listing.requests == len(session.asked)
