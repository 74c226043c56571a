"""Unit tests start no server, open no socket and run no subprocess: each attempt fails the test at once.

This is what keeps `make test-unit` at seconds; a test that needs a real part belongs in tests/e2e/.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from typing import Any, NoReturn

import pytest


def _refuse(what: str) -> Any:
    def refused(*args: Any, **kwargs: Any) -> NoReturn:
        raise AssertionError(f"a unit test may not {what}: move it to tests/e2e/")

    return refused


# Module scope, autouse: set up before any other fixture of the module, module-scoped ones included.
@pytest.fixture(scope="module", autouse=True)
def _no_servers_sockets_or_subprocesses() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", _refuse("connect a socket"))
        patch.setattr(socket.socket, "connect_ex", _refuse("connect a socket"))
        patch.setattr(socket.socket, "bind", _refuse("bind a socket"))
        patch.setattr(socket, "create_connection", _refuse("open a connection"))
        patch.setattr(subprocess.Popen, "__init__", _refuse("run a subprocess"))
        yield
