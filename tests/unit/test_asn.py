"""reconcile.asn: the bulk answer parser on real Team Cymru lines, the cache, and the one connection
against a local whois server (tests/support/whois_server.py) in each of its moods."""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from reconcile.core.model import IPAddress
from reconcile.enrich.asn import enrich
from reconcile.enrich.cache import CacheEntry, cache_document, parse_cache
from reconcile.enrich.cymru import MAX_NAME, AsnInfo, format_query, parse_bulk

T0 = datetime(2026, 12, 1, 9, 0, 0, tzinfo=UTC)
TTL = timedelta(days=7)


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


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# --- parser: real answers ---------------------------------------------------------------------------------

# whois.cymru.com's answer to a bulk verbose query, as the ipwhois project recorded it (2017), IPv6
# addresses padded to 40 columns, an NA line, empty allocation dates, commas inside names.
REAL_ANSWER = """\
Bulk mode; whois.cymru.com [2017-07-30 23:02:21 +0000]
15169   | 74.125.225.229   | 74.125.225.0/24     | US | arin     | 2007-03-13 | GOOGLE - Google Inc., US
15169   | 2001:4860:4860::8888                     | 2001:4860::/32      | US | arin     | 2005-03-14 | GOOGLE - Google Inc., US
2856    | 62.239.237.1     | 62.239.0.0/16       | GB | ripencc  | 2001-01-02 | BT-UK-AS BTnet UK Regional network, GB
2856    | 2a00:2381:ffff::1                        | 2a00:2380::/25      | GB | ripencc  | 2007-08-29 | BT-UK-AS BTnet UK Regional network, GB
3786    | 210.107.73.73    | 210.107.0.0/17      | KR | apnic    |            | LGDACOM LG DACOM Corporation, KR
2497    | 2001:240:10c:1::ca20:9d1d                | 2001:240::/32       | JP | apnic    | 2000-03-08 | IIJ Internet Initiative Japan Inc., JP
19373   | 200.57.141.161   | 200.57.128.0/20     | MX | lacnic   | 2000-12-04 | Triara.com, S.A. de C.V., MX
NA      | 2801:10:c000::                           | NA                  | CO | lacnic   | 2013-10-29 | NA
12091   | 196.11.240.215   | 196.11.240.0/24     | ZA | afrinic  |            | MTNNS-1, ZA
37578   | 2001:43f8:7b0::                          | 2001:43f8:7b0::/48  | KE | afrinic  | 2013-03-22 | Tespok, KE
4730    | 133.1.2.5        | 133.1.0.0/16        | JP | apnic    |            | ODINS Osaka University, JP
4134    | 115.1.2.3        | 115.0.0.0/14        | KR | apnic    | 2008-07-01 | CHINANET-BACKBONE No.31,Jin-rong Street, CN
"""  # noqa: E501 (real lines, real padding)

# A 2023 answer with the unknown (private) addresses Cymru answers NA for, CC and date empty.
REAL_NA = """\
Bulk mode; whois.cymru.com [2023-07-19 04:06:45 +0000]
NA      | 10.0.0.1         | NA                  |    | other    |            | NA
12119   | 216.169.31.34    | 216.169.30.0/23     | US | arin     | 2017-06-27 | I3BROADBAND, US
15133   | 93.184.216.34    | 93.184.216.0/24     | US | ripencc  | 2008-06-02 | EDGECAST, US
"""

HEADER = "AS      | IP               | BGP Prefix          | CC | Registry | Allocated  | AS Name"


def test_parse_real_answer_ipv4_ipv6_and_multi_word_names() -> None:
    infos, skipped = parse_bulk(REAL_ANSWER)

    assert skipped == 0
    assert len(infos) == 12
    assert infos[ip("74.125.225.229")] == AsnInfo(
        "AS15169", "US", "GOOGLE - Google Inc., US", "74.125.225.0/24"
    )
    assert infos[ip("2001:4860:4860::8888")] == AsnInfo(
        "AS15169", "US", "GOOGLE - Google Inc., US", "2001:4860::/32"
    )
    assert infos[ip("2a00:2381:ffff::1")].prefix == "2a00:2380::/25"
    assert infos[ip("2001:240:10c:1::ca20:9d1d")].asn == "AS2497"
    assert infos[ip("200.57.141.161")].name == "Triara.com, S.A. de C.V., MX"
    assert infos[ip("115.1.2.3")].name == "CHINANET-BACKBONE No.31,Jin-rong Street, CN"
    assert infos[ip("210.107.73.73")] == AsnInfo(
        "AS3786", "KR", "LGDACOM LG DACOM Corporation, KR", "210.107.0.0/17"
    )


