"""The unit tests' guard (conftest.py) holds: a unit test that reaches for a real part fails at once."""

import socket
import subprocess

import pytest


def test_a_subprocess_is_refused() -> None:
    with pytest.raises(AssertionError, match="may not run a subprocess"):
        subprocess.run(["true"], check=False)


def test_a_socket_can_neither_connect_nor_listen() -> None:
    with socket.socket() as sock, pytest.raises(AssertionError, match="may not connect"):
        sock.connect(("127.0.0.1", 9))
    with socket.socket() as sock, pytest.raises(AssertionError, match="may not bind"):
        sock.bind(("127.0.0.1", 0))
    with pytest.raises(AssertionError, match="may not open a connection"):
        socket.create_connection(("127.0.0.1", 9))
