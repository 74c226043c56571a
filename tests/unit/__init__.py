"""Unit tests: no server, no socket, no subprocess (conftest.py refuses them); `make test-unit`."""
