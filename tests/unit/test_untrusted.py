"""Other writers' data stays theirs (issue 16, DESIGN §4, §7, §9, §12), the pure parts: the sanitiser, note
fitting (no write without the tag), legacy adoption, the WAF expression matcher, an address read as a ban.
"""

from __future__ import annotations

import ipaddress
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconcile.cloudflare import waf
from reconcile.core.changes import Action, Membership, OwnerKind, Policy
from reconcile.core.merge import read_address
from reconcile.core.model import Ban, Rule, RuleListing, Scope, ScopeKind
from reconcile.core.notes import MAX_NOTES, Lease, NoteKind, format_note, parse_note
from reconcile.core.planner import make_plan
from reconcile.core.sanitize import cut, escape, escape_line, hosts_text
from reconcile.enrich import cache as cache_mod
from reconcile.enrich.cache import load_cache, save_cache
from reconcile.enrich.cymru import parse_line

TAG = "Blocked by fail2ban"
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)
ZONE = Scope(ScopeKind.ZONE, "023e105f4ecef8ad9ca31a8372d0c353")
POLICY = Policy(tag=TAG, host_id="web1", jails=frozenset({"sshd"}))
HOSTILE = "host=web2\x1b[2J\x1b[31mEVIL\x1b]0;PWNED\x07\x9b31m\u202eevil\u2066\u200f\x7f\u061c"
# Every character that must never reach a terminal raw (DESIGN §12).
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


# --------------------------------------------------------------------------------------------- sanitiser


def test_escape_writes_every_control_as_a_visible_escape() -> None:
    shown = escape(HOSTILE)
    assert not UNSAFE.search(shown)
    assert "\\x1b[2J" in shown and "\\x07" in shown and "\\x9b" in shown and "\\x7f" in shown
    assert "\\u202e" in shown and "\\u2066" in shown and "\\u200f" in shown and "\\u061c" in shown
    assert escape("tab\tand\nnewline stay, ümlauts too") == "tab\tand\nnewline stay, ümlauts too"
    assert escape_line("a\nb\tc") == "a\\x0ab\\x09c"


@given(st.text())
def test_escape_leaves_nothing_unsafe_and_safe_text_alone(text: str) -> None:
    shown = escape(text)
    assert not UNSAFE.search(shown)
    assert not UNSAFE.search(escape_line(text)) and "\n" not in escape_line(text)
    if not UNSAFE.search(text):
        assert shown == text


def test_a_long_host_set_is_cut_with_a_count() -> None:
    hosts = [f"web{i}" for i in range(1, 3001)]
    shown = hosts_text(hosts)
    assert shown.startswith("web1,web2,") and shown.endswith(f"… +{3000 - shown.count(',') + 1:,}")
    assert len(shown) < 100 and "+2,9" in shown
    assert hosts_text(["web1", "web2"]) == "web1,web2"
    assert hosts_text(["x" * 500]) == "x" * 60 + "…"  # one very long name: cut, never dropped
    assert "\x1b" not in hosts_text(["web\x1b[2J"])


def test_a_long_argument_is_cut_in_a_message() -> None:
    shown = cut("1" * 100_000, 60)
    assert len(shown) < 100 and shown.endswith("(100,000 characters)")


def test_json_needs_no_sanitiser() -> None:
    assert not UNSAFE.search(json.dumps({"notes": HOSTILE}))


# ------------------------------------------------------------------------------------ no tag stripped


def shared_note(length: int, until: datetime | None = NOW + H) -> str:
    """A note of exactly `length` characters, empty jail list, whose host set holds web1 and others."""
    for many in range(12):
        hosts = ["web1", *(f"h{i:02d}".ljust(50, "x") for i in range(many)), "z"]
        base = format_note(TAG, Lease((), tuple(hosts), NOW - H, until))
        assert base is not None
        if 0 <= length - len(base) <= 60:
            hosts[-1] = "z" * (1 + length - len(base))
            note = format_note(TAG, Lease((), tuple(hosts), NOW - H, until))
            assert note is not None and len(note) == length
            return note
    raise AssertionError(length)


