"""ASN enrichment through the installed command (issue 10, DESIGN §10): a real fail2ban, the emulator and
the local bulk-whois server on 127.0.0.1. The lookup never delays a ban past its timeout, never changes
the exit code, and never causes a write of its own.
"""

from __future__ import annotations

import ipaddress
import json
import time
from typing import Any

import pytest

from reconcile.core.notes import MAX_NOTES, parse_note
from tests.support.cf_emulator import ZONE_ID
from tests.support.harness import Harness
from tests.support.whois_server import Answer, WhoisServer

pytestmark = [pytest.mark.fail2ban]

TAG = "Blocked by fail2ban"
ADDRESSES = [str(ipaddress.IPv4Address("45.10.0.0") + i) for i in range(40)]


def enrich_config(h: Harness, whois: WhoisServer, **extra: Any) -> None:
    h.config(
        cloudflare={"max_requests_per_run": 2000},
        enrich={
            "asn": True,
            "whois_server": whois.server,
            "cache_file": str(h.workdir / "cache" / "asn.json"),
            **extra,
        },
    )


def notes_by_ip(h: Harness) -> dict[str, Any]:
    found = {}
    for value, rule in h.rules().items():
        note = parse_note(rule["notes"], TAG)
        assert note is not None and len(rule["notes"]) <= MAX_NOTES
        found[value] = note
    return found


@pytest.mark.slow
def test_one_connection_per_run_and_only_new_addresses(harness: Harness, whois: WhoisServer) -> None:
    first = [str(ipaddress.IPv4Address("45.20.0.0") + i) for i in range(1000)]
    harness.f2b.ban("sshd", *first)
    enrich_config(harness, whois)
    started = time.monotonic()
    result = harness.run(timeout=300)
    assert result.returncode == 0, result.stderr
    print(f"1,000 new addresses: run took {time.monotonic() - started:.1f} s")
    assert len(whois.connections) == 1
    asked = whois.connections[0].queries
    assert sorted(asked) == sorted(first) and len(set(asked)) == len(asked)
    notes = notes_by_ip(harness)
    assert set(notes) == set(first)
    assert all(n.asn is not None and n.asn.startswith("AS") for n in notes.values())

    new = [str(ipaddress.IPv4Address("45.21.0.0") + i) for i in range(50)]
    harness.f2b.ban("sshd", *new)
    assert harness.run().returncode == 0
    assert len(whois.connections) == 2 and sorted(whois.connections[1].queries) == sorted(new)

    harness.cf.clear_log()
    assert harness.run().returncode == 0
    assert len(whois.connections) == 2, "nothing new to write, yet a lookup was made"
    assert harness.cf.writes() == []


@pytest.mark.parametrize("fault", ["refused", "slow", "garbled", "closed"])
def test_a_failed_lookup_still_writes_every_rule_without_asn(
    harness: Harness, whois: WhoisServer, fault: str
) -> None:
    harness.f2b.ban("sshd", *ADDRESSES)
    enrich_config(harness, whois, timeout=2)
    if fault == "refused":
        whois.refuse()
    elif fault == "slow":
        whois.mode, whois.delay = "slow", 120.0
    elif fault == "garbled":
        whois.mode = "garbled"
    else:
        whois.mode, whois.close_after = "close_early", 0
    started = time.monotonic()
    result = harness.run()
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("ASN lookup") == 1, result.stderr
    notes = notes_by_ip(harness)
    assert set(notes) == set(ADDRESSES) and all(n.asn is None for n in notes.values())
    # A run that waited for the slow server would take 120 s; one that kept to the 2 s lookup timeout
    # takes 2 s plus the run, which a loaded machine can stretch to several seconds.
    assert took < 60, f"the run took {took:.1f} s with a 2 s lookup timeout"


def test_turning_enrichment_on_rewrites_nothing(harness: Harness, whois: WhoisServer) -> None:
    harness.f2b.ban("sshd", *ADDRESSES)
    assert harness.run().returncode == 0
    enrich_config(harness, whois)
    harness.cf.clear_log()
    result = harness.run()
    assert result.returncode == 0, result.stderr
    assert harness.cf.writes() == [] and whois.connections == []


def test_a_legacy_notes_asn_is_carried_over_without_a_lookup(harness: Harness) -> None:
    ip = ADDRESSES[0]
    harness.cf.add_rule(
        "zone", ZONE_ID, "ip", ip, notes="Blocked by fail2ban on 11/21/26 14:03:07 (ASN: AS13335)"
    )
    harness.f2b.ban("sshd", ip)
    result = harness.run()
    assert result.returncode == 0, result.stderr
    note = notes_by_ip(harness)[ip]
    assert note.asn == "AS13335" and note.hosts == ("web1",)


def test_long_as_names_and_the_report(harness: Harness, whois: WhoisServer) -> None:
    long_name = "EXAMPLE-AS " + "Very Long Hosting and Colocation Services International " * 8 + "B.V., NL"
    for ip in ADDRESSES[:5]:
        whois.table[ip] = Answer(64496, "NL", "ripencc", "2020-02-29", long_name, "45.10.0.0/24")
    harness.f2b.ban("sshd", *ADDRESSES[:5], "45.11.0.1")
    enrich_config(harness, whois)
    report = harness.run("--report", "--format", "json")
    assert report.returncode == 0, report.stderr
    doc = json.loads(report.stdout)
    top = doc["top_networks"][0]
    assert (top["asn"], top["banned"]) == ("AS64496", 5) and top["name"].startswith("EXAMPLE-AS")
    assert harness.run().returncode == 0
    notes = notes_by_ip(harness)
    assert {notes[ip].asn for ip in ADDRESSES[:5]} == {"AS64496"} and notes[ADDRESSES[0]].cc == "NL"
    table = harness.run("--report")
    assert "top networks" in table.stdout and "AS64496" in table.stdout


def test_a_corrupt_cache_is_ignored_and_rewritten(harness: Harness, whois: WhoisServer) -> None:
    cache = harness.workdir / "cache" / "asn.json"
    cache.parent.mkdir()
    cache.write_text("{ not json")
    harness.f2b.ban("sshd", *ADDRESSES[:3])
    enrich_config(harness, whois)
    result = harness.run()
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("cache") >= 1
    assert json.loads(cache.read_text())  # rewritten as a valid cache
    assert all(n.asn for n in notes_by_ip(harness).values())
