"""A local whois server on 127.0.0.1 speaking Team Cymru's bulk protocol, and its faults.

It answers like whois.cymru.com in verbose bulk mode: a `Bulk mode; whois.cymru.com [...]` banner,
optionally the column header, then one line per queried address, padded like the real service;
`NA` lines for addresses set unknown, `Error: no ASN or IP match on line N.` for lines that are no
address. Each address gets a deterministic fake AS from `ASES` (or from `table`, which a test sets).

Modes (set `mode` and its parameters between calls):
- "normal": the full answer, then close.
- "slow": waits `delay` seconds (after `after_lines` data lines) before the rest of the answer.
- "garbled": junk lines instead of data lines (`junk_every` > 0 in normal mode mixes junk in instead).
- "close_early": banner and `close_after` data lines, then close (0: close at once, sending nothing).
- `stream = True`: answers each line as soon as it is read (small socket buffers), as a server that
  does not wait for `end` would.
- `extra`: addresses answered after the asked ones, though nobody asked for them.
- `refuse()`: stops listening; the port then refuses connections.

Every connection is recorded (`connections`: its raw request lines and the queried addresses).
The `whois` fixture starts a server and, on teardown, stops it and checks that no thread is left.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

# (AS number, CC, registry, allocated, AS name): real-looking entries, including multi-word names with
# commas, an empty allocation date (as Cymru gives for some APNIC space) and a very long name.
ASES: tuple[tuple[int, str, str, str, str], ...] = (
    (24940, "DE", "ripencc", "2008-04-28", "HETZNER-AS, DE"),
    (14061, "US", "arin", "2012-09-25", "DIGITALOCEAN-ASN, US"),
    (16509, "US", "arin", "2000-05-04", "AMAZON-02, US"),
    (4134, "CN", "apnic", "2008-07-01", "CHINANET-BACKBONE No.31,Jin-rong Street, CN"),
    (15169, "US", "arin", "1992-12-01", "GOOGLE, US"),
    (2856, "GB", "ripencc", "2001-01-02", "BT-UK-AS BTnet UK Regional network, GB"),
    (3786, "KR", "apnic", "", "LGDACOM LG DACOM Corporation, KR"),
    (19373, "MX", "lacnic", "2000-12-04", "Triara.com, S.A. de C.V., MX"),
    (
        64496,
        "NL",
        "ripencc",
        "2020-02-29",
        "EXAMPLE-LONG-NAME-AS " + "Very Long Hosting and Colocation Services International " * 5 + "B.V., NL",
    ),
)

JUNK = (
    "%%%% garbage %%%%",
    "15169 | not-an-ip | 8.8.8.0/24 | US | arin | 1992-12-01 | GOOGLE, US",
    "only | three | fields",
    "\x00\x01\x02 binary",
    "<html><body>502 Bad Gateway</body></html>",
)


@dataclass(frozen=True)
class Answer:
    """One data line's fields; asn None gives Cymru's `NA` line."""

    asn: int | None
    cc: str
    registry: str
    allocated: str
    name: str
    prefix: str | None


@dataclass
class Connection:
    """One accepted connection: the request lines as read, and the addresses among them."""

    peer: tuple[str, int]
    lines: list[str] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)
    complete: bool = False  # the client sent `end`


def fake_answer(ip: str) -> Answer:
    """The deterministic answer for an address: one of ASES by its integer value, its /24 or /48."""
    addr = ipaddress.ip_address(ip)
    asn, cc, registry, allocated, name = ASES[int(addr) % len(ASES)]
    length = 24 if addr.version == 4 else 48
    prefix = ipaddress.ip_network(f"{addr}/{length}", strict=False).compressed
    return Answer(asn, cc, registry, allocated, name, prefix)


def data_line(ip: str, answer: Answer) -> str:
    """A line padded like Cymru's: `15169   | 8.8.8.8          | 8.8.8.0/24          | US | arin ...`."""
    width = 16 if ":" not in ip else 40
    if answer.asn is None:
        return f"{'NA':<8}| {ip:<{width}} | {'NA':<19} | {'':<2} | {'other':<8} | {'':<10} | NA"
    return (
        f"{answer.asn:<8}| {ip:<{width}} | {answer.prefix or 'NA':<19} | {answer.cc:<2} | "
        f"{answer.registry:<8} | {answer.allocated:<10} | {answer.name}"
    )


HEADER = "AS      | IP               | BGP Prefix          | CC | Registry | Allocated  | AS Name"


