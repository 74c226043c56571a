"""reconcile.asn: the bulk answer parser on real Team Cymru lines, the cache, and the one connection
against a local whois server (tests/support/whois_server.py) in each of its moods."""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconcile.core.model import IPAddress
from reconcile.enrich.asn import Enrichment, enrich
from reconcile.enrich.cache import load_cache
from reconcile.enrich.cymru import MAX_NAME, AsnInfo
from reconcile.enrich.whois import AsnLookupError, query_bulk
from tests.support.whois_server import ASES, Answer, WhoisServer, closed_port, fake_answer

T0 = datetime(2026, 12, 1, 9, 0, 0, tzinfo=UTC)
TTL = timedelta(days=7)
TIMEOUT = 5.0


def ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text)


def addresses(n: int, start: int = 0) -> list[IPAddress]:
    """n distinct documentation-range addresses (data only: nothing ever connects to them), 1 in 10 IPv6."""
    out: list[IPAddress] = []
    for i in range(start, start + n):
        if i % 10 == 9:
            out.append(ipaddress.IPv6Address(f"2001:db8::{i:x}"))
        else:
            out.append(ipaddress.IPv4Address(int(ipaddress.IPv4Address("198.18.0.0")) + i))
    return out


def run(
    whois: WhoisServer, addrs: list[IPAddress], cache: Path | None, now: datetime = T0, **kw: object
) -> Enrichment:
    options: dict[str, object] = {"timeout": TIMEOUT, "ttl": TTL, **kw}
    return enrich(addrs, host=whois.host, port=whois.port, cache_file=cache, now=now, **options)  # type: ignore[arg-type]


def keys(addrs: list[IPAddress]) -> set[str]:
    return {a.compressed for a in addrs}


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# --- parser: real answers ---------------------------------------------------------------------------------


# --- cache document ------------------------------------------------------------------------------------


# --- one connection against the local server -----------------------------------------------------------


def test_thousand_new_addresses_in_one_connection_none_asked_twice(
    whois: WhoisServer, tmp_path: Path
) -> None:
    addrs = addresses(1000)

    started = time.monotonic()
    result = run(whois, addrs + addrs[:100], tmp_path / "asn.json")  # duplicates in the input too
    cold = time.monotonic() - started

    assert len(whois.connections) == 1
    conn = whois.connections[0]
    assert conn.lines[:2] == ["begin", "verbose"] and conn.lines[-1] == "end" and conn.complete
    assert len(conn.queries) == 1000 and len(set(conn.queries)) == 1000
    assert set(conn.queries) == {a.compressed for a in addrs}
    assert (result.result, result.hits, result.looked_up, result.answered, result.warning) == (
        "ok",
        0,
        1000,
        1000,
        None,
    )
    for a in addrs:
        expected = fake_answer(a.compressed)
        name = expected.name[:MAX_NAME].strip()
        assert result.infos[a] == AsnInfo(f"AS{expected.asn}", expected.cc, name, expected.prefix)
    assert cold < TIMEOUT
    print(
        f"\nASN enrich, 1,000 new addresses, cold: {cold * 1000:.1f} ms"
        f" (lookup {result.seconds * 1000:.1f} ms)"
    )


def test_server_that_answers_while_still_reading(whois: WhoisServer) -> None:
    # Not every server waits for `end`. The client sends all before it reads: with the kernel's buffers
    # (tens of MB on loopback) that cannot stall at these sizes, and if it ever did, the deadline ends it.
    whois.stream = True
    addrs = addresses(5000)

    result = enrich(addrs, host=whois.host, port=whois.port, timeout=20.0, cache_file=None, ttl=TTL, now=T0)

    assert (result.result, result.answered) == ("ok", 5000)
    assert len(whois.connections) == 1 and whois.connections[0].complete


