"""FileTransport: each job a .bin file with the exact bytes."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.errors import DeviceUnreachableError
from edge.transports import FileTransport


def test_each_open_writes_a_new_file_with_exact_bytes(tmp_path: Path) -> None:
    """Two jobs give two files, in order, holding exactly what was written."""
    out = tmp_path / "out" / "kitchen"
    transport = FileTransport("kitchen", out)
    for job in (b"\x1b@first \xe2\x82\xac\n", b"second\x10\x04\x01"):
        transport.open()
        transport.write(job[:3])
        transport.write(job[3:])
        transport.close()
    files = sorted(out.glob("*.bin"))
    assert [f.read_bytes() for f in files] == [b"\x1b@first \xe2\x82\xac\n", b"second\x10\x04\x01"]
    assert transport.can_read is False
    assert transport.label == f"file {out}"


def test_unwritable_directory_is_unreachable(tmp_path: Path) -> None:
    """If the directory cannot be created, open() says the device is unreachable and names it."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_bytes(b"")
    transport = FileTransport("kitchen", blocker / "out")
    with pytest.raises(DeviceUnreachableError) as caught:
        transport.open()
    assert caught.value.device_id == "kitchen"
    assert caught.value.transport == f"file {blocker / 'out'}"
    transport.close()  # never raises, even when nothing is open


def test_open_and_close_without_writing_leaves_no_file(tmp_path: Path) -> None:
    """A status check (open, close) must not litter the output with empty jobs."""
    transport = FileTransport("kitchen", tmp_path)
    transport.open()
    transport.close()
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def berlin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("berlin")
def test_files_are_named_by_utc_so_the_autumn_change_does_not_sort_them_back_an_hour(tmp_path: Path) -> None:
    """Named by the box's local time, a job at 02:10 winter time sorted before one at 02:50 summer time printed 20
    minutes earlier, the night the clocks go back; UTC names sort as the jobs came, and say so (Z)."""
    transport = FileTransport("kitchen", tmp_path)
    before = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    transport.open()
    transport.write(b"job")
    transport.close()
    (made,) = tmp_path.glob("*.bin")
    stamp, _seq = made.stem.split("-")
    assert stamp.endswith("Z"), made.name
    named = dt.datetime.strptime(stamp[:-1], "%Y%m%dT%H%M%S%f")
    assert abs((named - before).total_seconds()) < 60, (made.name, before)
