"""Notes: the format other hosts' reconcilers read (DESIGN §4), and the older scripts' notes we adopt."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconcile.core.notes import MAX_NOTES, Lease, NoteKind, format_note, parse_note

TAG = "Blocked by fail2ban"
T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


def note_of(jails, hosts, since, until, **optional) -> str:
    hosts = (hosts,) if isinstance(hosts, str) else tuple(hosts)
    note = format_note(TAG, Lease(tuple(jails), hosts, since, until, **optional))
    assert note is not None
    return note


def test_format_is_the_documented_one():
    note = note_of(["sshd", "recidive"], "web1", T0, T0 + timedelta(days=1))
    assert note == (
        "Blocked by fail2ban jail=sshd,recidive host=web1 "
        "since=2026-11-21T10:00:00Z until=2026-11-22T10:00:00Z"
    )


def test_permanent_ban_and_round_trip():
    note = note_of(["manual"], "web1", T0, None)
    assert note.endswith("until=permanent")
    parsed = parse_note(note, TAG)
    assert parsed is not None and parsed.kind is NoteKind.LEASE
    assert (
        parsed.until is None
        and parsed.since == T0
        and parsed.jails == ("manual",)
        and parsed.hosts == ("web1",)
    )


def test_unknown_fields_are_ignored_and_tag_is_case_insensitive():
    parsed = parse_note(
        "BLOCKED BY FAIL2BAN jail=sshd host=web2 since=2026-11-21T10:00:00Z "
        "until=2026-11-21T11:00:00Z asn=AS13335 x=y",
        TAG,
    )
    assert parsed is not None and parsed.kind is NoteKind.LEASE
    assert parsed.hosts == ("web2",) and parsed.asn == "AS13335"
    assert parsed.until == T0 + timedelta(hours=1)


@pytest.mark.parametrize(
    ("notes", "since", "jails", "asn"),
    [
        # 14:03:07 in New York on 21 Nov 2026 (EST, UTC-5) is 19:03:07 UTC.
        (
            "Blocked by fail2ban on 11/21/26 14:03:07 (ASN: AS13335)",
            datetime(2026, 11, 21, 19, 3, 7, tzinfo=UTC),
            (),
            "AS13335",
        ),
        # Summer time (EDT, UTC-4).
        ("Blocked by fail2ban on 07/04/26 09:00:00", datetime(2026, 7, 4, 13, 0, 0, tzinfo=UTC), (), None),
        ("Fail2Ban sshd", None, ("sshd",), None),
        ("Fail2ban", None, (), None),
        ("fail2ban nginx-http-auth", None, ("nginx-http-auth",), None),
    ],
)
def test_legacy_notes_are_adopted(notes, since, jails, asn):
    parsed = parse_note(notes, TAG)
    assert parsed is not None and parsed.kind is NoteKind.LEGACY
    assert parsed.since == since and parsed.jails == jails and parsed.asn == asn


@pytest.mark.parametrize(
    "notes",
    [
        "Blocked by fail2ban",  # tag alone
        "Blocked by fail2ban by hand, ask Bob",  # words, not fields
        "Blocked by fail2ban jail=sshd since=2026-11-21T10:00:00Z",  # no host, no until
        "Blocked by fail2ban jail=sshd host=web1 until=tomorrow",  # until not a time
        "Blocked by fail2ban on 13/45/26 99:00:00",  # legacy shape, impossible date
        "Blocked by fail2banXYZ host=a until=permanent",
    ],
)
def test_tagged_notes_of_unknown_shape_are_kept_not_guessed(notes):
    parsed = parse_note(notes, TAG)
    assert parsed is not None and parsed.kind is NoteKind.UNKNOWN


@pytest.mark.parametrize(
    "notes", ["", "office VPN", "Not from fail2ban: partner", "Fail2Ban sshd extra words"]
)
def test_untagged_notes_are_not_ours(notes):
    assert parse_note(notes, TAG) is None


def test_note_stays_within_500_characters_whatever_the_jails():
    jails = [f"jail-with-a-long-name-{i}" for i in range(60)]
    note = note_of(jails, "web1", T0, None)
    assert len(note) <= MAX_NOTES
    parsed = parse_note(note, TAG)
    assert parsed is not None and parsed.kind is NoteKind.LEASE and parsed.until is None
    assert parsed.jails[-1].startswith("+")  # says how many were left out
    assert parsed.jails[0] == "jail-with-a-long-name-0"


def test_characters_that_would_break_the_grammar_are_replaced():
    note = note_of(["bad jail,name=x"], "web1", T0, None)
    parsed = parse_note(note, TAG)
    assert parsed is not None and parsed.jails == ("bad_jail_name_x",)


names = st.text(
    alphabet=st.characters(categories=("L", "N"), include_characters="-_."), min_size=1, max_size=30
)
moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=0))


@given(
    jails=st.lists(names, min_size=1, max_size=5, unique=True),
    host=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True),
    since=moments,
    until=st.none() | moments,
)
def test_round_trip(jails, host, since, until):
    note = note_of(jails, host, since, until)
    assert len(note) <= MAX_NOTES
    parsed = parse_note(note, TAG)
    assert parsed is not None and parsed.kind is NoteKind.LEASE
    # host names compare in lower case (DNS does not tell WEB1 from web1)
    assert (parsed.jails, parsed.hosts, parsed.since, parsed.until) == (
        tuple(jails),
        (host.lower(),),
        since,
        until,
    )


def test_host_set_is_sorted_and_written_as_documented():
    note = note_of(["sshd", "recidive"], ["web2", "web1"], T0, T0 + timedelta(days=1), asn="24940", cc="de")
    assert note == (
        "Blocked by fail2ban jail=sshd,recidive host=web1,web2 "
        "since=2026-11-21T10:00:00Z until=2026-11-22T10:00:00Z asn=AS24940 cc=DE"
    )
    parsed = parse_note(note, TAG)
    assert parsed is not None and parsed.hosts == ("web1", "web2")
    assert (parsed.asn, parsed.cc) == ("AS24940", "DE")


def test_single_host_notes_of_0_1_stay_valid():
    parsed = parse_note(
        "Blocked by fail2ban jail=sshd host=web1 since=2026-11-21T10:00:00Z until=2026-11-21T11:00:00Z", TAG
    )
    assert parsed is not None and parsed.kind is NoteKind.LEASE and parsed.hosts == ("web1",)


def test_cc_is_never_written_without_an_asn():
    assert " cc=" not in note_of(["sshd"], "web1", T0, None, cc="DE")
    parsed = parse_note(f"{TAG} jail=sshd host=web1 until=permanent cc=DE", TAG)
    assert parsed is not None and parsed.cc is None


def test_a_host_set_that_does_not_fit_is_not_written():
    hosts = [f"host-{i:03d}-with-a-rather-long-name" for i in range(14)]
    assert format_note(TAG, Lease(("sshd",), tuple(hosts), T0, None)) is None
    note = note_of(["sshd"] * 1, hosts[:10], T0, None)
    assert len(note) <= MAX_NOTES


def test_jails_then_optional_fields_are_cut_to_fit():
    hosts = [f"host-{i:03d}-with-a-rather-long-name" for i in range(11)]
    jails = [f"jail{i}" for i in range(20)]
    note = note_of(jails, hosts, T0, None, asn="AS1", cc="US")
    assert len(note) <= MAX_NOTES
    parsed = parse_note(note, TAG)
    assert parsed is not None and len(parsed.hosts) == 11