def test_second_run_asks_only_new_addresses_third_opens_no_connection(
    whois: WhoisServer, tmp_path: Path
) -> None:
    cache = tmp_path / "asn.json"
    first, new = addresses(1000), addresses(50, start=1000)

    one = run(whois, first, cache)
    started = time.monotonic()
    two = run(whois, first + new, cache, now=T0 + timedelta(hours=1))
    warm = time.monotonic() - started
    three = run(whois, first + new, cache, now=T0 + timedelta(hours=2))

    assert len(whois.connections) == 2
    assert set(whois.connections[1].queries) == {a.compressed for a in new}
    assert len(whois.connections[1].queries) == 50
    assert (one.result, one.hits, one.looked_up) == ("ok", 0, 1000)
    assert (two.result, two.hits, two.looked_up, two.answered) == ("ok", 1000, 50, 50)
    assert (three.result, three.hits, three.looked_up, three.seconds) == ("skipped", 1050, 0, 0.0)
    assert three.hit_ratio == 1.0 and one.hit_ratio == 0.0
    assert len(three.infos) == 1050 and three.infos == two.infos
    across_two = (one.hits + two.hits) / (one.hits + one.looked_up + two.hits + two.looked_up)
    print(
        f"\nASN enrich, 1,000 known + 50 new (warm): {warm * 1000:.1f} ms;"
        f" cache hit ratio run 2: {two.hit_ratio:.3f}; across runs 1+2: {across_two:.3f}"
    )


def test_all_cached_opens_no_connection_even_with_the_server_refusing(
    whois: WhoisServer, tmp_path: Path
) -> None:
    cache = tmp_path / "asn.json"
    addrs = addresses(1000)
    run(whois, addrs, cache)
    whois.refuse()

    started = time.monotonic()
    again = run(whois, addrs, cache, now=T0 + timedelta(days=1))
    warm = time.monotonic() - started

    assert (again.result, again.hits, again.looked_up, again.warning) == ("skipped", 1000, 0, None)
    assert len(whois.connections) == 1
    print(f"\nASN enrich, 1,000 addresses, warm cache (no connection): {warm * 1000:.1f} ms")


def test_nothing_to_enrich_opens_no_connection_and_writes_no_cache(
    whois: WhoisServer, tmp_path: Path
) -> None:
    result = run(whois, [], tmp_path / "asn.json")
    assert (result.result, result.looked_up, result.hit_ratio) == ("skipped", 0, None)
    assert not whois.connections and not (tmp_path / "asn.json").exists()


def test_header_and_na_answers_are_understood_and_cached(whois: WhoisServer, tmp_path: Path) -> None:
    cache = tmp_path / "asn.json"
    addrs = addresses(20)
    whois.header = True
    whois.unknown = {addrs[0].compressed, addrs[9].compressed}
    whois.table = {
        addrs[1].compressed: Answer(13335, "US", "arin", "2010-07-14", "CLOUDFLARENET, US", "1.1.1.0/24")
    }

    result = run(whois, addrs, cache)

    assert (result.result, result.answered) == ("ok", 20)
    assert result.infos[addrs[0]] == AsnInfo(None, None, None, None)
    assert result.infos[addrs[9]] == AsnInfo(None, None, None, None)  # an IPv6 NA line
    assert result.infos[addrs[1]] == AsnInfo("AS13335", "US", "CLOUDFLARENET, US", "1.1.1.0/24")
    # an NA answer is an answer: not asked again before the TTL
    assert run(whois, addrs, cache, now=T0 + timedelta(days=1)).result == "skipped"


def test_long_multi_word_names_pass_through(whois: WhoisServer, tmp_path: Path) -> None:
    long_as = ASES[-1]
    addr = next(a for a in addresses(200) if int(a) % len(ASES) == len(ASES) - 1)

    result = run(whois, [addr], tmp_path / "asn.json")

    info = result.infos[addr]
    assert info.asn == f"AS{long_as[0]}" and len(long_as[4]) > MAX_NAME
    assert info.name == long_as[4][:MAX_NAME].strip()


def test_hostname_is_resolved_within_the_deadline(whois: WhoisServer, tmp_path: Path) -> None:
    # "localhost" may resolve to ::1 first, where nobody listens: the next address is tried
    result = enrich(
        addresses(3), host="localhost", port=whois.port, timeout=TIMEOUT, cache_file=None, ttl=TTL, now=T0
    )
    assert (result.result, result.answered) == ("ok", 3)


# --- failures: every one returns, with a warning ---------------------------------------------------------


def test_refused_port_fails_with_one_warning(tmp_path: Path) -> None:
    port = closed_port()
    started = time.monotonic()
    result = enrich(
        addresses(10),
        host="127.0.0.1",
        port=port,
        timeout=TIMEOUT,
        cache_file=tmp_path / "a.json",
        ttl=TTL,
        now=T0,
    )
    assert time.monotonic() - started < TIMEOUT  # at once, not after the timeout (how soon: the machine's)
    assert (result.result, result.looked_up, result.answered, dict(result.infos)) == ("failed", 10, 0, {})
    assert result.warning is not None and "connection refused" in result.warning
    assert "\n" not in result.warning
    assert not (tmp_path / "a.json").exists()  # nothing learnt, nothing written


