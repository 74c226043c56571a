"""Cloudflare's shipped ranges, the per-ban check and the misconfiguration warning (DESIGN §11)."""

from __future__ import annotations

import ipaddress
import re

import pytest

from reconcile.core import ranges
from reconcile.core.ranges import differences, is_cloudflare, is_loopback, misconfiguration_warning


def ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(value)


def test_the_shipped_list_has_15_ipv4_and_7_ipv6_ranges_and_a_date():
    assert len(ranges.IPV4) == 15 and len(set(ranges.IPV4)) == 15
    assert len(ranges.IPV6) == 7 and len(set(ranges.IPV6)) == 7
    assert all(net.version == 4 for net in ranges.IPV4) and all(net.version == 6 for net in ranges.IPV6)
    assert re.fullmatch(r"20\d\d-\d\d(-\d\d)?", ranges.PUBLISHED)


@pytest.mark.parametrize(
    "value",
    [
        "104.16.0.5",
        "172.64.3.3",
        "2606:4700::1111",
        "173.245.48.0",
        "131.0.75.255",
        "2a06:98c7:ffff::1",
        "104.27.255.255",
        "::ffff:104.16.0.5",
    ],
)
def test_cloudflare_addresses(value: str):
    assert is_cloudflare(ip(value))


@pytest.mark.parametrize(
    "value",
    [
        "8.8.8.8",
        "1.1.1.1",
        "173.245.47.255",
        "131.0.76.0",
        "104.28.0.0",
        "2a06:98c8::1",
        "2001:4860::8888",
        "127.0.0.1",
        "::1",
        "::ffff:8.8.8.8",
    ],
)
def test_other_addresses(value: str):
    assert not is_cloudflare(ip(value))


def test_the_interval_lookup_agrees_with_ipaddress_at_every_range_edge():
    for net in ranges.ALL:
        first, last = net.network_address, net.broadcast_address
        assert is_cloudflare(first) and is_cloudflare(last)
        for outside in (first - 1, last + 1):
            expected = any(outside in other for other in ranges.ALL if other.version == net.version)
            assert is_cloudflare(outside) == expected


def test_loopback_includes_ipv6_and_mapped_forms():
    assert is_loopback(ip("127.0.0.1")) and is_loopback(ip("127.1.2.3")) and is_loopback(ip("::1"))
    assert is_loopback(ip("::ffff:127.0.0.1"))
    assert not is_loopback(ip("104.16.0.5"))


def test_warning_names_the_jails_an_example_and_the_nginx_and_apache_fix():
    text = misconfiguration_warning({"nginx-http-auth": "104.16.0.5", "apache-auth": "172.64.3.3"})
    assert "\n" not in text  # one line: journald and cron mail keep it whole
    assert "apache-auth, nginx-http-auth" in text
    assert "e.g. 172.64.3.3 in apache-auth" in text
    assert "real_ip_header CF-Connecting-IP;" in text
    for net in (*ranges.IPV4_TEXT, *ranges.IPV6_TEXT):
        assert f"set_real_ip_from {net};" in text
    assert "RemoteIPHeader CF-Connecting-IP" in text and "RemoteIPTrustedProxy 173.245.48.0/20" in text
    assert "127.0.0.1" not in text  # no tunnel here: its fix would only confuse


def test_loopback_bans_get_the_tunnel_fix():
    text = misconfiguration_warning({"sshd": "127.0.0.1"})
    assert "jail sshd;" in text and "e.g. 127.0.0.1 in sshd" in text
    assert (
        "Tunnel" in text
        and "set_real_ip_from 127.0.0.1;" in text
        and "RemoteIPTrustedProxy 127.0.0.1" in text
    )
    assert "set_real_ip_from 104.16.0.0/13;" not in text


def test_both_kinds_give_both_fixes():
    text = misconfiguration_warning({"nginx": "2606:4700::1111", "sshd": "127.0.0.1"})
    assert "set_real_ip_from 2606:4700::/32;" in text and "set_real_ip_from 127.0.0.1;" in text


def test_warning_needs_a_jail():
    with pytest.raises(ValueError):
        misconfiguration_warning({})


def test_no_differences_when_cloudflare_publishes_the_same_ranges_in_any_order():
    assert differences(list(reversed(ranges.IPV4_TEXT)), [f" {n}\n" for n in ranges.IPV6_TEXT]) == []


def test_differences_name_new_and_withdrawn_ranges():
    v4 = [n for n in ranges.IPV4_TEXT if n != "131.0.72.0/22"] + ["198.51.100.0/24"]
    found = differences(v4, list(ranges.IPV6_TEXT))
    assert len(found) == 2
    assert any("198.51.100.0/24" in line and "not in the ranges shipped" in line for line in found)
    assert any("131.0.72.0/22" in line and "no longer publishes" in line for line in found)


def test_an_unparseable_published_entry_is_a_difference():
    found = differences([*ranges.IPV4_TEXT, "bogus"], list(ranges.IPV6_TEXT))
    assert found == ["Cloudflare lists 'bogus', which is not a network"]
