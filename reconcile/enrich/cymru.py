"""Team Cymru's bulk whois protocol (DESIGN §10), pure: the query, and answer lines read by content."""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from reconcile.core.model import IPAddress

log = logging.getLogger("reconcile.asn")

# A name longer than this is cut: it is shown in reports, never written to a note.
MAX_NAME = 200


_AS_NUMBER = re.compile(r"^[0-9]{1,10}$")


COUNTRY_CODE = re.compile(r"^[A-Z]{2}$")


# Control characters (C0, DEL, C1) and bidi controls: an AS name is the whois server's text, shown to people.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def clean_name(name: str) -> str | None:
    """An AS name as it is kept and shown: controls as spaces, cut to MAX_NAME; None when nothing is left."""
    return _CONTROL.sub(" ", name)[:MAX_NAME].strip() or None


@dataclass(frozen=True)
class AsnInfo:
    """What the whois server said about one address; None where it said `NA` (unknown)."""

    asn: str | None  # "AS24940"
    cc: str | None  # "DE": the prefix's registry country, not a geolocation
    name: str | None  # "HETZNER-AS, DE"
    prefix: str | None  # "88.198.0.0/16"


def format_query(addresses: Sequence[IPAddress]) -> bytes:
    """The bulk request: `begin`, `verbose` (adds prefix, registry, date and AS name), one address a line."""
    lines = ["begin", "verbose", *(ip.compressed for ip in addresses), "end"]
    return ("\n".join(lines) + "\n").encode("ascii")


def _is_banner(line: str) -> bool:
    return line.startswith("Bulk mode;")


def _is_header(fields: list[str]) -> bool:
    return len(fields) >= 3 and fields[0] == "AS" and fields[1] == "IP" and fields[2] == "BGP Prefix"


def _unknown(value: str) -> bool:
    return value in ("", "NA")


def parse_line(line: str) -> tuple[IPAddress, AsnInfo] | None:
    """One data line `AS | IP | BGP Prefix | CC | Registry | Allocated | AS Name`; None if it is not one."""
    fields = [f.strip() for f in line.split("|", 6)]
    if len(fields) != 7:
        return None
    as_field, ip_field, prefix_field, cc_field, _registry, _allocated, name_field = fields
    try:
        ip = ipaddress.ip_address(ip_field)
    except ValueError:
        return None
    if as_field == "NA":
        asn = None
    elif _AS_NUMBER.match(as_field) and 0 < int(as_field) < 2**32:
        asn = f"AS{int(as_field)}"
    else:
        return None
    if _unknown(prefix_field):
        prefix = None
    else:
        try:
            prefix = ipaddress.ip_network(prefix_field, strict=False).compressed
        except ValueError:
            return None
    if _unknown(cc_field):
        cc = None
    elif COUNTRY_CODE.match(cc_field):
        cc = cc_field
    else:
        return None
    name = None if _unknown(name_field) else clean_name(name_field)
    return ip, AsnInfo(asn=asn, cc=cc, name=name, prefix=prefix)


def parse_bulk(text: str) -> tuple[dict[IPAddress, AsnInfo], int]:
    """Every data line of a bulk answer, by content: the banner, a header and blank lines are skipped.

    Returns the infos and the count of malformed lines (each logged at debug). When the server gives
    several lines for one address (a prefix with several origins), the first one counts.
    """
    infos: dict[IPAddress, AsnInfo] = {}
    skipped = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or _is_banner(line) or _is_header([f.strip() for f in line.split("|")]):
            continue
        parsed = parse_line(line)
        if parsed is None:
            skipped += 1
            log.debug("whois answer line %d skipped, not a data line: %r", number, line[:200])
            continue
        infos.setdefault(parsed[0], parsed[1])
    return infos, skipped
