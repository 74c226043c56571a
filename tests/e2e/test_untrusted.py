"""Other writers' data stays theirs (issue 16, DESIGN §4, §7, §9, §12), through the installed command with a
real fail2ban-server, the emulator and the whois server: no request without the tag, no control character
on the terminal, no cache others could plant, no write from a read-only command, no operator's rule
adopted, WAF rules matched as expressions, an address read as a ban is read, a zone listed twice planned
once, the networks named in a steady-state report.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconcile.core.notes import MAX_NOTES, Lease, format_note
from tests.support.cf_emulator import ACCOUNT_ID, ZONE_ID, CloudflareEmulator, checked_emulator
from tests.support.f2b_server import F2B
from tests.support.harness import Harness, make_harness
from tests.support.whois_server import Answer, WhoisServer

pytestmark = [pytest.mark.fail2ban]

TAG = "Blocked by fail2ban"
HOSTILE = "web2\x1b[2J\x1b[31mEVIL\x1b]0;PWNED\x07\x9b31m\u202eevil\u2066\u200f\x7f"
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def soon(hours: float) -> datetime:
    return datetime.now(UTC) + timedelta(hours=hours)


def written_notes(h: Harness) -> list[str]:
    """Every notes or comment value the run sent (rules: POST and PATCH; list items: bulk POST)."""
    found = []
    for record in h.cf.writes():
        body = record.body
        if isinstance(body, dict) and "notes" in body:
            found.append(body["notes"])
        if isinstance(body, list):
            found += [item.get("comment") for item in body if isinstance(item, dict)]
    return found


def shared_note(length: int, until: datetime) -> str:
    """Another host's note of exactly `length` characters (empty jail list) whose host set holds web1."""
    for many in range(12):
        hosts = ["web1", *(f"h{i:02d}".ljust(50, "x") for i in range(many)), "z"]
        base = format_note(TAG, Lease((), tuple(hosts), until - timedelta(hours=2), until))
        assert base is not None
        if 0 <= length - len(base) <= 60:
            hosts[-1] = "z" * (1 + length - len(base))
            note = format_note(TAG, Lease((), tuple(hosts), until - timedelta(hours=2), until))
            assert note is not None and len(note) == length
            return note
    raise AssertionError(length)


# --------------------------------------------------------------------------- 1. no write without the tag


def test_no_request_carries_notes_without_the_tag(harness: Harness) -> None:
    """499- and 600-character notes of other hosts, renewed (this host's ban outlasts the lease) and left
    (this host no longer bans it): nothing that does not fit is sent, the rules stay as they are."""
    h = harness
    h.f2b.ban("sshd", "45.51.0.1")  # banned here for the jail's bantime: longer than the lease below
    renew = shared_note(499, soon(0.05))
    h.cf.add_rule("zone", ZONE_ID, "ip", "45.51.0.1", notes=renew)
    crowd = ",".join(["web1", *(f"h{i:02d}".ljust(50, "x") for i in range(11))])
    leave = f"{TAG} jail= host={crowd} since={stamp(soon(-1))} until={stamp(soon(5))}"
    assert len(leave) >= 600
    h.cf.add_rule("zone", ZONE_ID, "ip", "45.51.0.2", notes=leave)
    h.config()
    result = h.run()
    assert result.returncode == 0, result.stderr
    assert all(n.startswith(TAG) and len(n) <= MAX_NOTES for n in written_notes(h)), written_notes(h)
    assert h.rules()["45.51.0.1"]["notes"] == renew and h.rules()["45.51.0.2"]["notes"] == leave
    report = h.run("--report", "--format", "json")
    rows = {c["ip"]: c for c in json.loads(report.stdout)["changes"]}
    assert rows["45.51.0.1"]["action"] == "keep" and "does not fit" in rows["45.51.0.1"]["reason"]
    assert rows["45.51.0.2"]["action"] == "keep" and "does not fit" in rows["45.51.0.2"]["reason"]


# --------------------------------------------------------------------------- 2. no escape code printed