def test_parse_na_means_unknown_field_by_field() -> None:
    infos, skipped = parse_bulk(REAL_ANSWER + REAL_NA)

    assert skipped == 0
    assert infos[ip("10.0.0.1")] == AsnInfo(None, None, None, None)
    # no AS but a registry country: the parser keeps what is known (the notes never write cc= alone)
    assert infos[ip("2801:10:c000::")] == AsnInfo(None, "CO", None, None)
    assert infos[ip("216.169.31.34")] == AsnInfo("AS12119", "US", "I3BROADBAND, US", "216.169.30.0/23")


def test_parse_header_banner_and_blank_lines_by_content_not_position() -> None:
    line = "24940   | 88.198.1.1       | 88.198.0.0/16       | DE | ripencc  | 2004-04-07 | HETZNER-AS, DE"
    for text in (
        f"{line}\n",  # no banner at all
        f"Bulk mode; whois.cymru.com [2026-11-30 12:00:00 +0000]\n{HEADER}\n{line}\n",
        f"\n\nBulk mode; whois.cymru.com [2026-11-30 12:00:00 +0000]\n\n{line}\n{HEADER}\n",
        f"{HEADER}\r\n{line}\r\n",
    ):
        infos, skipped = parse_bulk(text)
        assert (infos, skipped) == (
            {ip("88.198.1.1"): AsnInfo("AS24940", "DE", "HETZNER-AS, DE", "88.198.0.0/16")},
            0,
        )


def test_parse_malformed_lines_are_skipped_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    good = "13335   | 1.1.1.1          | 1.1.1.0/24          | US | arin     | 2010-07-14 | CLOUDFLARENET, US"
    bad = [
        "Error: no ASN or IP match on line 3.",  # what Cymru says for a line that is no address
        "15169 | 8.8.8.8 | 8.8.8.0/24 | US | arin | 1992-12-01",  # six fields
        "AS15169 | 8.8.8.8 | 8.8.8.0/24 | US | arin | 1992-12-01 | GOOGLE, US",  # not a number
        "15169 | 8.8.8.300 | 8.8.8.0/24 | US | arin | 1992-12-01 | GOOGLE, US",  # not an address
        "15169 | 8.8.8.8 | 8.8.8.0/33 | US | arin | 1992-12-01 | GOOGLE, US",  # not a prefix
        "15169 | 8.8.8.8 | 8.8.8.0/24 | USA | arin | 1992-12-01 | GOOGLE, US",  # not a country code
        "0 | 8.8.8.8 | 8.8.8.0/24 | US | arin | 1992-12-01 | GOOGLE, US",  # AS 0 is no origin
        "99999999999 | 8.8.8.8 | 8.8.8.0/24 | US | arin | 1992-12-01 | GOOGLE, US",  # beyond 32 bits
        "<html><body>502 Bad Gateway</body></html>",
    ]
    caplog.set_level(logging.DEBUG, logger="reconcile.asn")

    infos, skipped = parse_bulk(
        "\n".join(["Bulk mode; whois.cymru.com [2026-11-30 12:00:00 +0000]", *bad, good])
    )

    assert infos == {ip("1.1.1.1"): AsnInfo("AS13335", "US", "CLOUDFLARENET, US", "1.1.1.0/24")}
    assert skipped == len(bad)
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG and "skipped" in r.getMessage()]
    assert len(debug) == len(bad)
    assert not warnings_of(caplog)