def test_optional_fields_go_first_then_jails_are_cut() -> None:
    jails = tuple(f"jail{i:02d}" for i in range(40))
    hosts = tuple(f"host{i:02d}" for i in range(30))
    note = format_note(TAG, Lease(jails, hosts, NOW, NOW + H, asn="AS24940", cc="DE"))
    assert note is not None and len(note) <= MAX_NOTES and "asn=" not in note
    small = format_note(TAG, Lease(jails[:30], hosts[:20], NOW, NOW + H, asn="AS24940", cc="DE"))
    # Without the optional fields the jails fit whole: they are kept, the AS goes.
    assert small is not None and "+" not in small.split(" jail=")[1].split(" ")[0]


@given(
    jails=st.lists(st.from_regex(r"[a-z]{1,30}", fullmatch=True), max_size=30),
    hosts=st.lists(st.from_regex(r"[a-z0-9]{1,40}", fullmatch=True), min_size=1, max_size=30),
    asn=st.none() | st.just("AS4200000000"),
)
def test_a_note_is_tagged_and_fits_or_is_not_written(
    jails: list[str], hosts: list[str], asn: str | None
) -> None:
    note = format_note(TAG, Lease(tuple(jails), tuple(hosts), NOW, None, asn=asn, cc="DE"))
    if note is not None:
        assert note.startswith(TAG + " ") and len(note) <= MAX_NOTES
        parsed = parse_note(note, TAG)
        assert parsed is not None and parsed.hosts == tuple(sorted(set(hosts)))


def rule(value: str, notes: str, mode: str = "block") -> Rule:
    return Rule("a" * 32, ZONE, "ip", value, mode, notes, NOW - 2 * H)


def plan_for(bans: list[Ban], rules: list[Rule], policy: Policy = POLICY) -> list:  # type: ignore[type-arg]
    return list(make_plan(bans, [], [RuleListing(ZONE, tuple(rules))], policy, NOW).changes)


@pytest.mark.parametrize("length", [499, 500])
def test_a_renewal_or_leave_that_does_not_fit_is_not_sent(length: int) -> None:
    ip = ipaddress.ip_address("45.51.0.1")
    # this host is in the set, the lease ends before this host's ban, so it is extended: with this host's
    # jail added, the note no longer fits even with the jails cut to "+1"
    shared = shared_note(length)
    ban = Ban(ip, ("sshd",), NOW - H, NOW + 5 * H)
    (change,) = plan_for([ban], [rule("45.51.0.1", shared)])
    assert change.action is Action.KEEP and change.notes == "" and "does not fit" in change.reason
    # a leave of a note over 500 characters (written by someone else): not sent either
    crowd = ",".join(["web1", *(f"h{i:02d}".ljust(50, "x") for i in range(11))])
    over = f"{TAG} jail= host={crowd} since=2026-11-21T10:00:00Z until=2026-11-22T10:00:00Z"
    assert len(over) > 600
    (left,) = plan_for([], [rule("45.51.0.1", over)])
    assert left.action is Action.KEEP and left.notes == ""


def test_every_write_of_a_plan_carries_the_tag() -> None:
    ip = ipaddress.ip_address("45.51.0.1")
    ban = Ban(ip, ("sshd",), NOW - H, NOW + 5 * H)
    for notes in (format_note(TAG, Lease(("x",), ("web2",), NOW - H, NOW + H)), "Fail2Ban sshd"):
        assert notes is not None
        for change in plan_for([ban], [rule("45.51.0.1", notes)]):
            if change.is_write and change.action is not Action.EXPIRE:
                assert change.notes.startswith(TAG) and len(change.notes) <= MAX_NOTES


def test_a_leave_that_fits_is_still_sent() -> None:
    shared = format_note(TAG, Lease(("sshd",), ("web1", "web2"), NOW - H, NOW + H))
    assert shared is not None
    (change,) = plan_for([], [rule("45.51.0.1", shared)])
    assert change.membership is Membership.LEAVE and change.notes.startswith(TAG)


# ------------------------------------------------------------------------------------- legacy adoption