def test_no_control_character_reaches_the_terminal(harness: Harness, whois: WhoisServer) -> None:
    """A note and a whois name full of control characters: no byte of them in stdout or stderr of a run,
    -v, --report (table), --explain and --check."""
    h = harness
    h.f2b.ban("sshd", "45.52.0.1", "45.52.0.2")
    h.f2b.ban("sshd", "evil\x1b[2J\u202e")  # fail2ban takes anything as an IP: a skip row, a -v line
    until = stamp(soon(5))
    h.cf.add_rule(
        "zone", ZONE_ID, "ip", "45.52.0.1", notes=f"{TAG} jail=ssh\x1b[1m host={HOSTILE} until={until}"
    )
    h.cf.add_rule("zone", ZONE_ID, "ip", "45.52.0.9", notes=f"operator \x1b]0;PWNED\x07 \u202e {HOSTILE}")
    whois.table["45.52.0.2"] = Answer(
        64500, "DE", "ripencc", "2020-01-01", "EVIL\x9b31m\u202eNAME\x1b[2J", None
    )
    cache = h.workdir / "cache" / "asn.json"
    h.config(enrich={"asn": True, "whois_server": whois.server, "cache_file": str(cache)})
    outputs = [h.run(), h.run("-v"), h.run("--report"), h.run("--explain", "45.52.0.1")]
    outputs += [h.run("--explain", "45.52.0.9"), h.run("--check")]
    # The whois name went into the cache as it was answered (cleaned): a cache edited by hand is read back
    cached = json.loads(cache.read_text())
    cached["entries"]["45.52.0.2"]["name"] = "PLANTED\x1b[2J\u202e"
    cache.write_text(json.dumps(cached))
    outputs.append(h.run("--report"))
    for result in outputs:
        assert result.returncode in (0, 1), result.stderr
        assert not UNSAFE.search(result.stdout + result.stderr), (result.args, result.stdout, result.stderr)
    joined = "".join(r.stdout + r.stderr for r in outputs)
    assert "\\x1b[2J" in joined and "\\u202e" in joined  # shown, as escapes
    assert "EVIL" in outputs[2].stdout and "PLANTED" in outputs[-1].stdout


def test_a_long_host_set_is_cut_in_the_log_line(harness: Harness) -> None:
    h = harness
    h.f2b.ban("sshd", "45.53.0.1")
    hosts = ",".join(f"w{i}" for i in range(3000))
    h.cf.add_rule(
        "zone", ZONE_ID, "ip", "45.53.0.1", notes=f"{TAG} jail=sshd host={hosts} until={stamp(soon(9))}"
    )
    h.config()
    result = h.run("--report")
    assert result.returncode == 0, result.stderr
    assert "w0,w1," in result.stdout and "… +2,9" in result.stdout
    assert max(len(line) for line in (result.stdout + result.stderr).splitlines()) < 400


# --------------------------------------------------------------------------- 3. a planted cache


def test_a_cache_in_a_directory_others_can_write_is_refused(harness: Harness, whois: WhoisServer) -> None:
    h = harness
    shared = h.workdir / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    cache = shared / "asn.json"
    planted = {
        "version": 1,
        "entries": {
            "45.54.0.1": {
                "asn": "AS666",
                "cc": "XX",
                "name": "PLANTED\x1b[2J",
                "prefix": None,
                "looked_up": stamp(datetime.now(UTC)),
            }
        },
    }
    cache.write_text(json.dumps(planted))
    before = cache.read_bytes()
    h.f2b.ban("sshd", "45.54.0.1")
    whois.refuse()  # what the note gets can only come from the cache
    h.config(enrich={"asn": True, "whois_server": whois.server, "cache_file": str(cache)})
    result = h.run()
    assert result.returncode == 0, result.stderr
    assert "which group or others can write" in result.stderr
    notes = h.rules()["45.54.0.1"]["notes"]
    assert "AS666" not in notes and "cc=XX" not in notes
    assert cache.read_bytes() == before  # not rewritten either
    report = h.run("--report")
    assert "PLANTED" not in report.stdout + report.stderr
    check = h.run("--check", "--format", "json")
    found = {c["name"]: c for c in json.loads(check.stdout)["checks"]}
    assert check.returncode == 1 and found["ASN cache path"]["status"] == "fail"
    assert "group or others can write" in found["ASN cache path"]["found"]


