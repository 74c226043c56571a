"""Log output: sd-daemon "<N>" prefixes only when stderr really is the journal (systemd.exec(5)).

$JOURNAL_STREAM holds "device:inode" of the journal stream systemd connected; a child that inherited the
variable while its stderr goes to a file or a pipe must print plain lines. Real files and pipes here.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TextIO

import pytest

from reconcile import log


def stream_id(fd: int) -> str:
    st = os.fstat(fd)
    return f"{st.st_dev}:{st.st_ino}"


def file_id(path: Path) -> str:
    """JOURNAL_STREAM's value for a file: another file than stderr stands for the real journal."""
    path.touch()
    st = path.stat()
    return f"{st.st_dev}:{st.st_ino}"


def emit(stream: TextIO) -> None:
    logger = log.setup(0, stream=stream)
    logger.info("synced 3 bans")
    logger.warning("one warning")
    stream.flush()


def test_inherited_journal_stream_with_stderr_a_file_gives_plain_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", file_id(tmp_path / "journal"))  # inherited: not our stderr
    out = tmp_path / "stderr.log"
    with out.open("w") as stream:
        emit(stream)
    assert out.read_text() == "reconcile: synced 3 bans\nreconcile: warning: one warning\n"


def test_journal_stream_matching_stderr_gives_priority_prefixes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "stderr.log"
    with out.open("w") as stream:
        monkeypatch.setenv("JOURNAL_STREAM", stream_id(stream.fileno()))
        emit(stream)
    assert out.read_text() == "<6>synced 3 bans\n<4>one warning\n"


def test_inherited_journal_stream_with_stderr_a_pipe_gives_plain_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", file_id(tmp_path / "journal"))
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "w") as stream:
        emit(stream)
    with os.fdopen(read_end) as reader:
        assert reader.read() == "reconcile: synced 3 bans\nreconcile: warning: one warning\n"
    # The same pipe named in the variable: it is the journal's stream (journald's is a socket or pipe).
    read_end, write_end = os.pipe()
    monkeypatch.setenv("JOURNAL_STREAM", stream_id(write_end))
    with os.fdopen(write_end, "w") as stream:
        emit(stream)
    with os.fdopen(read_end) as reader:
        assert reader.read() == "<6>synced 3 bans\n<4>one warning\n"


@pytest.mark.parametrize("value", ["", "1", "1:", ":2", "x:y", "1:2:3", " 1:2", "\u0661:\u0662"])
def test_malformed_journal_stream_is_not_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", value)
    with (tmp_path / "stderr.log").open("w") as stream:
        assert not log.is_journal(stream)


def test_a_stream_without_a_descriptor_is_not_the_journal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")
    buffer = io.StringIO()
    emit(buffer)
    assert buffer.getvalue() == "reconcile: synced 3 bans\nreconcile: warning: one warning\n"