@pytest.mark.parametrize(
    ("notes", "adopted"),
    [
        ("Fail2Ban sshd", True),
        ("fail2ban office", False),
        ("Fail2Ban maintenance", False),
        ("Fail2Ban SSHD", False),  # jail names are case-sensitive
        ("Fail2ban", True),
        ("Blocked by fail2ban on 11/21/26 14:03:07 (ASN: AS13335)", True),
    ],
)
def test_fail2ban_word_is_adopted_only_for_a_jail_of_this_fail2ban(notes: str, adopted: bool) -> None:
    note = parse_note(notes, TAG, jails=frozenset({"sshd", "recidive"}))
    assert (note is not None and note.kind is NoteKind.LEGACY) is adopted
    # not banned here: an adopted rule expires, an operator's is not this run's business at all
    assert bool(plan_for([], [rule("45.51.0.1", notes)])) is adopted
    ban = Ban(ipaddress.ip_address("45.51.0.1"), ("sshd",), NOW - H, NOW + H)
    (change,) = plan_for([ban], [rule("45.51.0.1", notes)])
    assert change.action is (Action.RENEW if adopted else Action.FOREIGN)
    assert change.owner is not None and (change.owner.kind is OwnerKind.UNTAGGED) is not adopted


@pytest.mark.parametrize(
    ("notes", "managed"),
    [
        ("Fail2Ban sshd", False),
        ("FAIL2BAN", False),
        ("fail2ban office", False),
        ("Blocked by fail2ban on 11/21/26 14:03:07 (ASN: AS13335)", True),
        ("blocked by FAIL2BAN jail=sshd host=web1 until=permanent", True),
    ],
)
def test_list_items_are_managed_only_with_the_tag(notes: str, managed: bool) -> None:
    note = parse_note(notes, TAG, jails=frozenset({"sshd"}), tagged_only=True)
    assert (note is not None) is managed


# --------------------------------------------------------------------------------------------- WAF


@pytest.mark.parametrize(
    ("expression", "enforces"),
    [
        ("(ip.src in $fail2ban)", True),
        ("ip.src in $fail2ban", True),
        ("((ip.src in $fail2ban))", True),
        ('(ip.src in $fail2ban) or (http.host eq "x")', True),
        ('http.host eq "x" || ip.src in $fail2ban', True),
        ("(cf.bot_management.score lt 5 or (ip.src in $fail2ban or ip.src in $other))", True),
        ("not ip.src in $fail2ban", False),
        ("!(ip.src in $fail2ban)", False),
        ('ip.src in $fail2ban and http.host eq "one.host"', False),
        ('(ip.src in $fail2ban && http.host eq "one.host") or http.host eq "x"', False),
        ('http.host eq "ip.src in $fail2ban"', False),
        ('http.host eq "\\" ip.src in $fail2ban \\""', False),
        ('http.host eq r#"ip.src in $fail2ban"#', False),
        ("ip.src in $fail2ban_v6", False),
        ('ip.src in $fail2ban xor http.host eq "x"', False),
        ("(ip.src in $fail2ban", False),
        ('http.host eq "unterminated ip.src in $fail2ban', False),
        ("ip.dst in $fail2ban", False),
    ],
)
def test_the_list_is_enforced_only_by_a_rule_matching_all_of_it(expression: str, enforces: bool) -> None:
    assert waf.matches_list(expression, "fail2ban") is enforces


def test_block_satisfies_any_challenge_and_no_challenge_satisfies_block() -> None:
    block = {"action": "block", "expression": "(ip.src in $fail2ban)", "enabled": True}
    for mode in ("block", "managed_challenge", "challenge", "js_challenge"):
        assert waf.enforcing([block], "fail2ban", mode)
    challenge = {**block, "action": "managed_challenge"}
    assert not waf.enforcing([challenge], "fail2ban", "block")
    assert not waf.enforcing([challenge], "fail2ban", "challenge")


# ------------------------------------------------------------------------------------------ addresses


