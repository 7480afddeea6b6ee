"""The card is full when the agent starts again after a clean stop (systemd's restart, an upgrade, a reboot)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from tests.helpers import agent_process, api_client, eventually, fill, post, small_disk


@pytest.fixture
def card(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs as the data directory."""
    with small_disk(tmp_path / "data", 4) as path:
        yield path


async def test_an_agent_stopped_cleanly_starts_on_a_full_card_answers_503_and_takes_orders_once_there_is_room(
    tmp_path: Path, card: Path, printers: dict[str, SimPrinter]
) -> None:
    """A clean stop lets SQLite remove its -wal and -shm files; a start on a card that is full meanwhile cannot make
    them again. The agent gives back the room it keeps beside its database for this (edge.db-room) and starts; once
    that room is used, orders are answered 503 (the sender retries), and they are taken again once there is room.
    Before, it exited 1 ("disk I/O error"), systemd gave up after five starts, and it stayed down after the room was
    back (probe_intake D5)."""
    agent = agent_process(tmp_path, printers, extra="[alerts]\ndisk_free_min_mb = 0\n")
    await agent.start()
    async with api_client(agent.port) as api:
        assert (await post(api, make_order(1, print_receipt=False)))[0] == 201
    assert await agent.terminate() == 0
    assert (card / "edge.db-room").stat().st_size > 0
    filler = fill(card)
    await agent.start()
    async with api_client(agent.port) as api:
        answers = []
        for n in range(2, 1000):  # the room given back fills up: then every order is answered 503
            answers.append((await post(api, make_order(n, print_receipt=False)))[0])
            if answers[-1] != 201:
                break
        assert answers[-1] == 503 and set(answers[:-1]) <= {201}, answers
        filler.unlink()
        await eventually(lambda: post(api, make_order(n, print_receipt=False)), lambda answer: answer[0] == 201)
    await agent.close()