def test_server_that_stopped_listening_refuses(whois: WhoisServer) -> None:
    whois.refuse()
    with pytest.raises(AsnLookupError, match="connection refused"):
        query_bulk(whois.host, whois.port, addresses(3), TIMEOUT)


@pytest.mark.parametrize("after_lines", [0, 3])
def test_slow_server_is_cut_off_at_the_timeout(whois: WhoisServer, tmp_path: Path, after_lines: int) -> None:
    whois.mode, whois.delay, whois.after_lines = "slow", 10.0, after_lines
    timeout = 1.0

    started = time.monotonic()
    result = run(whois, addresses(20), tmp_path / "asn.json", timeout=timeout)
    elapsed = time.monotonic() - started

    # cut off at the timeout, long before the server's 10 s (the margin is for a loaded machine)
    assert timeout <= elapsed < timeout + 5
    assert result.warning is not None and "\n" not in result.warning
    if after_lines == 0:  # the banner only
        assert (result.result, result.answered) == ("failed", 0)
        assert "timed out after 1 s" in result.warning
    else:  # what came before the stall is kept, and cached
        assert (result.result, result.answered) == ("partial", 3)
        assert "answered 3 of 20" in result.warning
        assert len(load_cache(tmp_path / "asn.json")[0]) == 3


def test_slow_server_within_the_timeout_is_fine(whois: WhoisServer) -> None:
    whois.mode, whois.delay = "slow", 0.3
    result = enrich(
        addresses(5), host=whois.host, port=whois.port, timeout=3.0, cache_file=None, ttl=TTL, now=T0
    )
    assert (result.result, result.answered) == ("ok", 5)


def test_garbled_answer_fails_with_a_warning(whois: WhoisServer, tmp_path: Path) -> None:
    whois.mode = "garbled"
    result = run(whois, addresses(20), tmp_path / "asn.json")
    assert (result.result, result.answered, dict(result.infos)) == ("failed", 0, {})
    assert result.warning is not None and "no usable line" in result.warning
    assert len(whois.connections) == 1


def test_junk_mixed_in_is_skipped_and_the_rest_used(whois: WhoisServer) -> None:
    whois.junk_every = 3
    result = enrich(
        addresses(30), host=whois.host, port=whois.port, timeout=TIMEOUT, cache_file=None, ttl=TTL, now=T0
    )
    assert (result.result, result.answered, result.warning) == ("ok", 30, None)


def test_close_at_once_fails(whois: WhoisServer, tmp_path: Path) -> None:
    whois.mode, whois.close_after = "close_early", 0
    result = run(whois, addresses(20), tmp_path / "asn.json")
    assert (result.result, result.answered) == ("failed", 0)
    assert result.warning is not None and "closed the connection without an answer" in result.warning


def test_close_after_k_lines_is_partial_and_the_rest_is_asked_next_run(
    whois: WhoisServer, tmp_path: Path
) -> None:
    cache = tmp_path / "asn.json"
    addrs = addresses(20)
    whois.mode, whois.close_after = "close_early", 5

    first = run(whois, addrs, cache)
    whois.mode = "normal"
    second = run(whois, addrs, cache, now=T0 + timedelta(minutes=5))

    assert (first.result, first.answered, len(first.infos)) == ("partial", 5, 5)
    assert first.warning is not None and "answered 5 of 20" in first.warning
    assert set(first.infos) == set(addrs[:5])  # asked in the caller's order: the first ones came back
    assert whois.connections[1].queries == [a.compressed for a in addrs[5:]]
    assert (second.result, second.hits, second.looked_up) == ("ok", 5, 15)


def test_no_time_left_opens_no_connection(whois: WhoisServer) -> None:
    result = run(whois, addresses(3), None, timeout=0)
    assert (result.result, result.looked_up, result.answered) == ("failed", 3, 0)
    assert result.warning is not None and "no time left" in result.warning
    assert not whois.connections


def test_query_bulk_ignores_lines_for_addresses_not_asked(whois: WhoisServer) -> None:
    asked = addresses(3)
    whois.extra = ["192.0.2.99", "2001:db8::99"]
    infos = query_bulk(whois.host, whois.port, asked, TIMEOUT)
    assert set(infos) == set(asked)
    assert ip("192.0.2.99") not in infos and ip("2001:db8::99") not in infos
    assert query_bulk(whois.host, whois.port, [], TIMEOUT) == {}
    assert len(whois.connections) == 1  # nothing to ask: no connection