def test_parse_normalises_addresses_keeps_first_of_duplicates_and_cleans_names() -> None:
    long_name = "X" * (MAX_NAME + 50)
    text = "\n".join(
        [
            "64496 | 2001:DB8:0:0:0:0:0:1 | 2001:DB8::/32 | NL | ripencc | 2020-01-01 | FIRST, NL",
            "64497 | 2001:db8::1 | 2001:db8::/32 | NL | ripencc | 2020-01-01 | SECOND, NL",
            f"64498 | 192.0.2.1 | 192.0.2.0/24 | NL | ripencc | 2020-01-01 | {long_name}",
            "64499 | 192.0.2.2 | 192.0.2.0/24 | NL | ripencc | 2020-01-01 | A | pipe\tand tab",
        ]
    )
    infos, skipped = parse_bulk(text)

    assert skipped == 0
    assert infos[ip("2001:db8::1")] == AsnInfo("AS64496", "NL", "FIRST, NL", "2001:db8::/32")
    assert infos[ip("192.0.2.1")].name == "X" * MAX_NAME
    assert infos[ip("192.0.2.2")].name == "A | pipe and tab"


def test_format_query_is_bulk_verbose_one_address_a_line() -> None:
    assert (
        format_query([ip("192.0.2.1"), ip("2001:DB8::0:1")])
        == b"begin\nverbose\n192.0.2.1\n2001:db8::1\nend\n"
    )


# --- cache document ------------------------------------------------------------------------------------


def test_cache_document_round_trip_and_bound_oldest_out() -> None:
    entries = {
        f"192.0.2.{i}": CacheEntry(
            AsnInfo(f"AS{64500 + i}", "DE", f"NET-{i}, DE", None), T0 + timedelta(hours=i)
        )
        for i in range(10)
    }
    entries["2001:db8::1"] = CacheEntry(AsnInfo(None, None, None, None), T0 + timedelta(hours=20))

    doc = json.loads(json.dumps(cache_document(entries, max_entries=4)))
    back, invalid = parse_cache(doc)

    assert invalid == 0
    assert list(back) == ["192.0.2.7", "192.0.2.8", "192.0.2.9", "2001:db8::1"]
    assert back["192.0.2.9"] == entries["192.0.2.9"]
    assert back["2001:db8::1"] == entries["2001:db8::1"]


def test_parse_cache_drops_invalid_entries_and_rejects_non_caches() -> None:
    doc = {
        "version": 1,
        "entries": {
            "192.0.2.1": {
                "asn": "AS1",
                "cc": "DE",
                "name": "A",
                "prefix": None,
                "looked_up": "2026-12-01T09:00:00Z",
            },
            "not-an-ip": {"asn": "AS1", "looked_up": "2026-12-01T09:00:00Z"},
            "192.0.2.2": {"asn": "1", "looked_up": "2026-12-01T09:00:00Z"},
            "192.0.2.3": {"asn": "AS3", "cc": "DEU", "looked_up": "2026-12-01T09:00:00Z"},
            "192.0.2.4": {"asn": "AS4", "looked_up": "yesterday"},
            "192.0.2.5": ["AS5"],
        },
    }
    entries, invalid = parse_cache(doc)
    assert list(entries) == ["192.0.2.1"] and invalid == 5
    not_caches: list[object] = [[], {"version": 2, "entries": {}}, {"version": 1, "entries": []}, "x"]
    for not_cache in not_caches:
        with pytest.raises(ValueError):
            parse_cache(not_cache)


# --- one connection against the local server -----------------------------------------------------------


# --- failures: every one returns, with a warning ---------------------------------------------------------


# --- cache file ------------------------------------------------------------------------------------------


def test_name_resolution_counts_against_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    # getaddrinfo has no timeout: a hanging resolver must not hold the run beyond `timeout`
    release = threading.Event()
    calls: list[str] = []

    def hanging_getaddrinfo(host: str, *args: object, **kwargs: object) -> list[object]:
        calls.append(host)
        release.wait(10)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", hanging_getaddrinfo)
    try:
        started = time.monotonic()
        result = enrich(
            addresses(3), host="whois.example", port=43, timeout=0.5, cache_file=None, ttl=TTL, now=T0
        )
        elapsed = time.monotonic() - started
    finally:
        release.set()
    resolver = [t for t in threading.enumerate() if t.name == "asn-resolve"]
    for thread in resolver:
        thread.join(5)

    assert calls == ["whois.example"]
    assert 0.5 <= elapsed < 1.0
    assert result.result == "failed" and result.warning is not None
    assert "name resolution timed out" in result.warning
    assert not any(t.is_alive() for t in resolver)
