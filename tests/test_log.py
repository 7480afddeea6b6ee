"""edge/log.py's summariser: a flood of lines of ever new kinds stays a few lines and a bounded memory."""

from __future__ import annotations

import tracemalloc

from structlog.testing import capture_logs

import edge.log
from edge.log import Summarised
from tests.helpers import held_by


def test_a_summariser_fed_a_new_kind_each_time_keeps_a_bounded_memory_and_writes_a_few_lines() -> None:
    """A caller whose kind comes from what arrives (a name in a request, a scanner's noise by its bytes) notes 20,000
    kinds: what the summariser holds does not grow with them, and the log gets a few dozen lines, the kinds beyond
    those it keeps sharing one line. Before stop 81 every kind was kept for good and each new one was a line (the
    security81 probe, F1: 100,000 Host names, +23 MB and 100,000 lines)."""
    now = [0.0]
    said = Summarised("thing_refused", every_s=10, clock=lambda: now[0])
    with capture_logs() as logs:
        tracemalloc.start()
        try:
            for n in range(1000):
                said.note(f"kind-{n}", n=n)
            before = held_by(edge.log.__file__)
            for n in range(1000, 21000):
                said.note(f"kind-{n}", n=n)
            grown = held_by(edge.log.__file__) - before
        finally:
            tracemalloc.stop()
        now[0] = 11
        said.note("kind-21000", n=21000)
    assert grown < 4096, grown
    assert len(logs) < 100, len(logs)
    assert logs[-1]["n"] == 21000  # a while later a new kind is said again