# --- cache file ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [b"{not json", b'{"version": 1, "entries": [1, 2]}', b"\xff\xfe\x00garbage", b"[" * 100_000, b""],
)
def test_corrupt_cache_is_ignored_with_one_warning_and_rewritten(
    whois: WhoisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    cache = tmp_path / "asn.json"
    cache.write_bytes(content)
    addrs = addresses(10)

    result = run(whois, addrs, cache)

    assert (result.result, result.answered) == ("ok", 10)
    warnings = warnings_of(caplog)
    assert len(warnings) == 1 and str(cache) in warnings[0] and "ignored" in warnings[0]
    entries, problem = load_cache(cache)
    assert problem is None and set(entries) == keys(addrs)
    caplog.clear()
    assert run(whois, addrs, cache, now=T0 + timedelta(hours=1)).result == "skipped"
    assert not warnings_of(caplog)


def test_corrupt_cache_is_rewritten_even_with_nothing_to_look_up(
    whois: WhoisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "asn.json"
    cache.write_text("[]")
    run(whois, [], cache)
    assert len(warnings_of(caplog)) == 1
    assert load_cache(cache) == ({}, None)


def test_written_atomically_with_no_temp_file_left(whois: WhoisServer, tmp_path: Path) -> None:
    cache = tmp_path / "asn.json"
    run(whois, addresses(10), cache)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["asn.json"]
    assert cache.stat().st_mode & 0o777 == 0o644
    doc = json.loads(cache.read_text())
    assert doc["version"] == 1 and doc["entries"]["198.18.0.0"]["looked_up"] == "2026-12-01T09:00:00Z"


def test_missing_cache_directory_is_created(whois: WhoisServer, tmp_path: Path) -> None:
    cache = tmp_path / "var" / "cache" / "reconcile" / "asn.json"
    assert run(whois, addresses(3), cache).result == "ok"
    assert set(load_cache(cache)[0]) == keys(addresses(3))


def test_cache_that_cannot_be_saved_is_one_warning_not_fatal(
    whois: WhoisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")

    result = run(whois, addresses(3), blocker / "asn.json")

    assert (result.result, result.answered) == ("ok", 3)
    warnings = warnings_of(caplog)
    assert len(warnings) == 1 and "not saved" in warnings[0] and str(blocker) in warnings[0]


def test_entries_older_than_ttl_are_refreshed(whois: WhoisServer, tmp_path: Path) -> None:
    cache = tmp_path / "asn.json"
    old, young = addresses(5), addresses(5, start=5)
    run(whois, old, cache, now=T0)
    run(whois, young, cache, now=T0 + timedelta(days=3))

    almost = run(whois, old + young, cache, now=T0 + TTL - timedelta(seconds=1))
    expired = run(whois, old + young, cache, now=T0 + TTL)

    assert (almost.result, almost.hits) == ("skipped", 10)
    assert (expired.result, expired.hits, expired.looked_up) == ("ok", 5, 5)
    assert whois.connections[-1].queries == [a.compressed for a in old]
    refreshed = load_cache(cache)[0]
    assert {refreshed[a.compressed].looked_up for a in old} == {T0 + TTL}


def test_entry_from_the_future_is_refreshed(whois: WhoisServer, tmp_path: Path) -> None:
    cache = tmp_path / "asn.json"
    run(whois, addresses(2), cache, now=T0 + timedelta(days=1))
    again = run(whois, addresses(2), cache, now=T0)  # the clock went back
    assert (again.result, again.looked_up) == ("ok", 2)


def test_cache_is_bounded_oldest_out_first(whois: WhoisServer, tmp_path: Path) -> None:
    cache = tmp_path / "asn.json"
    batches = [addresses(2, start=2 * i) for i in range(4)]
    for hour, batch in enumerate(batches):
        run(whois, batch, cache, now=T0 + timedelta(hours=hour), max_entries=5)

    kept = load_cache(cache)[0]

    assert len(kept) == 5
    assert set(kept) == keys([batches[1][1], *batches[2], *batches[3]])
    # the evicted ones are looked up again, the kept ones are not
    again = run(whois, batches[0] + batches[3], cache, now=T0 + timedelta(hours=5), max_entries=5)
    assert (again.hits, again.looked_up) == (2, 2)