# --------------------------------------------------------------------------- 4. read-only commands


def test_read_only_commands_write_nothing_with_the_list_backend(harness: Harness, whois: WhoisServer) -> None:
    """--report (also with enrichment), --check and --explain against an account without the list: no
    request writes, no list is made, no cache file appears."""
    h = harness
    h.f2b.ban("sshd", "45.55.0.1")
    cache = h.workdir / "cache" / "asn.json"
    h.list_config(enrich={"asn": True, "whois_server": whois.server, "cache_file": str(cache)})
    results = [h.run("--report"), h.run("--check"), h.run("--explain", "45.55.0.1")]
    assert results[0].returncode == 0, results[0].stderr
    assert h.cf.writes() == [] and h.cf.lists(ACCOUNT_ID) == []
    assert not cache.exists()
    assert "45.55.0.1" in results[0].stdout  # the report planned against an empty list


# --------------------------------------------------------------------------- 5. legacy adoption narrows


def test_operator_notes_survive_and_the_stock_action_note_is_adopted(harness: Harness) -> None:
    h = harness
    for value, notes in (
        ("45.56.0.1", "fail2ban office"),
        ("45.56.0.2", "Fail2Ban maintenance"),
        ("45.56.0.3", "Fail2Ban sshd"),  # a jail this fail2ban has
    ):
        h.cf.add_rule("zone", ZONE_ID, "ip", value, notes=notes)
    h.config()
    result = h.run()
    assert result.returncode == 0, result.stderr
    assert set(h.rules()) == {"45.56.0.1", "45.56.0.2"}
    # The list backend: the older scripts never wrote list items, so no untagged item is managed.
    listed = h.cf.create_list("fail2ban", account_id=ACCOUNT_ID)
    for ip, comment in (
        ("45.56.0.1", "fail2ban office"),
        ("45.56.0.3", "Fail2Ban sshd"),
        ("45.56.0.4", "FAIL2BAN"),
    ):
        h.cf.add_item(listed["id"], ip, comment, account_id=ACCOUNT_ID)
    h.cf.seed_entrypoint(ZONE_ID, [{"action": "block", "expression": "(ip.src in $fail2ban)"}])
    h.list_config()
    result = h.run()
    assert result.returncode == 0, result.stderr
    assert set(h.items()) == {"45.56.0.1", "45.56.0.3", "45.56.0.4"}


# --------------------------------------------------------------------------- 6. WAF expressions

ZONES = [f"{i:x}" * 32 for i in range(1, 9)]
# zone -> (expression, action, enforces with mode managed_challenge)
EXPRESSIONS = {
    ZONES[0]: ("not ip.src in $fail2ban", "managed_challenge", False),
    ZONES[1]: ('ip.src in $fail2ban and http.host eq "one.host"', "managed_challenge", False),
    ZONES[2]: ('http.host eq "ip.src in $fail2ban"', "managed_challenge", False),
    ZONES[3]: ("(ip.src in $fail2ban)", "block", True),  # block is stricter than a challenge
    ZONES[4]: ('(http.host eq "x") or (ip.src in $fail2ban)', "managed_challenge", True),
    ZONES[5]: ("(ip.src in $fail2ban)", "managed_challenge", True),
    ZONES[6]: ("(ip.src in $fail2ban)", "js_challenge", False),  # a weaker challenge than asked for
}


@pytest.fixture
def many_zones(f2b: F2B, tmp_path: Path) -> Iterator[Harness]:
    with checked_emulator(zones=ZONES) as cf:
        yield from make_harness(f2b, cf, tmp_path)


