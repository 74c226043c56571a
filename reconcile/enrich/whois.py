"""The one module that opens the whois socket: one bulk query per run, bounded in time and size."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

from reconcile.core.model import IPAddress
from reconcile.enrich.cymru import AsnInfo, format_query, parse_bulk
from reconcile.errors import ReconcileError

log = logging.getLogger("reconcile.asn")

# Cymru answers ~100 bytes per address; a server streaming more than this is not answering us.
_MIN_ANSWER_CAP = 1 << 20


_ANSWER_BYTES_PER_ADDRESS = 1024


class AsnLookupError(ReconcileError):
    """The bulk lookup gave nothing usable (refused, timed out, closed, garbage); one line says why."""


def _resolve(host: str, port: int, deadline: float) -> list[tuple[Any, ...]]:
    """getaddrinfo bounded by the deadline: it has no timeout of its own and DNS can hang for long."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:  # a literal address: no DNS involved
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    box: list[Any] = []

    def work() -> None:
        try:
            box.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as exc:
            box.append(exc)

    # a daemon thread: if DNS outlives the deadline, the run goes on and the thread dies with the process
    thread = threading.Thread(target=work, name="asn-resolve", daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    if not box:
        raise TimeoutError("name resolution timed out")
    if isinstance(box[0], OSError):
        raise box[0]
    result: list[tuple[Any, ...]] = box[0]
    return result


def _connect(host: str, port: int, deadline: float) -> socket.socket:
    errors: list[str] = []
    for family, kind, proto, _name, address in _resolve(host, port, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out")
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(remaining)
            sock.connect(address)
        except OSError as exc:
            sock.close()
            errors.append(failure_reason(exc))
            continue
        return sock
    raise ConnectionError("; ".join(errors) or "no address")


def failure_reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):  # socket.timeout is TimeoutError; ours say what timed out
        return exc.strerror or str(exc) or "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve: {exc.strerror or exc}"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    filename = getattr(exc, "filename", None)
    return f"{text}: {filename}" if filename else str(text)


def query_bulk(
    host: str, port: int, addresses: Sequence[IPAddress], timeout: float
) -> dict[IPAddress, AsnInfo]:
    """Ask for `addresses` over ONE connection in bulk mode and read until the server closes.

    The whole of it (resolve, connect, send, read) ends by `timeout` seconds from now. A partial answer
    (the server closed or the time ran out after some lines) gives what it holds; an answer with no usable
    line for an asked address raises AsnLookupError, as do refusal and timeout. Lines for addresses not
    asked are ignored. Addresses are asked once each, in the order given.
    """
    asked = list(dict.fromkeys(addresses))
    where = f"whois {host}:{port}"
    if not asked:
        return {}
    if timeout <= 0:  # the run's time is up: not even a DNS query
        raise AsnLookupError(f"{where}: no time left for the lookup")
    started = time.monotonic()
    deadline = started + timeout
    cap = max(_MIN_ANSWER_CAP, _ANSWER_BYTES_PER_ADDRESS * len(asked))
    chunks: list[bytes] = []
    size = 0
    ended = "closed"
    try:
        sock = _connect(host, port, deadline)
    except OSError as exc:
        raise AsnLookupError(f"{where}: {failure_reason(exc)}") from None
    with sock:
        try:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                sock.sendall(format_query(asked))
            except TimeoutError:
                raise
            except OSError as exc:  # closed on us: what it answered before that is still to be read
                log.debug("%s: sending the query failed: %s", where, failure_reason(exc))
            # half-close: "end" already says so, this also tells servers that wait for EOF
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                sock.settimeout(remaining)
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > cap:
                    ended = f"answer beyond {cap} bytes"
                    break
        except OSError as exc:
            ended = failure_reason(exc)
    data = b"".join(chunks)
    if ended != "closed" and b"\n" in data:
        # stopped mid-stream: the last line may be cut short, so it is not trusted
        data = data[: data.rindex(b"\n") + 1]
    elif ended != "closed":
        data = b""
    infos, skipped = parse_bulk(data.decode("utf-8", errors="replace"))
    wanted = set(asked)
    stray = [ip for ip in infos if ip not in wanted]
    for ip in stray:
        del infos[ip]
    log.debug(
        "%s: asked %d, answered %d, %d malformed and %d stray lines, %d bytes in %.3f s (%s)",
        where,
        len(asked),
        len(infos),
        skipped,
        len(stray),
        len(data),
        time.monotonic() - started,
        ended,
    )
    if not infos:
        if ended == "timed out":
            raise AsnLookupError(f"{where}: timed out after {timeout:g} s with no usable answer line")
        if ended != "closed":
            raise AsnLookupError(f"{where}: {ended}, with no usable answer line")
        if not data.strip():
            raise AsnLookupError(f"{where}: the server closed the connection without an answer")
        raise AsnLookupError(f"{where}: no usable line in the answer ({skipped} malformed)")
    return infos
