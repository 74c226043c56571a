"""Untrusted text made safe for a terminal, a log line or mail (DESIGN §12). Pure.

Other writers' notes and comments, the host and jail names parsed from them, AS names from whois or from
the cache file: any of it may carry an escape sequence (`\\x1b[2J`, a C1 CSI `\\x9b`, an OSC title) or a
bidirectional override that makes the text read other than it is. Before such text is shown, every such
character is written as a visible escape (`\\x1b`, `\\u202e`). JSON output needs none of this: json.dumps
escapes it already.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

# C0 but tab and newline, DEL, C1; the bidi embeddings, overrides and isolates, the directional marks and
# the Arabic letter mark.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# In one-line fields (a table cell, a value inside a log line) a newline would forge the next line.
_UNSAFE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")

HOSTS_SHOWN = 60  # characters of a host set shown in a line before it is cut


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape(text: str) -> str:
    """`text` with control characters (but tab and newline) and bidi controls written as escapes."""
    return _UNSAFE.sub(_escaped, text)


def escape_line(text: str) -> str:
    """`escape`, and tab and newline escaped too: for a value shown inside one line."""
    return _UNSAFE_LINE.sub(_escaped, text)


def hosts_text(hosts: Sequence[str], width: int = HOSTS_SHOWN) -> str:
    """A host set for a line: `web1,web2` whole when short, else `web1,web2,… +2,998` (first hosts that fit
    in `width` characters, then how many more). Names are escaped."""
    if type(hosts) is tuple:
        # A fleet has a handful of host sets and the planner names one in a reason per shared rule.
        return _hosts_text(hosts, width)
    return _hosts_text_of(hosts, width)


@functools.lru_cache(maxsize=1024)
def _hosts_text(hosts: tuple[str, ...], width: int) -> str:
    return _hosts_text_of(hosts, width)


def _hosts_text_of(hosts: Sequence[str], width: int) -> str:
    names = [escape_line(h) for h in hosts]
    whole = ",".join(names)
    if len(whole) <= width:
        return whole
    shown: list[str] = []
    used = 0
    for name in names:
        if shown and used + len(name) + 1 > width:
            break
        shown.append(name[:width] + ("…" if len(name) > width else ""))
        used += len(shown[-1]) + 1
    rest = len(names) - len(shown)
    return f"{','.join(shown)},… +{rest:,}" if rest else ",".join(shown)


def cut(text: str, limit: int = 80) -> str:
    """An argument echoed in a message: escaped, and cut to `limit` characters with a count of the rest."""
    shown = escape_line(text)
    if len(shown) <= limit:
        return shown
    return f"{shown[:limit]}… ({len(text):,} characters)"