def test_waf_rules_are_matched_as_expressions(many_zones: Harness) -> None:
    h = many_zones
    cf: CloudflareEmulator = h.cf
    for zone, (expression, action, _) in EXPRESSIONS.items():
        cf.seed_entrypoint(
            zone, [{"action": action, "expression": expression, "description": f"rule {zone[:4]}"}]
        )
    h.list_config(cloudflare={"zone_ids": list(EXPRESSIONS), "mode": "managed_challenge"})
    check = h.run("--check", "--format", "json")
    wafs = [c for c in json.loads(check.stdout)["checks"] if c["name"] == "WAF rule"]
    by_zone = {zone: next(c for c in wafs if zone in c["found"]) for zone in EXPRESSIONS}
    for zone, (expression, _, enforces) in EXPRESSIONS.items():
        assert (by_zone[zone]["status"] == "ok") is enforces, (expression, by_zone[zone])
    for zone in ZONES[:2]:
        assert "narrows or negates" in by_zone[zone]["found"] and f"rule {zone[:4]}" in by_zone[zone]["found"]
    assert "no WAF custom rule enforces the list" in by_zone[ZONES[2]]["found"]  # the string names nothing
    assert "not managed_challenge or block" in by_zone[ZONES[6]]["found"]
    h.f2b.ban("sshd", "45.57.0.1")
    run = h.run()
    assert run.returncode == 1  # four zones do not enforce the list; the run names them, not the others
    for zone, (_, _, enforces) in EXPRESSIONS.items():
        assert (f"zone {zone}" in run.stderr) is not enforces


# --------------------------------------------------------------------------- 7. --explain reads as a run


def test_explain_reads_a_mapped_address_as_its_ipv4(harness: Harness) -> None:
    h = harness
    h.f2b.ban("sshd", "45.51.0.1")
    h.config()
    assert h.run().returncode == 0
    result = h.run("--explain", "::ffff:45.51.0.1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("45.51.0.1\n") and "IPv4-mapped" in result.stdout
    assert (
        "jail sshd" in result.stdout
        and "rule " in result.stdout
        and "no Cloudflare rule" not in result.stdout
    )
    scoped = h.run("--explain", "fe80::1%eth0")
    assert scoped.returncode == 2 and "scoped" in scoped.stderr
    long = h.run("--explain", "1" * 100_000)
    assert long.returncode == 2 and len(long.stderr) < 1000 and "100,000 characters" in long.stderr


# --------------------------------------------------------------------------- 8. smaller defects


def test_a_zone_listed_twice_is_planned_once(harness: Harness) -> None:
    h = harness
    ended = f"{TAG} jail=sshd host=web1 since={stamp(soon(-3))} until={stamp(soon(-1))}"
    h.cf.add_rule("zone", ZONE_ID, "ip", "45.58.0.1", notes=ended)
    h.config(cloudflare={"zone_ids": [ZONE_ID, ZONE_ID]})
    result = h.run()
    assert result.returncode == 0, result.stderr
    deletes = [r for r in h.cf.writes() if r.method == "DELETE"]
    assert [r.status for r in deletes] == [200] and "1 expired" in result.stderr


def test_steady_state_report_names_the_networks(harness: Harness, whois: WhoisServer) -> None:
    h = harness
    h.f2b.ban("sshd", "45.59.0.1", "45.59.0.2")
    whois.table["45.59.0.1"] = whois.table["45.59.0.2"] = Answer(
        64501, "DE", "ripencc", "2020-01-01", "EXAMPLE-NET", None
    )
    cache = h.workdir / "cache" / "asn.json"
    h.config(enrich={"asn": True, "whois_server": whois.server, "cache_file": str(cache)})
    assert h.run().returncode == 0
    whois.refuse()  # the names must come from the cache: nothing is written, so nothing is asked
    report = h.run("--report")
    assert report.returncode == 0, report.stderr
    top = report.stdout.split("top networks:")[1]
    assert re.search(r"AS64501\s+EXAMPLE-NET\s+2", top), report.stdout
    assert "warning" not in report.stderr