class WhoisServer:
    def __init__(self) -> None:
        self.mode = "normal"
        self.header = False
        self.delay = 0.0
        self.after_lines = 0
        self.close_after = 0
        self.junk_every = 0
        self.stream = False
        self.extra: list[str] = []  # answered too, though nobody asked (a confused or hostile server)
        self.table: dict[str, Answer] = {}  # compressed address -> answer, overrides fake_answer
        self.unknown: set[str] = set()  # compressed addresses answered with an NA line
        self.connections: list[Connection] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._refusing = threading.Event()
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []
        self.host = "127.0.0.1"
        self.port = 0

    # ------------------------------------------------------------------------ lifecycle

    def start(self) -> WhoisServer:
        listener = socket.create_server((self.host, 0))
        listener.settimeout(0.05)  # accept() polls the refuse flag
        self.port = listener.getsockname()[1]
        self._spawn(self._accept_loop, listener, name="whois-accept")
        return self

    def stop(self) -> list[threading.Thread]:
        """Stop and join every thread; returns those still alive (none, normally)."""
        self._stop.set()
        self.refuse()
        for thread in list(self._threads):
            thread.join(timeout=5)
        return [t for t in self._threads if t.is_alive()]

    def refuse(self) -> None:
        """Stop listening: connections to `port` are refused once this returns."""
        # The accept thread closes the listener itself: closed from here while that thread sits in
        # accept(), the kernel would keep it listening until accept() returns, and reset a connection.
        self._refusing.set()
        if not self._closed.wait(timeout=5):
            raise RuntimeError("whois server: the accept thread did not stop listening")

    @property
    def server(self) -> str:
        """`host:port`, as `[enrich] whois_server` takes it."""
        return f"{self.host}:{self.port}"

    def queries(self) -> list[str]:
        """Every address asked, over all connections, in order."""
        with self._lock:
            return [q for c in self.connections for q in c.queries]

    def _spawn(self, target: Callable[..., None], *args: object, name: str) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    # ------------------------------------------------------------------------ serving

    def _accept_loop(self, listener: socket.socket) -> None:
        try:
            with listener:
                while not self._refusing.is_set():
                    try:
                        conn, peer = listener.accept()
                    except TimeoutError:
                        continue
                    self._spawn(self._serve, conn, peer, name="whois-conn")
        finally:
            self._closed.set()

    def _serve(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        record = Connection(peer=peer)
        with self._lock:
            self.connections.append(record)
        with conn:
            try:
                if self.stream:
                    self._stream(conn, record)
                    return
                self._read_request(conn, record)
                if self._stop.is_set():
                    return
                self._answer(conn, record)
            except OSError:  # the client went away (it timed out): nothing more to say
                pass

    def _read_request(self, conn: socket.socket, record: Connection) -> None:
        conn.settimeout(0.05)
        buffer = b""
        while not self._stop.is_set():
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                break
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            for raw in complete:
                line = raw.decode("utf-8", errors="replace").strip()
                with self._lock:
                    record.lines.append(line)
                    if line not in ("begin", "verbose", "end", ""):
                        record.queries.append(line)
                if line == "end":
                    record.complete = True
                    return

    def _stream(self, conn: socket.socket, record: Connection) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        conn.settimeout(5)
        conn.sendall(f"Bulk mode; whois.cymru.com [{_stamp()}]\n".encode())
        buffer = b""
        while not self._stop.is_set():
            chunk = conn.recv(4096)
            if not chunk:
                return
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            for raw in complete:
                line = raw.decode("utf-8", errors="replace").strip()
                with self._lock:
                    record.lines.append(line)
                    if line in ("begin", "verbose", "end", ""):
                        record.complete = record.complete or line == "end"
                        continue
                    record.queries.append(line)
                ip = ipaddress.ip_address(line).compressed
                answer = self.table.get(ip) or fake_answer(ip)
                conn.sendall((data_line(line, answer) + "\n").encode())
            if record.complete:
                return

    def _lines(self, record: Connection) -> Iterator[str]:
        """The data lines of the answer, one per request line after `begin`/`verbose`."""
        number = 0
        for line in record.lines:
            number += 1
            if line in ("begin", "verbose", "end", ""):
                continue
            if self.mode == "garbled":
                yield JUNK[number % len(JUNK)]
                continue
            if self.junk_every and number % self.junk_every == 0:
                yield JUNK[number % len(JUNK)]
            try:
                ip = ipaddress.ip_address(line).compressed
            except ValueError:
                yield f"Error: no ASN or IP match on line {number}."
                continue
            answer = (
                Answer(None, "", "other", "", "NA", None)
                if ip in self.unknown
                else self.table.get(ip) or fake_answer(ip)
            )
            yield data_line(line, answer)
        for ip in self.extra:
            yield data_line(ip, fake_answer(ip))

    def _answer(self, conn: socket.socket, record: Connection) -> None:
        conn.settimeout(5)
        if self.mode == "close_early" and self.close_after == 0:
            return  # closed at once, without a byte
        out = [f"Bulk mode; whois.cymru.com [{_stamp()}]"]
        if self.header:
            out.append(HEADER)
        sent = 0
        for line in self._lines(record):
            if self.mode == "close_early" and sent >= self.close_after:
                break
            if self.mode == "slow" and sent == self.after_lines:
                conn.sendall(("\n".join(out) + "\n").encode() if out else b"")
                out = []
                if self._stop.wait(self.delay):
                    return
            out.append(line)
            sent += 1
        if self.mode == "slow" and sent <= self.after_lines and self._stop.wait(self.delay):
            return
        if out:
            conn.sendall(("\n".join(out) + "\n").encode())


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S +0000")


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextlib.contextmanager
def running_whois() -> Iterator[WhoisServer]:
    server = WhoisServer().start()
    try:
        yield server
    finally:
        left = server.stop()
        assert not left, f"whois server threads still alive: {left}"


@pytest.fixture
def whois() -> Iterator[WhoisServer]:
    with running_whois() as server:
        yield server