def test_an_address_is_read_as_a_ban_is() -> None:
    ip, said = read_address("::ffff:45.51.0.1")
    assert ip == ipaddress.IPv4Address("45.51.0.1") and "45.51.0.1" in said and "mapped" in said
    assert read_address(" 2606:4700::1111 ") == (ipaddress.IPv6Address("2606:4700::1111"), "")
    with pytest.raises(ValueError, match="scoped"):
        read_address("fe80::1%eth0")
    with pytest.raises(ValueError) as raised:
        read_address("1" * 100_000)
    assert len(str(raised.value)) < 200 and "100,000 characters" in str(raised.value)
    with pytest.raises(ValueError) as raised:
        read_address("1.2.3.4\x1b[2J")
    assert "\x1b" not in str(raised.value)


# ------------------------------------------------------------------------------------------ host case


def test_host_names_compare_in_lower_case() -> None:
    """DNS does not tell WEB1 from web1: a note another writer gave `host=WEB1` is this host's own."""
    ip = ipaddress.ip_address("45.51.0.1")
    ban = Ban(ip, ("sshd",), NOW - H, NOW + H)
    notes = f"{TAG} jail=sshd host=WEB1 since=2026-11-21T11:00:00Z until=2026-11-21T13:00:00Z"
    (change,) = plan_for([ban], [rule("45.51.0.1", notes)])
    assert change.action is Action.KEEP and change.reason == "up to date"
    written = format_note(TAG, Lease(("sshd",), ("Web2", "WEB1"), NOW, None))
    assert written is not None and "host=web1,web2 " in written


# ------------------------------------------------------------------------------------------ AS names, cache


def test_an_as_name_is_cleaned_where_it_enters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parsed = parse_line(
        "64500 | 45.52.0.2 | 45.52.0.0/24 | DE | ripencc | 2020-01-01 | EVIL\x9b31m\u202eNAME\x1b"
    )
    assert parsed is not None and parsed[1].name is not None and not UNSAFE.search(parsed[1].name)
    cache = tmp_path / "asn.json"
    entry = {
        "asn": "AS1",
        "cc": None,
        "name": "X\u202eY\x9b",
        "prefix": None,
        "looked_up": "2026-11-21T10:00:00Z",
    }
    cache.write_text(json.dumps({"version": 1, "entries": {"45.52.0.2": entry}}))
    tmp_path.chmod(0o755)
    entries, problem = load_cache(cache)
    assert problem is None and entries["45.52.0.2"].info.name == "X Y"


def test_a_cache_is_read_with_a_bound_and_refused_where_others_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "asn.json"
    cache.write_text(json.dumps({"version": 1, "entries": {}}) + " " * 200)
    tmp_path.chmod(0o755)
    assert load_cache(cache) == ({}, None)
    monkeypatch.setattr(cache_mod, "MAX_BYTES", 100)
    entries, problem = load_cache(cache)
    assert entries == {} and problem is not None and "over" in problem
    tmp_path.chmod(0o1777)
    entries, problem = load_cache(cache)
    assert problem is not None and "group or others can write" in problem
    with pytest.raises(PermissionError):
        save_cache(cache, {}, 10)
    tmp_path.chmod(0o755)


# ------------------------------------------------------------------------------- --explain, --check output


def test_explain_and_check_print_nothing_raw(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The last line of defence: whatever text a server or another writer put in a reason or a found
    line, the printed table has it escaped (the JSON form escapes as JSON does)."""
    from reconcile.core.changes import Change
    from reconcile.ops import check, explain

    ip = ipaddress.ip_address("45.51.0.1")
    found = explain.Explanation(
        ip, (), ("status",), (), (Change(Action.KEEP, "45.51.0.1", HOSTILE),), (HOSTILE,)
    )
    monkeypatch.setattr(explain, "explain", lambda *args: found)
    explain.main(None, None, ip, "table")  # type: ignore[arg-type]
    monkeypatch.setattr(
        check, "run_checks", lambda *args: [check.Check(check.Status.FAIL, "x", HOSTILE, HOSTILE)]
    )
    check.main(None, None, "table")  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert "EVIL" in out and not UNSAFE.search(out)
